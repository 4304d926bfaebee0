//! Where the engine keeps data that every rank reads: append-only lanes in
//! a region of the communicator (one copy per node under shm), or a private
//! copy per rank (`--replicate`, to measure what sharing saves).
#![forbid(unsafe_code)]

use std::ops::Range;

use cobre_comm::{prefix_displs, CommData, CommError};
use cobre_shm::{BlockPublish, BlockRegion};

/// Append-only lanes that ranks fill by blocks; readers see only what was
/// published.
pub enum Lanes<T: CommData, C: BlockPublish> {
    /// A region of the communicator.
    Region(BlockRegion<T, C>),
    /// A private copy: windows travel by `allgatherv`.
    Private {
        /// Every lane, back to back.
        data: Vec<T>,
        /// Capacity of each lane.
        lane_len: usize,
        /// Elements published per lane.
        published: Vec<usize>,
    },
}

/// Elements of `lanes × lane_len`, or an allocation error naming them.
fn total(lanes: usize, lane_len: usize, what: &str) -> Result<usize, CommError> {
    lanes
        .checked_mul(lane_len)
        .ok_or_else(|| CommError::AllocationFailed {
            requested_bytes: usize::MAX,
            message: format!("{what}: {lanes} lanes of {lane_len} elements overflow"),
        })
}

impl<T: CommData, C: BlockPublish> Lanes<T, C> {
    /// Collective: `lanes` empty lanes of `lane_len` elements; `what` names
    /// the data in errors.
    ///
    /// # Errors
    /// When the region cannot be created.
    pub fn new(
        comm: &C,
        lanes: usize,
        lane_len: usize,
        replicate: bool,
        what: &str,
    ) -> Result<Self, CommError> {
        let len = total(lanes, lane_len, what)?;
        if !replicate {
            return BlockRegion::new(comm, lanes, lane_len).map(Self::Region);
        }
        // Touch every page, as the shared region's creation does, so a
        // private copy costs what it would cost once filled.
        let mut data = vec![T::default(); len];
        std::hint::black_box(&mut data);
        Ok(Self::Private {
            data,
            lane_len,
            published: vec![0; lanes],
        })
    }

    /// Collective: append one window to `lane`, rank `r` contributing
    /// `counts[r]` elements (`mine`); returns the window within the lane.
    ///
    /// # Errors
    /// When the window does not fit or the exchange fails.
    pub fn append(
        &mut self,
        comm: &C,
        lane: usize,
        counts: &[usize],
        mine: &[T],
    ) -> Result<Range<usize>, CommError> {
        match self {
            Self::Region(r) => r.append(comm, lane, counts, mine),
            Self::Private {
                data,
                lane_len,
                published,
            } => {
                let n: usize = counts.iter().sum();
                let from = published[lane];
                if n > *lane_len - from || counts.len() != comm.size() {
                    return Err(CommError::InvalidBufferSize {
                        operation: "append",
                        expected: *lane_len - from,
                        actual: n,
                    });
                }
                let start = lane * *lane_len + from;
                let window = &mut data[start..start + n];
                let displs = prefix_displs(counts);
                let me = comm.rank();
                window[displs[me]..displs[me] + counts[me]].copy_from_slice(mine);
                if comm.size() > 1 {
                    comm.allgatherv(mine, window, counts, &displs)?;
                }
                published[lane] = from + n;
                Ok(from..from + n)
            }
        }
    }

    /// The published part of `lane`.
    #[must_use]
    pub fn lane(&self, lane: usize) -> &[T] {
        match self {
            Self::Region(r) => r.lane(lane),
            Self::Private {
                data,
                lane_len,
                published,
            } => &data[lane * lane_len..lane * lane_len + published[lane]],
        }
    }

    /// Bytes of all lanes (published or not).
    #[must_use]
    pub fn bytes(&self) -> usize {
        match self {
            Self::Region(r) => r.bytes(),
            Self::Private { data, .. } => std::mem::size_of_val(data.as_slice()),
        }
    }

    /// One copy per node (a shared region, or a single rank)?
    #[must_use]
    pub fn is_shared(&self, comm: &C) -> bool {
        matches!(self, Self::Region(_)) && comm.regions_shared()
    }

    /// `posix_shm`, `process_heap`, `cobre_comm_heap_fallback` or `private_copy`.
    #[must_use]
    pub fn storage(&self, comm: &C) -> &'static str {
        match self {
            Self::Region(_) => comm.region_storage(),
            Self::Private { .. } => "private_copy",
        }
    }

    /// Pages per NUMA node as this process sees them (`-1`: not backed).
    #[must_use]
    pub fn pages_by_node(&self) -> Vec<(i32, usize)> {
        let pages = match self {
            Self::Region(r) => r.page_nodes().unwrap_or_default(),
            Self::Private { .. } => Vec::new(),
        };
        let mut by_node: Vec<(i32, usize)> = Vec::new();
        for p in pages {
            let node = p.max(-1);
            match by_node.iter_mut().find(|(n, _)| *n == node) {
                Some((_, c)) => *c += 1,
                None => by_node.push((node, 1)),
            }
        }
        by_node.sort_unstable();
        by_node
    }
}
