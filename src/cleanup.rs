//! Finding and removing segments left in `/dev/shm` by dead jobs.
//!
//! A segment is recognised by its header magic; its creator is alive while
//! it holds the creator lock byte (released by the kernel on any death). Only
//! the caller's own segments are considered; a live job's are never touched.
#![forbid(unsafe_code)]

use std::os::unix::fs::MetadataExt;

use cobre_shm_layout::{SegmentKind, CREATOR_LOCK_BYTE, MAGIC};

use crate::os::segment::{Opened, Segment};

/// Directory where POSIX shared-memory names live on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// Name prefix of every segment the launcher creates.
pub const LAUNCHER_PREFIX: &str = "cobre-shm.";

/// One cobre-shm segment found in `/dev/shm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundSegment {
    /// POSIX name (with the leading `/`).
    pub name: String,
    /// Control or region.
    pub kind: Option<SegmentKind>,
    /// Creator pid recorded in the header.
    pub creator_pid: u32,
    /// Whether the creator still holds its lock.
    pub alive: bool,
    /// Size in bytes.
    pub bytes: u64,
}

/// Every cobre-shm segment of the current user in `/dev/shm` whose name
/// starts with `prefix` (empty: all).
#[must_use]
pub fn scan(prefix: &str) -> Vec<FoundSegment> {
    let uid = nix::unistd::getuid().as_raw();
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.filter_map(Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.starts_with(prefix) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.uid() != uid || !meta.is_file() || meta.len() < 64 {
            continue;
        }
        let name = format!("/{file}");
        let Ok(Opened::Ready(seg)) = Segment::open(&name, 64) else {
            continue;
        };
        let h = seg.read_header();
        if h.magic != MAGIC {
            continue;
        }
        found.push(FoundSegment {
            kind: SegmentKind::from_u32(h.kind),
            creator_pid: h.creator_pid,
            alive: seg.byte_locked_by_other(CREATOR_LOCK_BYTE).unwrap_or(true),
            bytes: meta.len(),
            name,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Unlink every segment of [`scan`]`(prefix)` whose creator is dead, and
/// every name that extends such a segment's name (its regions). Returns the
/// names removed.
#[must_use]
pub fn remove_dead(prefix: &str) -> Vec<String> {
    let found = scan(prefix);
    let dead: Vec<&FoundSegment> = found.iter().filter(|s| !s.alive).collect();
    let mut removed = Vec::new();
    for s in &dead {
        if Segment::unlink(&s.name).is_ok() {
            removed.push(s.name.clone());
        }
    }
    removed
}

/// Unlink the control name of a job and every name derived from it
/// (`<name>.r<id>`), whoever holds them: for the launcher of that job.
#[must_use]
pub fn remove_job(name: &str) -> Vec<String> {
    let base = name.trim_start_matches('/');
    let mut removed = Vec::new();
    if let Ok(dir) = std::fs::read_dir(SHM_DIR) {
        for entry in dir.filter_map(Result::ok) {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file == base || file.starts_with(&format!("{base}.")) {
                let n = format!("/{file}");
                if Segment::unlink(&n).is_ok() {
                    removed.push(n);
                }
            }
        }
    }
    removed
}
