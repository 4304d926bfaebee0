//! Regions that ranks fill by blocks, and readers see only once published.
//!
//! [`BlockPublish`] is the one way a rank writes its part of a shared
//! region: a collective call in which every rank copies its own block of a
//! window in (shared memory) or sends it to the others (per-rank copies,
//! e.g. cobre-comm's MPI heap fallback), after which every rank sees the
//! whole window. [`BlockRegion`] builds append-only *lanes* on top (the cut
//! pool: one lane per stage, one window per iteration): writers can only
//! append to the unpublished tail of a lane, and readers only get the
//! published prefix, so no reader ever holds a view of bytes a peer is
//! writing.
#![forbid(unsafe_code)]

use std::ops::Range;

use cobre_comm::{
    CommData, CommError, Communicator, HeapRegion, LocalBackend, SharedMemoryProvider, SharedRegion,
};

use crate::backend::ShmBackend;
use crate::comm::{Comm, CommRegion};
use crate::region::ShmRegion;

/// Communicators whose shared regions ranks can fill block by block.
pub trait BlockPublish: Communicator + SharedMemoryProvider {
    /// Whether a region is one copy that every rank sees (shared memory, or
    /// a single rank) rather than one copy per rank.
    fn regions_shared(&self) -> bool;

    /// Where the regions live, for reports: `posix_shm`, `process_heap` or
    /// `cobre_comm_heap_fallback`.
    fn region_storage(&self) -> &'static str;

    /// NUMA node of each page of `region` as this process sees it (negative:
    /// not backed yet), when the region is real shared memory.
    fn region_pages<T: CommData>(region: &Self::Region<T>) -> Option<Vec<i32>>;

    /// Collective: rank `r` copies `mine` (`counts[r]` elements) into its
    /// block `[start + Σ counts[..r], + counts[r])` of `region`; on return
    /// every rank sees the whole window `[start, start + Σ counts)`. Every
    /// rank passes the same `start` and `counts`.
    ///
    /// # Errors
    /// `InvalidBufferSize` for inconsistent arguments; `CollectiveFailed`
    /// when the exchange fails; what the backend refuses (e.g. element
    /// types that are not plain data).
    fn publish_blocks<T: CommData>(
        &self,
        region: &mut Self::Region<T>,
        start: usize,
        counts: &[usize],
        mine: &[T],
    ) -> Result<(), CommError>;
}

/// `publish_blocks` for a region that is a private copy on every rank: copy
/// this rank's block in, then gather the others' with `allgatherv`.
fn publish_copy<C: Communicator, T: CommData>(
    comm: &C,
    data: &mut [T],
    start: usize,
    counts: &[usize],
    mine: &[T],
) -> Result<(), CommError> {
    let (rank, size) = (comm.rank(), comm.size());
    let bad = |expected, actual| CommError::InvalidBufferSize {
        operation: "publish_blocks",
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
        .and_then(|t| start.checked_add(t).map(|end| (t, end)))
        .filter(|&(_, end)| end <= data.len())
        .map(|(t, _)| t)
        .ok_or_else(|| bad(data.len(), start.saturating_add(counts.iter().sum())))?;
    let displs = cobre_comm::prefix_displs(counts);
    let window = &mut data[start..start + total];
    window[displs[rank]..displs[rank] + counts[rank]].copy_from_slice(mine);
    if size > 1 {
        comm.allgatherv(mine, window, counts, &displs)?;
    }
    Ok(())
}

impl BlockPublish for ShmBackend {
    fn regions_shared(&self) -> bool {
        true
    }

    fn region_storage(&self) -> &'static str {
        "posix_shm"
    }

    fn region_pages<T: CommData>(region: &ShmRegion<T>) -> Option<Vec<i32>> {
        region.page_nodes().ok()
    }

    fn publish_blocks<T: CommData>(
        &self,
        region: &mut ShmRegion<T>,
        start: usize,
        counts: &[usize],
        mine: &[T],
    ) -> Result<(), CommError> {
        region.publish_blocks(start, counts, mine)
    }
}

impl BlockPublish for LocalBackend {
    fn regions_shared(&self) -> bool {
        true
    }

    fn region_storage(&self) -> &'static str {
        "process_heap"
    }

    fn region_pages<T: CommData>(_: &HeapRegion<T>) -> Option<Vec<i32>> {
        None
    }

    fn publish_blocks<T: CommData>(
        &self,
        region: &mut HeapRegion<T>,
        start: usize,
        counts: &[usize],
        mine: &[T],
    ) -> Result<(), CommError> {
        publish_copy(self, region.as_mut_slice(), start, counts, mine)
    }
}

impl BlockPublish for Comm {
    fn regions_shared(&self) -> bool {
        match self {
            Comm::Shm(_) | Comm::Local(_) => true,
            // cobre-comm 0.18's MPI regions are private heap copies.
            #[cfg(feature = "mpi")]
            Comm::Mpi(c) => Communicator::size(c.as_ref()) == 1,
        }
    }

    fn region_storage(&self) -> &'static str {
        match self {
            Comm::Shm(c) => c.region_storage(),
            Comm::Local(c) => c.region_storage(),
            #[cfg(feature = "mpi")]
            Comm::Mpi(_) => "cobre_comm_heap_fallback",
        }
    }

    fn region_pages<T: CommData>(region: &CommRegion<T>) -> Option<Vec<i32>> {
        match region {
            CommRegion::Shm(r) => r.page_nodes().ok(),
            CommRegion::Heap(_) => None,
        }
    }

    fn publish_blocks<T: CommData>(
        &self,
        region: &mut CommRegion<T>,
        start: usize,
        counts: &[usize],
        mine: &[T],
    ) -> Result<(), CommError> {
        match region {
            CommRegion::Shm(r) => r.publish_blocks(start, counts, mine),
            CommRegion::Heap(r) => publish_copy(self, r.as_mut_slice(), start, counts, mine),
        }
    }
}

/// A region of `lanes` append-only lanes of `lane_len` elements each.
pub struct BlockRegion<T: CommData, C: BlockPublish> {
    region: C::Region<T>,
    lane_len: usize,
    published: Vec<usize>,
}

impl<T: CommData, C: BlockPublish> std::fmt::Debug for BlockRegion<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRegion")
            .field("lanes", &self.published.len())
            .field("lane_len", &self.lane_len)
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

impl<T: CommData, C: BlockPublish> BlockRegion<T, C> {
    /// Collective: create `lanes × lane_len` elements, nothing published.
    ///
    /// # Errors
    /// `AllocationFailed` when the size overflows; what the backend reports.
    pub fn new(comm: &C, lanes: usize, lane_len: usize) -> Result<Self, CommError> {
        let count = lanes
            .checked_mul(lane_len)
            .ok_or_else(|| CommError::AllocationFailed {
                requested_bytes: usize::MAX,
                message: format!(
                    "{lanes} lanes of {lane_len} elements of {} overflow the address space",
                    std::any::type_name::<T>()
                ),
            })?;
        Ok(Self {
            region: comm.create_shared_region::<T>(count)?,
            lane_len,
            published: vec![0; lanes],
        })
    }

    /// Number of lanes.
    #[must_use]
    pub fn lanes(&self) -> usize {
        self.published.len()
    }

    /// Capacity of each lane in elements.
    #[must_use]
    pub fn lane_len(&self) -> usize {
        self.lane_len
    }

    /// Elements published so far in `lane`.
    #[must_use]
    pub fn published(&self, lane: usize) -> usize {
        self.published[lane]
    }

    /// Bytes of the whole region (all lanes, published or not).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.lanes() * self.lane_len * size_of::<T>()
    }

    /// The published prefix of `lane`.
    ///
    /// # Panics
    /// If `lane` is out of range.
    #[must_use]
    pub fn lane(&self, lane: usize) -> &[T] {
        let at = lane * self.lane_len;
        &self.region.as_slice()[at..at + self.published[lane]]
    }

    /// NUMA node of each page, when the region is real shared memory.
    #[must_use]
    pub fn page_nodes(&self) -> Option<Vec<i32>> {
        C::region_pages(&self.region)
    }

    /// Collective: append one window to `lane`, rank `r` contributing
    /// `counts[r]` elements (`mine`), and publish it; returns the window's
    /// element range within the lane. Every rank passes the same `lane` and
    /// `counts`.
    ///
    /// # Errors
    /// `InvalidBufferSize` when the window does not fit the lane's free
    /// capacity or the arguments disagree; what [`BlockPublish`] reports.
    ///
    /// # Panics
    /// If `lane` is out of range.
    pub fn append(
        &mut self,
        comm: &C,
        lane: usize,
        counts: &[usize],
        mine: &[T],
    ) -> Result<Range<usize>, CommError> {
        let from = self.published[lane];
        let total = counts
            .iter()
            .try_fold(0usize, |a, &c| a.checked_add(c))
            .filter(|&t| t <= self.lane_len - from)
            .ok_or(CommError::InvalidBufferSize {
                operation: "append",
                expected: self.lane_len - from,
                actual: counts.iter().fold(0usize, |a, &c| a.saturating_add(c)),
            })?;
        comm.publish_blocks(&mut self.region, lane * self.lane_len + from, counts, mine)?;
        self.published[lane] = from + total;
        Ok(from..from + total)
    }
}
