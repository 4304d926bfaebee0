//! Finding and removing segments left in `/dev/shm` by dead jobs.
//!
//! A segment with a cobre-shm header is recognised by its magic; its creator
//! is alive while it holds the creator lock byte (released by the kernel on
//! any death). A segment the launcher names (`cobre-shm.<pid>.<random>`,
//! regions `<that>.r<id>.<random>`) whose header was never written — its
//! creator died, or `/dev/shm` filled up, before — is recognised by name and
//! owner, and counts as dead when no process holds its creator lock and it
//! is older than [`HEADERLESS_GRACE`]. Only the caller's own segments are
//! considered; a live job's are never touched.
#![forbid(unsafe_code)]

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use cobre_shm_layout::{SegmentKind, CREATOR_LOCK_BYTE, MAGIC};

pub use crate::os::segment::SHM_DIR;
use crate::os::segment::{euid, Opened, Segment};

/// Name prefix of every segment the launcher creates.
pub const LAUNCHER_PREFIX: &str = "cobre-shm.";

/// Age after which a header-less segment nobody holds is taken as abandoned
/// (younger ones may be a job still being created).
pub const HEADERLESS_GRACE: Duration = Duration::from_secs(10);

/// One cobre-shm segment found in `/dev/shm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundSegment {
    /// POSIX name (with the leading `/`).
    pub name: String,
    /// Control or region (`None`: no header was ever written).
    pub kind: Option<SegmentKind>,
    /// Creator pid recorded in the header (0 without a header).
    pub creator_pid: u32,
    /// Whether the creator still holds its lock (or, for a header-less
    /// segment, whether it may still be being created).
    pub alive: bool,
    /// Size in bytes.
    pub bytes: u64,
}

/// Every cobre-shm segment of the current user in `/dev/shm` whose name
/// starts with `prefix` (empty: all).
#[must_use]
pub fn scan(prefix: &str) -> Vec<FoundSegment> {
    let uid = euid();
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
        if meta.uid() != uid || !meta.is_file() {
            continue;
        }
        let name = format!("/{file}");
        let launcher_named = file.starts_with(LAUNCHER_PREFIX);
        let header = match Segment::open(&name, 0) {
            Ok(Opened::Ready(seg)) if seg.len() >= 64 => {
                let h = seg.read_header();
                let held = seg.byte_locked_by_other(CREATOR_LOCK_BYTE).unwrap_or(true);
                Some((h, held))
            }
            // Ours (same owner) but never initialised, or with a mode we
            // would not have given it: judged by name and age only.
            Ok(Opened::Ready(_) | Opened::TooSmall | Opened::Foreign { .. }) => None,
            _ => continue,
        };
        match header {
            Some((h, held)) if h.magic == MAGIC => found.push(FoundSegment {
                kind: SegmentKind::from_u32(h.kind),
                creator_pid: h.creator_pid,
                alive: held,
                bytes: meta.len(),
                name,
            }),
            // Never initialised: only trusted by the launcher's own names.
            Some((h, held)) if h.magic == 0 && launcher_named => {
                found.push(headerless(name, &meta, held));
            }
            None if launcher_named => found.push(headerless(name, &meta, false)),
            _ => {}
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn headerless(name: String, meta: &std::fs::Metadata, held: bool) -> FoundSegment {
    let young = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_none_or(|age| age < HEADERLESS_GRACE);
    FoundSegment {
        name,
        kind: None,
        creator_pid: 0,
        alive: held || young,
        bytes: meta.len(),
    }
}

/// Unlink every segment of [`scan`]`(prefix)` whose creator is dead.
/// Returns the names removed.
#[must_use]
pub fn remove_dead(prefix: &str) -> Vec<String> {
    scan(prefix)
        .into_iter()
        .filter(|s| !s.alive)
        .filter(|s| Segment::unlink(&s.name).is_ok())
        .map(|s| s.name)
        .collect()
}

/// Unlink every name of this user in `/dev/shm` that starts with `prefix`
/// (with its leading `/`), whoever created it. Returns the names removed.
#[must_use]
pub fn remove_prefixed(prefix: &str) -> Vec<String> {
    let base = prefix.trim_start_matches('/');
    let uid = euid();
    let mut removed = Vec::new();
    if let Ok(dir) = std::fs::read_dir(SHM_DIR) {
        for entry in dir.filter_map(Result::ok) {
            let file = entry.file_name().to_string_lossy().into_owned();
            let mine = entry.metadata().is_ok_and(|m| m.uid() == uid);
            if mine && file.starts_with(base) {
                let n = format!("/{file}");
                if Segment::unlink(&n).is_ok() {
                    removed.push(n);
                }
            }
        }
    }
    removed
}

/// Unlink the control name of a job and every name derived from it
/// (`<name>.r<id>.<random>`): for the launcher of that job.
#[must_use]
pub fn remove_job(name: &str) -> Vec<String> {
    let mut removed = remove_prefixed(&format!("{name}."));
    let exists = std::path::Path::new(SHM_DIR)
        .join(name.trim_start_matches('/'))
        .exists();
    if exists && Segment::unlink(name).is_ok() {
        removed.push(name.to_string());
    }
    removed
}
