//! `ShmRegion<T>`: a shared region backed by its own POSIX shared-memory
//! segment, mapped once per process — one copy per node, whatever the number
//! of ranks.
//!
//! Creation is collective and born complete: rank 0 creates the segment
//! exclusively, sizes it, applies the memory policy and marks it ready; one
//! exchange; the others open and validate it; one exchange; rank 0 unlinks
//! the name (nothing can leak from then on); each rank reserves the pages of
//! its own block of elements and default-initialises them (so a full
//! `/dev/shm` is an error, not a `SIGBUS`, and first touch places block `r`
//! on rank `r`'s node); one exchange of the outcomes.
//!
//! Who writes what: as cobre-comm's contract says, the leader (rank 0) gets
//! the whole region from `as_mut_slice` and every other rank an empty slice;
//! every rank reads the whole region through `as_slice` after the `fence`
//! that follows a write. Ranks that fill their own parts use
//! [`ShmRegion::publish_blocks`], which copies a rank's block in without
//! ever handing out a `&mut` over memory other processes read.
#![forbid(unsafe_code)]

use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cobre_comm::{CommData, CommError, SharedRegion};
use cobre_shm_layout::{
    region_digest, region_total_bytes, RegionInfo, SegmentHeader, SegmentKind, CREATOR_LOCK_BYTE,
    FINGERPRINT, HEADER_STATE_OFFSET, LAYOUT_VERSION, MAGIC, PAGE, REGION_DATA_OFFSET,
    REGION_INFO_OFFSET, STATE_READY,
};
use nix::errno::Errno;

use crate::config::MemPolicy;
use crate::job::Job;
use crate::os::numa;
use crate::os::segment::{Opened, Segment};
use crate::plain;
use crate::sync::{OpKind, Signature};
use crate::views;

const OP: &str = "create_shared_region";

/// A shared region of `count` elements of `T` in POSIX shared memory.
pub struct ShmRegion<T: CommData> {
    job: Arc<Job>,
    seg: Option<Segment>,
    count: usize,
    id: u64,
    _elem: PhantomData<T>,
}

impl<T: CommData> std::fmt::Debug for ShmRegion<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmRegion")
            .field("id", &self.id)
            .field("count", &self.count)
            .field("elem", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

/// Status words exchanged during creation: `kind << 32 | errno`.
#[derive(Clone, Copy)]
#[repr(u64)]
enum Fail {
    NoSpace = 1,
    Os = 2,
    Policy = 3,
    Missing = 4,
    Invalid = 5,
    Reserve = 6,
    Foreign = 7,
}

fn status(kind: Fail, errno: Errno) -> u64 {
    ((kind as u64) << 32) | u64::from(errno as i32 as u32)
}

fn describe(rank: usize, word: u64, name: &str, total: usize, policy: MemPolicy) -> String {
    let errno = Errno::from_raw((word & 0xffff_ffff) as i32);
    let full = format!(
        "/dev/shm does not have room for the {total}-byte region {name} (see `df -h /dev/shm`; \
         free space there, remove dead jobs' segments with `cobre-shm clean`, or enlarge it with \
         `mount -o remount,size=<N>G /dev/shm`)"
    );
    let what = match word >> 32 {
        1 => full,
        6 if errno == Errno::ENOSPC => full,
        6 => format!("could not reserve the pages of its block of {name}: {errno}"),
        2 => format!("could not create and map {name} ({total} bytes): {errno}"),
        3 => {
            format!("could not apply memory policy {policy}: {errno} (does that NUMA node exist?)")
        }
        4 => format!("could not open {name}: it is missing ({errno})"),
        7 => format!(
            "{name} belongs to another user or others may write it: refused (someone else \
             created a segment under this job's name)"
        ),
        _ => format!("{name} does not hold the region every rank expects ({errno})"),
    };
    format!("rank {rank}: {what}")
}

/// Unlinks a region name when dropped (rank 0, whatever happens).
struct UnlinkOnDrop<'a> {
    job: &'a Job,
    name: &'a str,
}

impl Drop for UnlinkOnDrop<'_> {
    fn drop(&mut self) {
        let _ = Segment::unlink(self.name);
        self.job.forget_linked(self.name);
    }
}

fn create_segment(job: &Job, name: &str, total: usize, info: &RegionInfo) -> Result<Segment, u64> {
    // The control segment lives on the same filesystem (/dev/shm).
    let free = job.control.segment().free_bytes().unwrap_or(u64::MAX);
    if free < total as u64 {
        return Err(status(Fail::NoSpace, Errno::ENOSPC));
    }
    let seg = Segment::create_exclusive(name, total).map_err(|e| status(Fail::Os, e.errno))?;
    job.remember_linked(name);
    let _ = seg.try_lock_byte(CREATOR_LOCK_BYTE);
    let data_len = total - REGION_DATA_OFFSET;
    numa::apply_policy(
        seg.base_addr() + REGION_DATA_OFFSET,
        data_len,
        job.mempolicy,
    )
    .map_err(|e| {
        status(
            Fail::Policy,
            e.raw_os_error().map_or(Errno::EINVAL, Errno::from_raw),
        )
    })?;
    // The first page (header and description) is the creator's to touch.
    seg.reserve(0, REGION_DATA_OFFSET)
        .map_err(|e| status(Fail::Reserve, e.errno))?;
    let header = SegmentHeader {
        magic: MAGIC,
        layout_version: LAYOUT_VERSION,
        kind: SegmentKind::Region as u32,
        fingerprint: FINGERPRINT,
        total_bytes: total as u64,
        data_offset: REGION_DATA_OFFSET as u64,
        world_size: job.size as u32,
        creator_pid: std::process::id(),
        created_unix_ns: 0,
        state: 0,
        abort: 0,
    };
    let sealed = RegionInfo {
        digest: region_digest(&header, info),
        ..*info
    };
    seg.copy_in(REGION_INFO_OFFSET, bytemuck::bytes_of(&sealed));
    seg.write_header(&header);
    seg.atomic_u32(HEADER_STATE_OFFSET)
        .store(STATE_READY, Ordering::Release);
    Ok(seg)
}

fn open_segment(name: &str, total: usize, info: &RegionInfo) -> Result<Segment, u64> {
    let seg = match Segment::open(name, total) {
        Ok(Opened::Ready(seg)) => seg,
        Ok(Opened::Missing) => return Err(status(Fail::Missing, Errno::ENOENT)),
        Ok(Opened::TooSmall) => return Err(status(Fail::Invalid, Errno::EINVAL)),
        Ok(Opened::Foreign { .. }) => return Err(status(Fail::Foreign, Errno::EPERM)),
        Err(e) => return Err(status(Fail::Os, e.errno)),
    };
    let h = seg.read_header();
    let ready = h.state == STATE_READY;
    // Written by the creator before it published `state` (acquired by
    // `read_header` above), never written again.
    let found: RegionInfo = seg.read_published(REGION_INFO_OFFSET);
    let valid = ready
        && h.magic == MAGIC
        && h.layout_version == LAYOUT_VERSION
        && h.kind == SegmentKind::Region as u32
        && h.fingerprint == FINGERPRINT
        && h.total_bytes == total as u64
        && seg.len() == total
        && RegionInfo { digest: 0, ..found } == *info
        // A damaged header or description is refused, not trusted.
        && found.digest == region_digest(&h, &found);
    if valid {
        Ok(seg)
    } else {
        Err(status(Fail::Invalid, Errno::EINVAL))
    }
}

/// Element range `[lo, hi)` owned by `rank` of `size` for `count` elements.
#[must_use]
pub fn block(count: usize, size: usize, rank: usize) -> (usize, usize) {
    let base = count / size;
    let extra = count % size;
    let lo = rank * base + rank.min(extra);
    (lo, lo + base + usize::from(rank < extra))
}

/// Reserve the pages of elements `[lo, hi)` and write `T::default()` into
/// them; an errno-carrying status word on failure.
fn populate_block<T: CommData>(seg: &Segment, lo: usize, hi: usize) -> Result<(), u64> {
    let elem = size_of::<T>();
    if hi > lo {
        seg.reserve(REGION_DATA_OFFSET + lo * elem, (hi - lo) * elem)
            .map_err(|e| status(Fail::Reserve, e.errno))?;
        views::fill_default::<T>(seg, REGION_DATA_OFFSET + lo * elem, hi - lo);
    }
    Ok(())
}

/// Rank 0's part of [`create`]: a segment named `prefix` followed by fresh
/// random bits. Returns the words rank 0 sends (status, random bits), the
/// mapping when creating it worked, and the name when one was linked.
fn create_named(
    job: &Job,
    prefix: &str,
    total: usize,
    info: &RegionInfo,
) -> ([u64; 2], Option<Segment>, Option<String>) {
    match crate::random::words::<1>() {
        Ok([token]) => {
            let name = format!("{prefix}{token:016x}");
            match create_segment(job, &name, total, info) {
                Ok(s) => ([0, token], Some(s), Some(name)),
                Err(st) => ([st, token], None, Some(name)),
            }
        }
        Err(e) => {
            let errno = e.raw_os_error().map_or(Errno::EIO, Errno::from_raw);
            ([status(Fail::Os, errno), 0], None, None)
        }
    }
}

/// Collective: create a region of `count` `T`s shared by every rank of `job`.
pub(crate) fn create<T: CommData>(job: &Arc<Job>, count: usize) -> Result<ShmRegion<T>, CommError> {
    plain::check::<T>(OP)?;
    job.serial(OP, || create_checked(job, count))
}

fn create_checked<T: CommData>(job: &Arc<Job>, count: usize) -> Result<ShmRegion<T>, CommError> {
    let elem = size_of::<T>();
    let requested = count.saturating_mul(elem);
    let alloc_failed = |message: String| CommError::AllocationFailed {
        requested_bytes: requested,
        message,
    };
    let total = region_total_bytes(count, elem)
        .filter(|&t| isize::try_from(t).is_ok())
        .ok_or_else(|| {
            alloc_failed(format!(
                "{count} elements of {} ({elem} bytes each) exceed the address space",
                std::any::type_name::<T>()
            ))
        })?;
    if align_of::<T>() > PAGE {
        return Err(alloc_failed(format!(
            "element type {} needs {}-byte alignment; at most {PAGE} is supported",
            std::any::type_name::<T>(),
            align_of::<T>()
        )));
    }
    let id = job.region_seq.fetch_add(1, Ordering::Relaxed);
    let sig = Signature::new(OpKind::Region)
        .element::<T>()
        .mix(count as u64)
        .mix(id)
        .finish();
    let empty = ShmRegion {
        job: Arc::clone(job),
        seg: None,
        count,
        id,
        _elem: PhantomData,
    };
    if requested == 0 {
        job.barrier(sig, OP)?;
        return Ok(empty);
    }
    let info = RegionInfo {
        count: count as u64,
        elem_size: elem as u64,
        elem_align: align_of::<T>() as u64,
        region_id: id,
        digest: 0,
        reserved: [0; 3],
    };
    // Rank 0 names the region with fresh random bits (another user cannot
    // predict, so cannot squat, the name) and tells the others in the first
    // exchange, together with how creating it went.
    let prefix = format!("{}.r{id}.", job.control.name());
    let (mine, mut seg, created) = if job.rank == 0 {
        create_named(job, &prefix, total, &info)
    } else {
        ([0; 2], None, None)
    };
    let unlink = created.as_deref().map(|name| UnlinkOnDrop { job, name });
    // If rank 0 died after creating the name, a survivor removes it.
    let unlink_if_creator_died = |e| {
        if job.rank != 0 && !job.control.rank_alive(0).unwrap_or(true) {
            let _ = crate::cleanup::remove_prefixed(&prefix);
        }
        e
    };
    let words = job
        .exchange_words(mine, sig, OP)
        .map_err(unlink_if_creator_died)?;
    let name = format!("{prefix}{:016x}", words[0][1]);
    let fail = |words: &[u64]| {
        words
            .iter()
            .enumerate()
            .find(|(_, &w)| w != 0)
            .map(|(r, &w)| alloc_failed(describe(r, w, &name, total, job.mempolicy)))
    };
    let statuses: Vec<u64> = words.iter().map(|w| w[0]).collect();
    if let Some(e) = fail(&statuses) {
        return Err(e);
    }
    let mut mine = 0;
    if job.rank != 0 {
        match open_segment(&name, total, &info) {
            Ok(s) => seg = Some(s),
            Err(st) => mine = st,
        }
    }
    let words = job
        .exchange_word(mine, sig, OP)
        .map_err(unlink_if_creator_died)?;
    drop(unlink);
    if let Some(e) = fail(&words) {
        return Err(e);
    }
    let seg =
        seg.ok_or_else(|| alloc_failed(format!("{name} is not mapped on rank {}", job.rank)))?;
    let (lo, hi) = block(count, job.size, job.rank);
    let mine = populate_block::<T>(&seg, lo, hi).err().unwrap_or(0);
    // This exchange is also the fence that publishes the initialised blocks.
    let words = job.exchange_word(mine, sig, OP)?;
    if let Some(e) = fail(&words) {
        return Err(e);
    }
    Ok(ShmRegion {
        seg: Some(seg),
        ..empty
    })
}

impl<T: CommData> ShmRegion<T> {
    /// Sequence number of the region within its job.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the region holds no element.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of element data.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.count * size_of::<T>()
    }

    /// NUMA node of each page of the region's data as this process sees it
    /// (negative values are errnos, e.g. `-ENOENT` for untouched pages).
    ///
    /// # Errors
    /// From `move_pages`.
    pub fn page_nodes(&self) -> std::io::Result<Vec<i32>> {
        match &self.seg {
            Some(seg) => numa::page_nodes(seg.base_addr() + REGION_DATA_OFFSET, self.bytes()),
            None => Ok(Vec::new()),
        }
    }

    /// Collective: every rank copies `mine` into its own block of the window
    /// that starts at element `start` — rank `r`'s block is
    /// `[start + Σ counts[..r], + counts[r])` — and the window is published
    /// to every rank (one barrier, which doubles as the fence). Every rank
    /// passes the same `start` and `counts`; ranks that disagree fail with a
    /// collective mismatch. No rank ever writes outside its block.
    ///
    /// # Errors
    /// `InvalidBufferSize` when `counts` has not one entry per rank, `mine`
    /// is not `counts[rank]` long or the window does not fit the region;
    /// `CollectiveFailed` when the barrier fails.
    pub fn publish_blocks(
        &mut self,
        start: usize,
        counts: &[usize],
        mine: &[T],
    ) -> Result<(), CommError> {
        const OP: &str = "publish_blocks";
        let (rank, size) = (self.job.rank, self.job.size);
        let bad = |expected, actual| CommError::InvalidBufferSize {
            operation: OP,
            expected,
            actual,
        };
        if counts.len() != size {
            return Err(bad(size, counts.len()));
        }
        if mine.len() != counts[rank] {
            return Err(bad(counts[rank], mine.len()));
        }
        let total = counts
            .iter()
            .try_fold(0usize, |a, &c| a.checked_add(c))
            .and_then(|t| start.checked_add(t))
            .filter(|&end| end <= self.count)
            .ok_or_else(|| bad(self.count, start.saturating_add(counts.iter().sum())))?;
        let mut sig = Signature::new(OpKind::Blocks)
            .element::<T>()
            .mix(self.id)
            .mix(start as u64)
            .mix(total as u64);
        for &c in counts {
            sig = sig.mix(c as u64);
        }
        let first: usize = counts[..rank].iter().sum();
        self.job.serial(OP, || {
            // Peers may still read the region after the last full barrier
            // if only eager broadcasts came since.
            self.job.settle(OP)?;
            if let (Some(seg), false) = (&self.seg, mine.is_empty()) {
                let offset = REGION_DATA_OFFSET + (start + first) * size_of::<T>();
                views::put(seg, offset, mine);
            }
            self.job.barrier(sig.finish(), OP)
        })
    }
}

impl<T: CommData> SharedRegion<T> for ShmRegion<T> {
    /// The whole region. Reading a part is valid after the `fence` (or
    /// [`ShmRegion::publish_blocks`]) that follows its last write.
    fn as_slice(&self) -> &[T] {
        match &self.seg {
            Some(seg) => views::region_slice(seg, REGION_DATA_OFFSET, self.count),
            None => &[],
        }
    }

    /// The whole region on the leader (rank 0), an empty slice on every
    /// other rank — cobre-comm's contract. `&mut self` keeps other borrows
    /// of this process out; other ranks must not read the region until the
    /// leader's next `fence`.
    fn as_mut_slice(&mut self) -> &mut [T] {
        match (&mut self.seg, self.job.rank) {
            (Some(seg), 0) => views::region_slice_mut(seg, REGION_DATA_OFFSET, self.count),
            _ => &mut [],
        }
    }

    fn fence(&self) -> Result<(), CommError> {
        let sig = Signature::new(OpKind::Fence).mix(self.id).finish();
        self.job.serial("fence", || self.job.barrier(sig, "fence"))
    }
}

#[cfg(test)]
mod tests {
    use super::block;

    #[test]
    fn blocks_partition_the_range() {
        for count in [0, 1, 7, 100, 101] {
            for size in 1..6 {
                let mut next = 0;
                for r in 0..size {
                    let (lo, hi) = block(count, size, r);
                    assert_eq!(lo, next);
                    assert!(hi >= lo);
                    next = hi;
                }
                assert_eq!(next, count);
            }
        }
    }
}
