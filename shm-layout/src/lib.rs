//! Every byte that cobre-shm processes share, and nothing else.
//!
//! Two kinds of POSIX shared-memory segment exist, both starting with the same
//! 64-byte [`SegmentHeader`]:
//!
//! - the **control segment** of a job ([`SegmentKind::Control`]): job
//!   parameters, the abort record, the wake word, one [`RankSlot`] per rank
//!   and the double-buffered staging area used by the collectives;
//! - one **region segment** per shared region ([`SegmentKind::Region`]): a
//!   [`RegionInfo`] block, then the elements from [`REGION_DATA_OFFSET`].
//!
//! All offsets come from pure functions of `(world_size, staging_bytes)` or
//! `(count, elem_size)`, so every process computes the same layout; the
//! [`FINGERPRINT`] (sizes, alignments and atomic-field offsets of every type
//! here) is stored in the header and compared on attach. Fields documented as
//! *atomic words* are only ever accessed through atomics by the library; the
//! types here are plain `Pod` so that a header can be copied out and checked.
//! See `LAYOUT.md` for a drawing.

#![no_std]
#![forbid(unsafe_code)]

use bytemuck::{Pod, Zeroable};
use core::mem::{align_of, offset_of, size_of};

/// `b"COBRESHM"` read as a little-endian `u64`; first 8 bytes of every segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"COBRESHM");

/// Version of everything after the frozen [`SegmentHeader`]. Bump on any change.
pub const LAYOUT_VERSION: u32 = 4;

/// Page size assumed for alignment of staging and region data.
pub const PAGE: usize = 4096;

/// Spacing of hot words: two 64-byte lines, so adjacent-line prefetch on x86
/// never couples two ranks' words.
pub const HOT_LINE: usize = 128;

/// Largest world size a control segment accepts.
pub const MAX_RANKS: usize = 4096;

/// Smallest staging buffer (per parity) accepted.
pub const MIN_STAGING_BYTES: usize = PAGE;

/// Default staging buffer size (per parity): 4 MiB.
pub const DEFAULT_STAGING_BYTES: usize = 4 << 20;

/// Bytes of each of a rank's two inline payload areas ([`RankSlot::inline`]).
pub const INLINE_BYTES: usize = 24;

/// Slots of the eager-broadcast ring ([`EagerSlot`]): a broadcast root
/// runs up to this many broadcasts ahead of the slowest rank.
pub const EAGER_SLOTS: usize = 32;

/// Largest payload of an eager broadcast ([`EagerSlot::payload`]).
pub const EAGER_BYTES: usize = 4096;

/// Bit 31 of the wake word: set once when the job is aborted.
pub const WAKE_ABORT_BIT: u32 = 1 << 31;

/// Value of [`SegmentHeader::state`] while the creator is still writing.
pub const STATE_INITIALIZING: u32 = 0;
/// Value of [`SegmentHeader::state`] once the segment is complete.
pub const STATE_READY: u32 = 1;

/// Lock byte (an offset used only for `fcntl` OFD locks, never for data) that
/// the creator of a segment holds for its whole life.
pub const CREATOR_LOCK_BYTE: u64 = 0;

/// Lock byte held by rank `rank` for its whole life after it attached.
#[must_use]
pub const fn rank_lock_byte(rank: usize) -> u64 {
    1 + rank as u64
}

/// What a segment holds.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// A job's control segment.
    Control = 1,
    /// One shared region.
    Region = 2,
}

impl SegmentKind {
    /// Decode a header's `kind` field.
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Control),
            2 => Some(Self::Region),
            _ => None,
        }
    }
}

/// First 64 bytes of every segment. **Frozen**: these fields never move in any
/// layout version, so any build can recognise any segment, report a version
/// mismatch and raise the `abort` word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`] of the creator.
    pub layout_version: u32,
    /// [`SegmentKind`] as `u32`.
    pub kind: u32,
    /// [`FINGERPRINT`] of the creator.
    pub fingerprint: u64,
    /// Size of the whole segment in bytes (equals the file size).
    pub total_bytes: u64,
    /// Offset of the payload (staging area or region data).
    pub data_offset: u64,
    /// Number of ranks of the job.
    pub world_size: u32,
    /// Pid of the creating process (launcher or rank 0).
    pub creator_pid: u32,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// *Atomic word*: [`STATE_INITIALIZING`] then [`STATE_READY`], stored last.
    pub state: u32,
    /// *Atomic word*: 0 while the job runs, 1 once it was aborted.
    pub abort: u32,
}

/// Job parameters of a control segment, at [`ControlLayout::info`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct ControlInfo {
    /// Bytes of each of the two staging buffers.
    pub staging_bytes: u64,
    /// Memory policy for shared regions: see [`MemPolicyCode`].
    pub mempolicy: u32,
    /// Node argument of the memory policy (for `node:K`).
    pub mempolicy_node: u32,
    /// [`control_digest`] of the segment's header and of this block.
    pub digest: u64,
    /// Reserved, zero.
    pub reserved: [u64; 5],
}

/// Memory-policy code stored in [`ControlInfo::mempolicy`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemPolicyCode {
    /// Pages land where they are first written.
    FirstTouch = 0,
    /// Pages interleaved over all nodes with memory.
    Interleave = 1,
    /// Pages bound to [`ControlInfo::mempolicy_node`].
    Node = 2,
}

impl MemPolicyCode {
    /// Decode [`ControlInfo::mempolicy`].
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::FirstTouch),
            1 => Some(Self::Interleave),
            2 => Some(Self::Node),
            _ => None,
        }
    }
}

/// Bytes of the free-text reason in an [`AbortRecord`].
pub const ABORT_REASON_BYTES: usize = 224;

/// Who aborted the job and why, at [`ControlLayout::abort`]. Written by the
/// first process that wins the header's `abort` word, then `published`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AbortRecord {
    /// *Atomic word*: 1 once the fields below are complete.
    pub published: u32,
    /// [`AbortKind`] as `u32`.
    pub kind: u32,
    /// Rank the abort is about (`u32::MAX` when it is about no rank).
    pub subject_rank: u32,
    /// Rank that raised it (`u32::MAX` for the launcher).
    pub raised_by: u32,
    /// Pid of the process the abort is about (0 if unknown).
    pub subject_pid: u32,
    /// Exit code or signal, depending on `kind`.
    pub code: i32,
    /// Length of `reason` in bytes.
    pub reason_len: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// UTF-8 reason, `reason_len` bytes used.
    pub reason: [u8; ABORT_REASON_BYTES],
}

/// Why a job was aborted.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortKind {
    /// A rank called `Communicator::abort(code)`.
    RankAbort = 1,
    /// A rank died without detaching (detected through its lock byte).
    RankDied = 2,
    /// A wait passed the job's overall deadline.
    Timeout = 3,
    /// Ranks called different collectives (or with different arguments).
    Mismatch = 4,
    /// A rank could not attach (bad world size, duplicate rank, ...).
    AttachFailed = 5,
    /// The launcher stopped the job (a rank failed, or a signal).
    Launcher = 6,
    /// A rank stayed stopped (SIGSTOP, a debugger) while others waited.
    RankStopped = 7,
}

impl AbortKind {
    /// Decode [`AbortRecord::kind`].
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::RankAbort),
            2 => Some(Self::RankDied),
            3 => Some(Self::Timeout),
            4 => Some(Self::Mismatch),
            5 => Some(Self::AttachFailed),
            6 => Some(Self::Launcher),
            7 => Some(Self::RankStopped),
            _ => None,
        }
    }
}

/// The futex word everybody sleeps on, and the count of sleepers, at
/// [`ControlLayout::sync`]. Written only on the slow path.
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SyncBlock {
    /// *Atomic word* (futex): bumped to wake sleepers; [`WAKE_ABORT_BIT`] set on abort.
    pub wake: u32,
    /// *Atomic word*: number of ranks inside (or about to enter) `FUTEX_WAIT`.
    pub sleepers: u32,
    /// Padding to [`HOT_LINE`].
    pub pad: [u32; 30],
}

/// The release word of the tree barrier, at [`ControlLayout::release`]: its
/// own line, written once per barrier by rank 0, read by every other rank.
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ReleaseLine {
    /// *Atomic word*: the last barrier epoch every rank has arrived at.
    pub epoch: u32,
    /// Padding to [`HOT_LINE`].
    pub pad: [u32; 31],
}

/// One rank's line, at [`ControlLayout::slot`].
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RankSlot {
    /// *Atomic word*: `(epoch << 32) | signature` of the last barrier this
    /// rank arrived at; the only word written on the fast path.
    pub arrival: u64,
    /// *Atomic word*: pid of the attached process, 0 while free.
    pub pid: u32,
    /// NUMA node the rank runs on (-1 unknown).
    pub numa_node: i32,
    /// Small payloads (up to [`INLINE_BYTES`]) this rank publishes with the
    /// barrier of parity `epoch % 2`, in the same 64-byte line as `arrival`:
    /// a peer that sees the arrival already holds the data. Written only by
    /// the owner before that barrier, read by peers after it (the staging
    /// buffers' rule).
    pub inline: [[u8; INLINE_BYTES]; 2],
    /// Padding to [`HOT_LINE`].
    pub pad: [u64; 8],
}

/// One slot of the eager-broadcast ring, at [`ControlLayout::eager_slot`]:
/// slot `e % EAGER_SLOTS` carries the small broadcast of epoch `e`, whichever
/// rank is its root. The root claims it, writes the payload, then publishes
/// `ready`; receivers read the payload after seeing `ready` show their epoch.
/// A root writes slot `e % EAGER_SLOTS` again only once every rank has
/// arrived past epoch `e`.
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct EagerSlot {
    /// *Atomic word*: `(epoch << 32) | signature` of the broadcast whose
    /// payload is complete (see [`pack_arrival`]).
    pub ready: u64,
    /// *Atomic word*: the epoch of the last root that claimed the slot (a
    /// second root claiming the same epoch is a collective mismatch).
    pub claim: u32,
    /// *Atomic word*: the rank that claimed the slot last (for error messages).
    pub root: u32,
    /// The payload; its first 48 bytes share the 64-byte line of `ready`.
    /// Written only by the root that claimed the slot, before `ready`.
    pub payload: [u8; EAGER_BYTES],
    /// Padding to a whole number of [`HOT_LINE`]s.
    pub tail: [u64; 14],
}

/// Pack an arrival word.
#[must_use]
pub const fn pack_arrival(epoch: u32, signature: u32) -> u64 {
    ((epoch as u64) << 32) | signature as u64
}

/// Unpack an arrival word into `(epoch, signature)`.
#[must_use]
pub const fn unpack_arrival(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Description of a region segment, at offset 64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct RegionInfo {
    /// Number of elements.
    pub count: u64,
    /// `size_of` of the element type.
    pub elem_size: u64,
    /// `align_of` of the element type.
    pub elem_align: u64,
    /// Sequence number of the region within its job.
    pub region_id: u64,
    /// [`region_digest`] of the segment's header and of this block.
    pub digest: u64,
    /// Reserved, zero.
    pub reserved: [u64; 3],
}

/// Offset of region data inside a region segment.
pub const REGION_DATA_OFFSET: usize = PAGE;

/// Offset of [`RegionInfo`] inside a region segment.
pub const REGION_INFO_OFFSET: usize = size_of::<SegmentHeader>();

/// Every field of [`SegmentHeader`] as `(offset, width in bytes)`. A header
/// may be read by another process while its creator still writes it, so
/// every one of its fields is an atomic word: written and read only through
/// atomics of that width (the creator stores `state` last, with Release).
pub const HEADER_FIELDS: [(usize, usize); 11] = [
    (offset_of!(SegmentHeader, magic), 8),
    (offset_of!(SegmentHeader, layout_version), 4),
    (offset_of!(SegmentHeader, kind), 4),
    (offset_of!(SegmentHeader, fingerprint), 8),
    (offset_of!(SegmentHeader, total_bytes), 8),
    (offset_of!(SegmentHeader, data_offset), 8),
    (offset_of!(SegmentHeader, world_size), 4),
    (offset_of!(SegmentHeader, creator_pid), 4),
    (offset_of!(SegmentHeader, created_unix_ns), 8),
    (offset_of!(SegmentHeader, state), 4),
    (offset_of!(SegmentHeader, abort), 4),
];

/// Offset of the atomic `state` word in [`SegmentHeader`].
pub const HEADER_STATE_OFFSET: usize = offset_of!(SegmentHeader, state);
/// Offset of the atomic `abort` word in [`SegmentHeader`].
pub const HEADER_ABORT_OFFSET: usize = offset_of!(SegmentHeader, abort);
/// Offset of the atomic `published` word in [`AbortRecord`].
pub const ABORT_PUBLISHED_OFFSET: usize = offset_of!(AbortRecord, published);
/// Offset of the atomic `wake` word in [`SyncBlock`].
pub const SYNC_WAKE_OFFSET: usize = offset_of!(SyncBlock, wake);
/// Offset of the atomic `sleepers` word in [`SyncBlock`].
pub const SYNC_SLEEPERS_OFFSET: usize = offset_of!(SyncBlock, sleepers);
/// Offset of the atomic `epoch` word in [`ReleaseLine`].
pub const RELEASE_EPOCH_OFFSET: usize = offset_of!(ReleaseLine, epoch);
/// Offset of the atomic `arrival` word in [`RankSlot`].
pub const SLOT_ARRIVAL_OFFSET: usize = offset_of!(RankSlot, arrival);
/// Offset of the inline payload areas in [`RankSlot`].
pub const SLOT_INLINE_OFFSET: usize = offset_of!(RankSlot, inline);
/// Offset of the atomic `pid` word in [`RankSlot`].
pub const SLOT_PID_OFFSET: usize = offset_of!(RankSlot, pid);
/// Offset of the atomic `ready` word in [`EagerSlot`].
pub const EAGER_READY_OFFSET: usize = offset_of!(EagerSlot, ready);
/// Offset of the atomic `claim` word in [`EagerSlot`].
pub const EAGER_CLAIM_OFFSET: usize = offset_of!(EagerSlot, claim);
/// Offset of the atomic `root` word in [`EagerSlot`].
pub const EAGER_ROOT_OFFSET: usize = offset_of!(EagerSlot, root);
/// Offset of the payload in [`EagerSlot`].
pub const EAGER_PAYLOAD_OFFSET: usize = offset_of!(EagerSlot, payload);

const _: () = {
    assert!(size_of::<SegmentHeader>() == 64);
    assert!(size_of::<ControlInfo>() == 64);
    assert!(size_of::<AbortRecord>() == 256);
    assert!(size_of::<SyncBlock>() == HOT_LINE);
    assert!(size_of::<RankSlot>() == HOT_LINE);
    assert!(size_of::<ReleaseLine>() == HOT_LINE);
    assert!(size_of::<RegionInfo>() == 64);
    assert!(size_of::<EagerSlot>() % HOT_LINE == 0);
    assert!(EAGER_READY_OFFSET % 8 == 0 && EAGER_CLAIM_OFFSET % 4 == 0);
    assert!(EAGER_ROOT_OFFSET % 4 == 0);
    // Payloads of any element type up to 16-byte alignment start aligned.
    assert!(EAGER_PAYLOAD_OFFSET % 16 == 0);
    assert!(HEADER_STATE_OFFSET % 4 == 0 && HEADER_ABORT_OFFSET % 4 == 0);
    assert!(SLOT_ARRIVAL_OFFSET % 8 == 0);
    // Arrival word and inline payloads share one 64-byte cache line.
    assert!(SLOT_INLINE_OFFSET % 8 == 0 && SLOT_INLINE_OFFSET + 2 * INLINE_BYTES <= 64);
    assert!(REGION_INFO_OFFSET + size_of::<RegionInfo>() <= REGION_DATA_OFFSET);
    // The header fields tile its 64 bytes exactly, each aligned to its width.
    let mut at = 0;
    let mut i = 0;
    while i < HEADER_FIELDS.len() {
        assert!(HEADER_FIELDS[i].0 == at && at % HEADER_FIELDS[i].1 == 0);
        at += HEADER_FIELDS[i].1;
        i += 1;
    }
    assert!(at == size_of::<SegmentHeader>());
};

const fn fnv1a(mut hash: u64, value: u64) -> u64 {
    let bytes = value.to_le_bytes();
    let mut i = 0;
    while i < 8 {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// FNV-1a of `bytes` after `hash`.
fn fnv1a_bytes(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The header of `h` as its creator published it: the two atomic words
/// that change while the job runs (`state`, `abort`) left out.
fn static_header_digest(h: &SegmentHeader) -> u64 {
    let mut fixed = *h;
    fixed.state = 0;
    fixed.abort = 0;
    fnv1a_bytes(0xcbf2_9ce4_8422_2325, bytemuck::bytes_of(&fixed))
}

/// Digest of a control segment's header and job parameters (its `digest`
/// field left out), written by the creator and checked on attach, so that
/// a damaged header is refused instead of trusted.
#[must_use]
pub fn control_digest(h: &SegmentHeader, info: &ControlInfo) -> u64 {
    let mut i = *info;
    i.digest = 0;
    fnv1a_bytes(static_header_digest(h), bytemuck::bytes_of(&i))
}

/// Digest of a region segment's header and region block (its `digest`
/// field left out), as [`control_digest`].
#[must_use]
pub fn region_digest(h: &SegmentHeader, info: &RegionInfo) -> u64 {
    let mut i = *info;
    i.digest = 0;
    fnv1a_bytes(static_header_digest(h), bytemuck::bytes_of(&i))
}

const fn fingerprint() -> u64 {
    let parts: [usize; 38] = [
        LAYOUT_VERSION as usize,
        PAGE,
        HOT_LINE,
        size_of::<SegmentHeader>(),
        align_of::<SegmentHeader>(),
        size_of::<ControlInfo>(),
        align_of::<ControlInfo>(),
        size_of::<AbortRecord>(),
        align_of::<AbortRecord>(),
        size_of::<SyncBlock>(),
        align_of::<SyncBlock>(),
        size_of::<ReleaseLine>(),
        align_of::<ReleaseLine>(),
        size_of::<RankSlot>(),
        align_of::<RankSlot>(),
        size_of::<RegionInfo>(),
        align_of::<RegionInfo>(),
        HEADER_STATE_OFFSET,
        HEADER_ABORT_OFFSET,
        ABORT_PUBLISHED_OFFSET,
        SYNC_WAKE_OFFSET,
        SYNC_SLEEPERS_OFFSET,
        SLOT_ARRIVAL_OFFSET,
        SLOT_PID_OFFSET,
        SLOT_INLINE_OFFSET,
        INLINE_BYTES,
        REGION_DATA_OFFSET,
        ABORT_REASON_BYTES,
        MAX_RANKS,
        CREATOR_LOCK_BYTE as usize,
        size_of::<EagerSlot>(),
        align_of::<EagerSlot>(),
        EAGER_READY_OFFSET,
        EAGER_CLAIM_OFFSET,
        EAGER_ROOT_OFFSET,
        EAGER_PAYLOAD_OFFSET,
        EAGER_SLOTS,
        EAGER_BYTES,
    ];
    let mut hash = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        hash = fnv1a(hash, parts[i] as u64);
        i += 1;
    }
    hash
}

/// Hash of every size, alignment and atomic-field offset in this crate.
pub const FINGERPRINT: u64 = fingerprint();

/// Round `value` up to a multiple of `to` (a power of two); `None` on overflow.
#[must_use]
pub const fn round_up(value: usize, to: usize) -> Option<usize> {
    match value.checked_add(to - 1) {
        Some(v) => Some(v & !(to - 1)),
        None => None,
    }
}

/// Byte offsets of everything in a control segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlLayout {
    /// Number of ranks.
    pub world_size: usize,
    /// Bytes of each staging buffer.
    pub staging_bytes: usize,
    /// Offset of [`ControlInfo`].
    pub info: usize,
    /// Offset of [`AbortRecord`].
    pub abort: usize,
    /// Offset of [`SyncBlock`].
    pub sync: usize,
    /// Offset of [`ReleaseLine`].
    pub release: usize,
    /// Offset of the first [`RankSlot`].
    pub slots: usize,
    /// Offset of the first of [`EAGER_SLOTS`] [`EagerSlot`]s.
    pub eager: usize,
    /// Offset of staging buffer 0; buffer 1 follows at `+ staging_bytes`.
    pub staging: usize,
    /// Size of the whole segment.
    pub total_bytes: usize,
}

/// Why a layout cannot be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// `world_size` is 0 or above [`MAX_RANKS`].
    WorldSize,
    /// `staging_bytes` is below [`MIN_STAGING_BYTES`] or not a multiple of [`PAGE`].
    Staging,
    /// The sizes overflow `usize`.
    Overflow,
}

impl ControlLayout {
    /// Compute the layout for `world_size` ranks and staging buffers of `staging_bytes`.
    ///
    /// # Errors
    /// [`LayoutError`] when the parameters are out of range.
    pub const fn new(world_size: usize, staging_bytes: usize) -> Result<Self, LayoutError> {
        if world_size == 0 || world_size > MAX_RANKS {
            return Err(LayoutError::WorldSize);
        }
        if staging_bytes < MIN_STAGING_BYTES || staging_bytes % PAGE != 0 {
            return Err(LayoutError::Staging);
        }
        let info = size_of::<SegmentHeader>();
        let abort = info + size_of::<ControlInfo>();
        let sync = abort + size_of::<AbortRecord>();
        let release = sync + size_of::<SyncBlock>();
        let slots = release + size_of::<ReleaseLine>();
        let eager = slots + world_size * size_of::<RankSlot>();
        let Some(staging) = round_up(eager + EAGER_SLOTS * size_of::<EagerSlot>(), PAGE) else {
            return Err(LayoutError::Overflow);
        };
        let Some(both) = staging_bytes.checked_mul(2) else {
            return Err(LayoutError::Overflow);
        };
        let Some(total_bytes) = staging.checked_add(both) else {
            return Err(LayoutError::Overflow);
        };
        Ok(Self {
            world_size,
            staging_bytes,
            info,
            abort,
            sync,
            release,
            slots,
            eager,
            staging,
            total_bytes,
        })
    }

    /// Offset of rank `rank`'s [`RankSlot`].
    #[must_use]
    pub const fn slot(&self, rank: usize) -> usize {
        self.slots + rank * size_of::<RankSlot>()
    }

    /// Offset of the [`EagerSlot`] that carries the eager broadcast of `epoch`.
    #[must_use]
    pub const fn eager_slot(&self, epoch: u32) -> usize {
        self.eager + (epoch as usize % EAGER_SLOTS) * size_of::<EagerSlot>()
    }

    /// Offset of rank `rank`'s inline payload area of `parity` (0 or 1).
    #[must_use]
    pub const fn inline_area(&self, rank: usize, parity: usize) -> usize {
        self.slot(rank) + SLOT_INLINE_OFFSET + (parity & 1) * INLINE_BYTES
    }

    /// Offset of staging buffer `parity` (0 or 1).
    #[must_use]
    pub const fn staging_buffer(&self, parity: usize) -> usize {
        self.staging + (parity & 1) * self.staging_bytes
    }
}

/// Total size of a region segment holding `count` elements of `elem_size`
/// bytes; `None` on overflow.
#[must_use]
pub const fn region_total_bytes(count: usize, elem_size: usize) -> Option<usize> {
    match count.checked_mul(elem_size) {
        Some(bytes) => REGION_DATA_OFFSET.checked_add(bytes),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_layout_is_ordered_and_aligned() {
        for ranks in [1, 2, 3, 8, 64, MAX_RANKS] {
            let l = ControlLayout::new(ranks, DEFAULT_STAGING_BYTES).expect("valid layout");
            assert!(l.info < l.abort && l.abort < l.sync && l.sync < l.release);
            assert!(l.release < l.slots);
            assert_eq!(l.sync % HOT_LINE, 0);
            assert_eq!(l.release % HOT_LINE, 0);
            assert_eq!(l.slots % HOT_LINE, 0);
            assert!(l.slot(ranks - 1) + HOT_LINE <= l.eager);
            assert_eq!(l.eager % HOT_LINE, 0);
            assert_eq!(l.eager_slot(0), l.eager);
            assert_eq!(l.eager_slot(EAGER_SLOTS as u32 + 1), l.eager_slot(1));
            let last = l.eager_slot(EAGER_SLOTS as u32 - 1);
            assert!(last + size_of::<EagerSlot>() <= l.staging);
            assert_eq!(l.staging % PAGE, 0);
            assert_eq!(l.total_bytes, l.staging + 2 * DEFAULT_STAGING_BYTES);
            assert_eq!(
                l.staging_buffer(1) - l.staging_buffer(0),
                DEFAULT_STAGING_BYTES
            );
        }
    }

    #[test]
    fn control_layout_rejects_bad_parameters() {
        assert_eq!(ControlLayout::new(0, PAGE), Err(LayoutError::WorldSize));
        assert_eq!(
            ControlLayout::new(MAX_RANKS + 1, PAGE),
            Err(LayoutError::WorldSize)
        );
        assert_eq!(ControlLayout::new(2, PAGE - 1), Err(LayoutError::Staging));
        assert_eq!(ControlLayout::new(2, PAGE + 1), Err(LayoutError::Staging));
        assert_eq!(
            ControlLayout::new(2, usize::MAX & !(PAGE - 1)),
            Err(LayoutError::Overflow)
        );
    }

    #[test]
    fn arrival_word_round_trips() {
        let w = pack_arrival(0xdead_beef, 0x1234_5678);
        assert_eq!(unpack_arrival(w), (0xdead_beef, 0x1234_5678));
    }

    #[test]
    fn region_size_overflow_is_detected() {
        assert_eq!(region_total_bytes(10, 8), Some(PAGE + 80));
        assert_eq!(region_total_bytes(usize::MAX / 2, 8), None);
        assert_eq!(region_total_bytes(usize::MAX - 10, 1), None);
    }

    /// The fingerprint of this layout version, written down: changing any
    /// shared size, alignment or atomic offset changes it, and such a change
    /// must come with a new [`LAYOUT_VERSION`] and this value updated.
    #[test]
    fn fingerprint_matches_the_layout_written_down() {
        assert_eq!((LAYOUT_VERSION, FINGERPRINT), (4, 0xb9ea_c7ce_7b5f_d0ae));
    }
}
