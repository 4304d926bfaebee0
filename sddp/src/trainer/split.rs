//! How the forward trajectories are split: over ranks in contiguous blocks
//! (the first `M mod R` ranks take one more), and over each rank's workers
//! the same way. Every trajectory keeps its own stored bases, so results do
//! not depend on the split.
#![forbid(unsafe_code)]

use std::ops::Range;

use cobre_comm::per_rank_counts;

/// The split of `M` trajectories for one rank.
#[derive(Clone, Debug)]
pub(crate) struct Split {
    /// Trajectories of each rank.
    pub(crate) rank_counts: Vec<usize>,
    /// This rank's trajectories.
    pub(crate) mine: Range<usize>,
    /// Trajectories of each worker of this rank.
    pub(crate) workers: Vec<Range<usize>>,
}

impl Split {
    /// `m` trajectories, for `rank` of `ranks` with `workers` threads.
    pub(crate) fn new(m: usize, ranks: usize, rank: usize, workers: usize) -> Self {
        let rank_counts = per_rank_counts(m, ranks);
        let first: usize = rank_counts[..rank].iter().sum();
        let mine = first..first + rank_counts[rank];
        let mut at = mine.start;
        let workers = per_rank_counts(mine.len(), workers)
            .into_iter()
            .map(|c| {
                at += c;
                at - c..at
            })
            .collect();
        Self {
            rank_counts,
            mine,
            workers,
        }
    }

    /// Trajectories of each worker, in worker order.
    pub(crate) fn worker_lens(&self) -> Vec<usize> {
        self.workers.iter().map(Range::len).collect()
    }
}

/// Split `slice` into consecutive pieces of the given lengths.
pub(crate) fn split_lengths<T>(
    mut slice: &mut [T],
    lens: impl IntoIterator<Item = usize>,
) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for l in lens {
        let (a, b) = slice.split_at_mut(l);
        out.push(a);
        slice = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Split;

    #[test]
    fn split_covers_every_trajectory_once() {
        for m in [1, 5, 7, 10, 40] {
            for ranks in 1..5 {
                let mut seen = vec![0; m];
                let mut next = 0;
                for r in 0..ranks {
                    for w in [1, 2, 3] {
                        let s = Split::new(m, ranks, r, w);
                        assert_eq!(s.mine.start, next);
                        assert_eq!(s.worker_lens().iter().sum::<usize>(), s.mine.len());
                        assert_eq!(s.workers.first().map_or(next, |x| x.start), next);
                        if w == 1 {
                            for j in s.mine.clone() {
                                seen[j] += 1;
                            }
                        }
                        assert_eq!(s.rank_counts.iter().sum::<usize>(), m);
                    }
                    next = Split::new(m, ranks, r, 1).mine.end;
                }
                assert!(
                    seen.iter().all(|&c| c == 1),
                    "m={m} ranks={ranks}: {seen:?}"
                );
            }
        }
    }
}
