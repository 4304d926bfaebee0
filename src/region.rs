//! `ShmRegion<T>`: a shared region backed by its own POSIX shared-memory
//! segment, mapped once per process — one copy per node, whatever the number
//! of ranks.
//!
//! Creation is collective and born complete: rank 0 creates the segment
//! exclusively, sizes it, applies the memory policy and marks it ready; one
//! barrier; the others open and validate it; one barrier; rank 0 unlinks the
//! name (nothing can leak from then on); each rank default-initialises its
//! own block of elements (so first-touch places block `r` on rank `r`'s
//! node); one barrier.

use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cobre_comm::{CommData, CommError, SharedRegion};
use cobre_shm_layout::{
    region_total_bytes, RegionInfo, SegmentHeader, SegmentKind, CREATOR_LOCK_BYTE, FINGERPRINT,
    LAYOUT_VERSION, MAGIC, PAGE, REGION_DATA_OFFSET, REGION_INFO_OFFSET, STATE_READY,
};
use nix::errno::Errno;

use crate::config::MemPolicy;
use crate::job::Job;
use crate::os::numa;
use crate::os::segment::{Opened, Segment};
use crate::sync::{OpKind, Signature};

const OP: &str = "create_shared_region";

/// A shared region of `count` elements of `T` in POSIX shared memory.
///
/// Unlike cobre-comm's contract for followers (`as_mut_slice` of length 0),
/// every rank sees the **whole** region through both `as_slice` and
/// `as_mut_slice`: ranks may populate disjoint parts between two `fence`
/// calls (e.g. the opening tree by blocks of stages). Reading a part another
/// rank writes is only valid after the `fence` that follows the write.
pub struct ShmRegion<T: CommData> {
    job: Arc<Job>,
    seg: Option<Segment>,
    ptr: NonNull<T>,
    count: usize,
    id: u64,
    _elem: PhantomData<T>,
}

// SAFETY: the mapping is ordinary process memory valid until drop, usable
// from any thread; `T: Send + Sync` (CommData); shared access goes through
// `&self` (read-only slices) and mutation through `&mut self`, as for a Vec.
unsafe impl<T: CommData> Send for ShmRegion<T> {}
// SAFETY: as above.
unsafe impl<T: CommData> Sync for ShmRegion<T> {}

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
}

fn status(kind: Fail, errno: Errno) -> u64 {
    ((kind as u64) << 32) | u64::from(errno as i32 as u32)
}

fn describe(rank: usize, word: u64, name: &str, total: usize, policy: MemPolicy) -> String {
    let errno = Errno::from_raw((word & 0xffff_ffff) as i32);
    let what = match word >> 32 {
        1 => format!(
            "/dev/shm does not have {total} bytes free (see `df -h /dev/shm`; enlarge it with \
             `mount -o remount,size=<N>G /dev/shm`)"
        ),
        2 => format!("could not create and map {name} ({total} bytes): {errno}"),
        3 => {
            format!("could not apply memory policy {policy}: {errno} (does that NUMA node exist?)")
        }
        4 => format!("could not open {name}: it is missing ({errno})"),
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
    seg.write_pod(REGION_INFO_OFFSET, info);
    seg.write_pod(
        0,
        &SegmentHeader {
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
        },
    );
    seg.atomic_u32(cobre_shm_layout::HEADER_STATE_OFFSET)
        .store(STATE_READY, Ordering::Release);
    Ok(seg)
}

fn open_segment(name: &str, total: usize, info: &RegionInfo) -> Result<Segment, u64> {
    let seg = match Segment::open(name, total) {
        Ok(Opened::Ready(seg)) => seg,
        Ok(Opened::Missing) => return Err(status(Fail::Missing, Errno::ENOENT)),
        Ok(Opened::TooSmall) => return Err(status(Fail::Invalid, Errno::EINVAL)),
        Err(e) => return Err(status(Fail::Os, e.errno)),
    };
    let h: SegmentHeader = seg.read_pod(0);
    let ready = seg
        .atomic_u32(cobre_shm_layout::HEADER_STATE_OFFSET)
        .load(Ordering::Acquire)
        == STATE_READY;
    let found: RegionInfo = seg.read_pod(REGION_INFO_OFFSET);
    let valid = ready
        && h.magic == MAGIC
        && h.layout_version == LAYOUT_VERSION
        && h.kind == SegmentKind::Region as u32
        && h.fingerprint == FINGERPRINT
        && h.total_bytes == total as u64
        && seg.len() == total
        && found == *info;
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

/// Collective: create a region of `count` `T`s shared by every rank of `job`.
pub(crate) fn create<T: CommData>(job: &Arc<Job>, count: usize) -> Result<ShmRegion<T>, CommError> {
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
        ptr: NonNull::dangling(),
        count,
        id,
        _elem: PhantomData,
    };
    if requested == 0 {
        job.barrier(sig, OP)?;
        return Ok(empty);
    }
    let name = format!("{}.r{id}", job.control.name());
    let info = RegionInfo {
        count: count as u64,
        elem_size: elem as u64,
        elem_align: align_of::<T>() as u64,
        region_id: id,
        reserved: [0; 4],
    };
    let _unlink = (job.rank == 0).then(|| UnlinkOnDrop { job, name: &name });
    let mut mine = 0;
    let mut seg = None;
    if job.rank == 0 {
        match create_segment(job, &name, total, &info) {
            Ok(s) => seg = Some(s),
            Err(st) => mine = st,
        }
    }
    let fail = |words: &[u64]| {
        words
            .iter()
            .enumerate()
            .find(|(_, &w)| w != 0)
            .map(|(r, &w)| alloc_failed(describe(r, w, &name, total, job.mempolicy)))
    };
    // If rank 0 died after creating the name, a survivor removes it.
    let unlink_if_creator_died = |e| {
        if job.rank != 0 && !job.control.rank_alive(0).unwrap_or(true) {
            let _ = Segment::unlink(&name);
        }
        e
    };
    let words = job
        .exchange_word(mine, sig, OP)
        .map_err(unlink_if_creator_died)?;
    if let Some(e) = fail(&words) {
        return Err(e);
    }
    if job.rank != 0 {
        match open_segment(&name, total, &info) {
            Ok(s) => seg = Some(s),
            Err(st) => mine = st,
        }
    }
    let words = job
        .exchange_word(mine, sig, OP)
        .map_err(unlink_if_creator_died)?;
    drop(_unlink);
    if let Some(e) = fail(&words) {
        return Err(e);
    }
    let seg =
        seg.ok_or_else(|| alloc_failed(format!("{name} is not mapped on rank {}", job.rank)))?;
    let data = seg.ptr_at(REGION_DATA_OFFSET, requested, align_of::<T>());
    let ptr = NonNull::new(data.cast::<T>()).ok_or_else(|| alloc_failed("null mapping".into()))?;
    let region = ShmRegion {
        seg: Some(seg),
        ptr,
        ..empty
    };
    let (lo, hi) = block(count, job.size, job.rank);
    for i in lo..hi {
        // SAFETY: `i < count`, so the element lies inside the mapped data
        // (`ptr_at` checked `count * size_of::<T>()` bytes, aligned for `T`).
        // `write` does not read the old bytes, which may not be a valid `T`.
        unsafe { region.ptr.as_ptr().add(i).write(T::default()) };
    }
    region.fence()?;
    Ok(region)
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

    /// NUMA node of each page of the region's data as this process sees it
    /// (negative values are errnos, e.g. `-ENOENT` for untouched pages).
    ///
    /// # Errors
    /// From `move_pages`.
    pub fn page_nodes(&self) -> std::io::Result<Vec<i32>> {
        match &self.seg {
            Some(seg) => numa::page_nodes(
                seg.base_addr() + REGION_DATA_OFFSET,
                self.count * size_of::<T>(),
            ),
            None => Ok(Vec::new()),
        }
    }
}

impl<T: CommData> SharedRegion<T> for ShmRegion<T> {
    fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` points at `count` initialised `T`s inside the live
        // mapping (or is dangling with a zero-byte extent); the creation
        // protocol initialised every element before the final barrier, and
        // the region contract forbids writes to a part while it is read.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.count) }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as `as_slice`; `&mut self` excludes other borrows in this
        // process, and ranks write disjoint parts between fences.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.count) }
    }

    fn fence(&self) -> Result<(), CommError> {
        std::sync::atomic::fence(Ordering::SeqCst);
        let sig = Signature::new(OpKind::Fence).mix(self.id).finish();
        self.job.barrier(sig, "fence")
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
