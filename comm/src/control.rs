//! The control segment of a job: creation, validated attachment, and typed
//! access to its words (see `shm-layout/LAYOUT.md`).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cobre_shm_layout::{
    self as layout, AbortKind, AbortRecord, ControlInfo, ControlLayout, SegmentHeader, SegmentKind,
    ABORT_REASON_BYTES, CREATOR_LOCK_BYTE, FINGERPRINT, LAYOUT_VERSION, MAGIC, STATE_READY,
    WAKE_ABORT_BIT,
};
use nix::errno::Errno;

use crate::error::ShmError;
use crate::os::futex;
use crate::os::segment::{Opened, Segment};
use crate::wait::{poll_until, WaitPolicy};

/// `raised_by` / `subject_rank` value meaning "no rank" (the launcher, or a
/// process that never got a rank).
pub const NO_RANK: u32 = u32::MAX;

/// What to write into the abort record.
#[derive(Debug, Clone)]
pub struct AbortSpec<'a> {
    /// Why.
    pub kind: AbortKind,
    /// Rank the abort is about, or [`NO_RANK`].
    pub subject_rank: u32,
    /// Rank raising it, or [`NO_RANK`].
    pub raised_by: u32,
    /// Pid the abort is about (0 if unknown).
    pub subject_pid: u32,
    /// Exit code / signal / abort code.
    pub code: i32,
    /// Human-readable reason.
    pub reason: &'a str,
}

/// A mapped, validated control segment.
#[derive(Debug)]
pub struct Control {
    seg: Segment,
    layout: ControlLayout,
}

/// Nanoseconds since the Unix epoch (0 if the clock is before 1970).
fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Control {
    /// Create the control segment `name` exclusively, for `world_size` ranks
    /// with staging buffers of `staging_bytes`, publish it as ready and hold
    /// the creator lock for as long as the value lives.
    ///
    /// # Errors
    /// [`ShmError::AlreadyExists`] when the name is taken (nothing is
    /// removed), [`ShmError::Config`] for bad sizes, [`ShmError::Os`] otherwise.
    pub fn create(
        name: &str,
        world_size: usize,
        staging_bytes: usize,
        mempolicy: (layout::MemPolicyCode, u32),
    ) -> Result<Self, ShmError> {
        let lay = ControlLayout::new(world_size, staging_bytes).map_err(|e| {
            ShmError::Config(format!(
                "cannot lay out a control segment for {world_size} ranks with {staging_bytes}-byte staging: {e:?} \
                 (ranks must be 1..={}, staging a multiple of {} of at least {})",
                layout::MAX_RANKS,
                layout::PAGE,
                layout::MIN_STAGING_BYTES
            ))
        })?;
        let seg = match Segment::create_exclusive(name, lay.total_bytes) {
            Ok(seg) => seg,
            Err(e) if e.errno == Errno::EEXIST => {
                return Err(ShmError::AlreadyExists {
                    name: name.to_string(),
                    detail: describe_existing(name),
                })
            }
            Err(e) => return Err(e.into()),
        };
        if !seg.try_lock_byte(CREATOR_LOCK_BYTE)? {
            let _ = Segment::unlink(name);
            return Err(ShmError::Config(format!(
                "could not take the creator lock of {name}, which this process just created"
            )));
        }
        // Allocate every page now: a full /dev/shm is an error here, never a
        // SIGBUS when a rank first touches the staging area.
        if let Err(e) = seg.reserve(0, lay.total_bytes) {
            let _ = Segment::unlink(name);
            return Err(ShmError::NoSpace {
                name: name.to_string(),
                bytes: lay.total_bytes,
                errno: e.errno,
            });
        }
        let mut info = ControlInfo {
            staging_bytes: staging_bytes as u64,
            mempolicy: mempolicy.0 as u32,
            mempolicy_node: mempolicy.1,
            digest: 0,
            reserved: [0; 5],
        };
        let header = SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            kind: SegmentKind::Control as u32,
            fingerprint: FINGERPRINT,
            total_bytes: lay.total_bytes as u64,
            data_offset: lay.staging as u64,
            world_size: u32::try_from(world_size).unwrap_or(u32::MAX),
            creator_pid: std::process::id(),
            created_unix_ns: unix_ns(),
            state: layout::STATE_INITIALIZING,
            abort: 0,
        };
        info.digest = layout::control_digest(&header, &info);
        seg.copy_in(lay.info, bytemuck::bytes_of(&info));
        seg.write_header(&header);
        seg.atomic_u32(layout::HEADER_STATE_OFFSET)
            .store(STATE_READY, Ordering::Release);
        Ok(Self { seg, layout: lay })
    }

    /// A control block in heap memory for threads of one process standing in
    /// for ranks (tests under Miri); `share` gives each "rank" its handle.
    #[cfg(test)]
    pub(crate) fn in_memory(world_size: usize, staging_bytes: usize) -> Self {
        let lay = ControlLayout::new(world_size, staging_bytes).expect("test layout");
        let seg = crate::os::segment::heap::segment("/in-memory", lay.total_bytes);
        let info = ControlInfo {
            staging_bytes: staging_bytes as u64,
            mempolicy: 0,
            mempolicy_node: 0,
            digest: 0,
            reserved: [0; 5],
        };
        seg.copy_in(lay.info, bytemuck::bytes_of(&info));
        seg.write_header(&SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            kind: SegmentKind::Control as u32,
            fingerprint: FINGERPRINT,
            total_bytes: lay.total_bytes as u64,
            data_offset: lay.staging as u64,
            world_size: world_size as u32,
            creator_pid: std::process::id(),
            created_unix_ns: 0,
            state: 0,
            abort: 0,
        });
        seg.atomic_u32(layout::HEADER_STATE_OFFSET)
            .store(STATE_READY, Ordering::Release);
        Self { seg, layout: lay }
    }

    /// Another handle on an in-memory control block.
    #[cfg(test)]
    pub(crate) fn share(&self) -> Self {
        Self {
            seg: crate::os::segment::heap::share(&self.seg),
            layout: self.layout,
        }
    }

    /// Open the control segment `name` that another process creates, waiting
    /// until `deadline` for it to exist and be ready, then validate it.
    ///
    /// # Errors
    /// Every [`ShmError`] of attach validation: not a cobre-shm segment,
    /// layout version or fingerprint mismatch, stale (creator dead), wrong
    /// creator, timeout.
    pub fn open(
        name: &str,
        deadline: Instant,
        expected_creator: Option<u32>,
    ) -> Result<Self, ShmError> {
        let header_len = size_of::<SegmentHeader>();
        let mut waiting_for = "to be created";
        let policy = WaitPolicy::sleepy(
            Duration::from_millis(20),
            deadline.saturating_duration_since(Instant::now()),
        );
        let found = poll_until(&policy, || {
            let seg = match Segment::open(name, header_len) {
                Ok(Opened::Ready(seg)) => seg,
                Ok(Opened::Foreign { uid, mode }) => {
                    return Some(Err(ShmError::Foreign {
                        name: name.to_string(),
                        uid,
                        mode,
                    }))
                }
                Ok(Opened::Missing | Opened::TooSmall) => return None,
                Err(e) => return Some(Err(e.into())),
            };
            let h = seg.read_header();
            if h.magic != 0 && h.magic != MAGIC {
                return Some(Err(ShmError::NotCobreSegment {
                    name: name.to_string(),
                    found: h.magic,
                }));
            }
            if h.state == STATE_READY {
                return Some(Ok(seg));
            }
            if h.magic == MAGIC && !seg.byte_locked_by_other(CREATOR_LOCK_BYTE).unwrap_or(true) {
                return Some(Err(ShmError::Stale {
                    name: name.to_string(),
                    pid: h.creator_pid,
                }));
            }
            waiting_for = "to be initialised by its creator";
            None
        });
        match found {
            Some(Ok(seg)) => Self::validate(seg, expected_creator),
            Some(Err(e)) => Err(e),
            None => Err(ShmError::Timeout(format!(
                "segment {name} {waiting_for} (is rank 0 running with the same COBRE_SHM_NAME?)"
            ))),
        }
    }

    fn validate(seg: Segment, expected_creator: Option<u32>) -> Result<Self, ShmError> {
        let name = seg.name().to_string();
        let h = seg.read_header();
        if h.magic != MAGIC {
            return Err(ShmError::NotCobreSegment {
                name,
                found: h.magic,
            });
        }
        if h.layout_version != LAYOUT_VERSION {
            return Err(ShmError::VersionMismatch {
                name,
                found: h.layout_version,
                creator_pid: h.creator_pid,
            });
        }
        if h.kind != SegmentKind::Control as u32 {
            return Err(ShmError::Corrupt {
                name,
                what: format!(
                    "segment kind {} where a control segment ({}) was expected",
                    h.kind,
                    SegmentKind::Control as u32
                ),
            });
        }
        if h.fingerprint != FINGERPRINT {
            return Err(ShmError::FingerprintMismatch {
                name,
                found: h.fingerprint,
                creator_pid: h.creator_pid,
            });
        }
        if let Some(pid) = expected_creator {
            if h.creator_pid != pid {
                return Err(ShmError::WrongCreator {
                    name,
                    found: h.creator_pid,
                    expected: pid,
                });
            }
        }
        if !seg.byte_locked_by_other(CREATOR_LOCK_BYTE)? {
            return Err(ShmError::Stale {
                name,
                pid: h.creator_pid,
            });
        }
        // Written by the creator before it published `state` (acquired by
        // `read_header` in `open`); never written again.
        let info: ControlInfo = seg.read_published(size_of::<SegmentHeader>());
        if info.digest != layout::control_digest(&h, &info) {
            return Err(ShmError::Corrupt {
                name,
                what: "its header does not match the digest its creator wrote (the segment was \
                       damaged, or written by something else); stop the job, remove it with \
                       `cobre-shm clean`, and start again"
                    .into(),
            });
        }
        let lay = usize::try_from(info.staging_bytes)
            .ok()
            .and_then(|s| ControlLayout::new(h.world_size as usize, s).ok())
            .ok_or_else(|| ShmError::Corrupt {
                name: name.clone(),
                what: format!(
                    "world size {} / staging {} bytes do not form a valid layout",
                    h.world_size, info.staging_bytes
                ),
            })?;
        if h.total_bytes != lay.total_bytes as u64 || seg.len() != lay.total_bytes {
            return Err(ShmError::Corrupt {
                name,
                what: format!(
                    "size {} (header says {}), expected {} for {} ranks",
                    seg.len(),
                    h.total_bytes,
                    lay.total_bytes,
                    h.world_size
                ),
            });
        }
        Ok(Self { seg, layout: lay })
    }

    /// The mapped segment.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The computed layout.
    #[must_use]
    pub fn layout(&self) -> &ControlLayout {
        &self.layout
    }

    /// The segment's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// A snapshot of the header (every field read atomically).
    #[must_use]
    pub fn header(&self) -> SegmentHeader {
        self.seg.read_header()
    }

    /// The job parameters (published before the segment was marked ready).
    #[must_use]
    pub fn info(&self) -> ControlInfo {
        self.seg.read_published(self.layout.info)
    }

    /// The header's abort word (0 running, 1 aborted).
    #[must_use]
    pub fn abort_word(&self) -> &AtomicU32 {
        self.seg.atomic_u32(layout::HEADER_ABORT_OFFSET)
    }

    /// The futex word everybody sleeps on.
    #[must_use]
    pub fn wake(&self) -> &AtomicU32 {
        self.seg
            .atomic_u32(self.layout.sync + layout::SYNC_WAKE_OFFSET)
    }

    /// Number of ranks sleeping (or about to) on [`Self::wake`].
    #[must_use]
    pub fn sleepers(&self) -> &AtomicU32 {
        self.seg
            .atomic_u32(self.layout.sync + layout::SYNC_SLEEPERS_OFFSET)
    }

    /// The tree barrier's release word (the last epoch everyone reached).
    #[must_use]
    pub fn release(&self) -> &AtomicU32 {
        self.seg
            .atomic_u32(self.layout.release + layout::RELEASE_EPOCH_OFFSET)
    }

    /// Rank `rank`'s arrival word.
    #[must_use]
    pub fn arrival(&self, rank: usize) -> &AtomicU64 {
        self.seg
            .atomic_u64(self.layout.slot(rank) + layout::SLOT_ARRIVAL_OFFSET)
    }

    /// The `ready` word of the eager-broadcast slot of `epoch`.
    #[must_use]
    pub fn eager_ready(&self, epoch: u32) -> &AtomicU64 {
        self.seg
            .atomic_u64(self.layout.eager_slot(epoch) + layout::EAGER_READY_OFFSET)
    }

    /// The `claim` word of the eager-broadcast slot of `epoch`.
    #[must_use]
    pub fn eager_claim(&self, epoch: u32) -> &AtomicU32 {
        self.seg
            .atomic_u32(self.layout.eager_slot(epoch) + layout::EAGER_CLAIM_OFFSET)
    }

    /// The `root` word of the eager-broadcast slot of `epoch`.
    #[must_use]
    pub fn eager_root(&self, epoch: u32) -> &AtomicU32 {
        self.seg
            .atomic_u32(self.layout.eager_slot(epoch) + layout::EAGER_ROOT_OFFSET)
    }

    /// Offset of the payload of the eager-broadcast slot of `epoch`.
    #[must_use]
    pub fn eager_payload(&self, epoch: u32) -> usize {
        self.layout.eager_slot(epoch) + layout::EAGER_PAYLOAD_OFFSET
    }

    /// Rank `rank`'s pid word (0 while nobody attached).
    #[must_use]
    pub fn slot_pid(&self, rank: usize) -> &AtomicU32 {
        self.seg
            .atomic_u32(self.layout.slot(rank) + layout::SLOT_PID_OFFSET)
    }

    /// Whether the process attached as `rank` still holds its lock byte.
    ///
    /// # Errors
    /// From `fcntl`.
    pub fn rank_alive(&self, rank: usize) -> Result<bool, ShmError> {
        Ok(self
            .seg
            .byte_locked_by_other(layout::rank_lock_byte(rank))?)
    }

    /// Whether the creator of the segment (launcher or rank 0) is alive, seen
    /// from a process other than the creator.
    ///
    /// # Errors
    /// From `fcntl`.
    pub fn creator_alive(&self) -> Result<bool, ShmError> {
        Ok(self.seg.byte_locked_by_other(CREATOR_LOCK_BYTE)?)
    }

    /// Whether the job was aborted (either word).
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        self.wake().load(Ordering::Acquire) & WAKE_ABORT_BIT != 0
            || self.abort_word().load(Ordering::Acquire) != 0
    }

    /// Mark the job aborted and wake every sleeper. The first caller's record
    /// is kept; returns whether this call was the first.
    pub fn raise_abort(&self, spec: &AbortSpec<'_>) -> bool {
        let won = self
            .abort_word()
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if won {
            let mut reason = [0u8; ABORT_REASON_BYTES];
            let mut len = spec.reason.len().min(ABORT_REASON_BYTES);
            while !spec.reason.is_char_boundary(len) {
                len -= 1;
            }
            reason[..len].copy_from_slice(&spec.reason.as_bytes()[..len]);
            let record = AbortRecord {
                published: 0,
                kind: spec.kind as u32,
                subject_rank: spec.subject_rank,
                raised_by: spec.raised_by,
                subject_pid: spec.subject_pid,
                code: spec.code,
                reason_len: len as u32,
                reserved: 0,
                reason,
            };
            // Everything but the `published` word, which is stored last.
            let bytes = bytemuck::bytes_of(&record);
            let skip = layout::ABORT_PUBLISHED_OFFSET + 4;
            self.seg.copy_in(self.layout.abort + skip, &bytes[skip..]);
            self.seg
                .atomic_u32(self.layout.abort + layout::ABORT_PUBLISHED_OFFSET)
                .store(1, Ordering::Release);
        }
        self.wake().fetch_or(WAKE_ABORT_BIT, Ordering::SeqCst);
        futex::wake_all(self.wake());
        won
    }

    /// The abort record, once published (waits up to 100 ms for a racing
    /// writer to finish). `None` if the job is not aborted or the record
    /// never got published (a process of another layout version set the
    /// header word only).
    #[must_use]
    pub fn abort_record(&self) -> Option<AbortRecord> {
        if !self.is_aborted() {
            return None;
        }
        let published = self
            .seg
            .atomic_u32(self.layout.abort + layout::ABORT_PUBLISHED_OFFSET);
        let policy = WaitPolicy::sleepy(Duration::from_millis(1), Duration::from_millis(100));
        poll_until(&policy, || {
            (published.load(Ordering::Acquire) != 0).then_some(())
        })?;
        // Written once by the winner of the abort word before its Release
        // store of `published`, which we just Acquired.
        Some(self.seg.read_published(self.layout.abort))
    }

    /// One line describing why the job was aborted.
    #[must_use]
    pub fn abort_message(&self) -> String {
        match self.abort_record() {
            Some(rec) => describe_abort(&rec),
            None => "the job was aborted by a process that left no reason".to_string(),
        }
    }
}

/// Render an abort record as one line.
#[must_use]
pub fn describe_abort(rec: &AbortRecord) -> String {
    let len = (rec.reason_len as usize).min(ABORT_REASON_BYTES);
    let reason = String::from_utf8_lossy(&rec.reason[..len]);
    let by = if rec.raised_by == NO_RANK {
        "the launcher".to_string()
    } else {
        format!("rank {}", rec.raised_by)
    };
    format!("job aborted (reported by {by}): {reason}")
}

/// Describe what already sits under `name`, without modifying it.
fn describe_existing(name: &str) -> String {
    match Segment::open(name, size_of::<SegmentHeader>()) {
        Ok(Opened::Ready(seg)) => {
            let h = seg.read_header();
            if h.magic != MAGIC {
                "it is not a cobre-shm segment".to_string()
            } else {
                let alive = seg.byte_locked_by_other(CREATOR_LOCK_BYTE).unwrap_or(true);
                format!(
                    "it was created by pid {} which is {}",
                    h.creator_pid,
                    if alive {
                        "still running"
                    } else {
                        "dead (the segment is stale)"
                    }
                )
            }
        }
        Ok(Opened::Foreign { uid, mode }) => {
            format!("it belongs to user {uid} (mode {mode:o}), not to this user")
        }
        Ok(_) => "it is empty or still being created".to_string(),
        Err(e) => format!("it cannot be inspected: {e}"),
    }
}
