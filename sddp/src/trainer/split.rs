//! How the forward trajectories are split: into warm groups, over ranks in
//! contiguous blocks of groups, and over each rank's workers.
#![forbid(unsafe_code)]

use std::ops::Range;

use cobre_comm::per_rank_counts;

/// The split of `M` trajectories for one rank.
#[derive(Clone, Debug)]
pub(crate) struct Split {
    /// Trajectory range of every group.
    pub(crate) groups: Vec<Range<usize>>,
    /// Trajectories of each rank.
    pub(crate) rank_counts: Vec<usize>,
    /// This rank's trajectories.
    pub(crate) mine: Range<usize>,
    /// Groups (indices into `groups`) of each worker of this rank.
    pub(crate) worker_groups: Vec<Range<usize>>,
}

impl Split {
    /// `m` trajectories in groups of `g`, for `rank` of `ranks` with `workers` threads.
    pub(crate) fn new(m: usize, g: usize, ranks: usize, rank: usize, workers: usize) -> Self {
        let groups: Vec<Range<usize>> = (0..m.div_ceil(g))
            .map(|i| i * g..((i + 1) * g).min(m))
            .collect();
        let per_rank = per_rank_counts(groups.len(), ranks);
        let first = |r: usize| per_rank[..r].iter().sum::<usize>();
        let rank_range = |r: usize| {
            let (a, b) = (first(r), first(r) + per_rank[r]);
            if a == b {
                groups.get(a).map_or(m..m, |gr| gr.start..gr.start)
            } else {
                groups[a].start..groups[b - 1].end
            }
        };
        let rank_counts = (0..ranks).map(|r| rank_range(r).len()).collect();
        let (ga, nb) = (first(rank), per_rank[rank]);
        let per_worker = per_rank_counts(nb, workers);
        let mut worker_groups = Vec::with_capacity(workers);
        let mut at = ga;
        for c in per_worker {
            worker_groups.push(at..at + c);
            at += c;
        }
        Self {
            mine: rank_range(rank),
            groups,
            rank_counts,
            worker_groups,
        }
    }

    /// Trajectory range of worker `w`.
    pub(crate) fn worker_range(&self, w: usize) -> Range<usize> {
        let gs = &self.worker_groups[w];
        if gs.is_empty() {
            return self.mine.end..self.mine.end;
        }
        self.groups[gs.start].start..self.groups[gs.end - 1].end
    }

    /// Trajectories of each worker, in worker order.
    pub(crate) fn worker_lens(&self) -> Vec<usize> {
        (0..self.worker_groups.len())
            .map(|w| self.worker_range(w).len())
            .collect()
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
        for m in [1, 7, 10, 40] {
            for g in [1, 2, 4] {
                for ranks in 1..5 {
                    let mut seen = vec![0; m];
                    let mut next = 0;
                    for r in 0..ranks {
                        for w in [1, 2, 3] {
                            let s = Split::new(m, g, ranks, r, w);
                            if !s.mine.is_empty() {
                                assert_eq!(s.mine.start, next);
                            }
                            let covered: usize = s.worker_lens().iter().sum();
                            assert_eq!(covered, s.mine.len());
                            if w == 1 {
                                for j in s.mine.clone() {
                                    seen[j] += 1;
                                }
                            }
                            assert_eq!(s.rank_counts.iter().sum::<usize>(), m);
                        }
                        next = Split::new(m, g, ranks, r, 1).mine.end.max(next);
                    }
                    assert!(
                        seen.iter().all(|&c| c == 1),
                        "m={m} g={g} ranks={ranks}: {seen:?}"
                    );
                }
            }
        }
    }
}
