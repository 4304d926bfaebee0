//! Cut selection: which cuts of the pool each stage LP loads.
//!
//! **Level-1** (de Matos, Philpott & Finardi 2015), deterministic: every
//! trial point ever visited keeps the cut that is binding there — the one of
//! highest value `α + β·x`, the oldest slot among cuts within a relative
//! tolerance of it — and a cut stays active while it is binding at some
//! visited point. The cuts of the current iteration are always active. The
//! bookkeeping is incremental: new trial points are evaluated against every
//! cut, new cuts against every trial point, always in ascending slot order,
//! so the result equals a full evaluation and depends only on the pool and
//! the trial points — never on ranks, threads or the order work was done in.
//! The full pool is still kept and written to `policy.json`.
#![forbid(unsafe_code)]

use std::ops::Range;
use std::str::FromStr;

use cobre_comm::{CommError, ReduceOp};
use rayon::prelude::*;

use crate::engine::EngineComm;
use crate::pool::CutPool;

/// Relative tolerance within which two cut values count as a tie.
pub const TIE_TOLERANCE: f64 = 1e-9;

/// How cuts are selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CutSelection {
    /// Every cut of the pool is loaded.
    None,
    /// Level-1: cuts binding at some visited trial point (the default).
    #[default]
    Level1,
}

impl CutSelection {
    /// `none` or `level1`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Level1 => "level1",
        }
    }
}

impl FromStr for CutSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "level1" | "level-1" => Ok(Self::Level1),
            other => Err(format!(
                "cut selection '{other}' is not one of: none, level1"
            )),
        }
    }
}

/// The best cut found so far at one trial point.
#[derive(Clone, Copy, Debug)]
struct Best {
    value: f64,
    slot: u32,
}

const NONE: Best = Best {
    value: f64::NEG_INFINITY,
    slot: u32::MAX,
};

fn value(alpha: f64, beta: &[f64], x: &[f64]) -> f64 {
    let mut v = alpha;
    for (b, xi) in beta.iter().zip(x) {
        v += b * xi;
    }
    v
}

/// Whether a cut of value `v` beats the current best (strictly, beyond the
/// tie tolerance: ties keep the older cut).
fn beats(v: f64, best: &Best) -> bool {
    best.slot == u32::MAX || v > best.value + TIE_TOLERANCE * best.value.abs().max(1.0)
}

/// The selection state of every lane on this rank.
///
/// Trial points are dealt round-robin over ranks (point `s` belongs to rank
/// `s mod ranks`): each rank keeps and updates the best cut only at its own
/// points, so the bookkeeping exists once per node whatever the split, and
/// the active set of a lane is the union over ranks, formed by one bitwise
/// OR allreduce — the same set for every split.
#[derive(Debug)]
pub struct Selector {
    rule: CutSelection,
    rank: usize,
    ranks: usize,
    /// Per lane, the best cut at each of this rank's trial points
    /// (local index `i` is point `rank + i * ranks`).
    best: Vec<Vec<Best>>,
    /// Per lane, the active slots in ascending order (every rank).
    active: Vec<Vec<u32>>,
}

/// A lane's active set as seen by one rank, to be merged over ranks by
/// [`Selector::share`].
#[must_use = "the active set changes only once shared"]
pub struct Pending {
    lane: usize,
    bits: Vec<u64>,
}

impl Selector {
    /// An empty selection for `lanes` lanes on rank `rank` of `ranks`.
    #[must_use]
    pub fn new(rule: CutSelection, lanes: usize, rank: usize, ranks: usize) -> Self {
        Self {
            rule,
            rank,
            ranks: ranks.max(1),
            best: vec![Vec::new(); lanes],
            active: vec![Vec::new(); lanes],
        }
    }

    /// The rule in force.
    #[must_use]
    pub fn rule(&self) -> CutSelection {
        self.rule
    }

    /// Active slots of lane `c`, ascending.
    #[must_use]
    pub fn active(&self, c: usize) -> &[u32] {
        &self.active[c]
    }

    /// Bytes of bookkeeping held by this rank.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.best.iter().map(|b| b.capacity() * 16).sum::<usize>()
            + self.active.iter().map(|a| a.capacity() * 4).sum::<usize>()
    }

    /// This rank's trial points within `states`, ascending.
    fn owned(&self, states: Range<usize>) -> impl Iterator<Item = usize> + Clone {
        let first =
            states.start + (self.rank + self.ranks - states.start % self.ranks) % self.ranks;
        (first..states.end).step_by(self.ranks)
    }

    /// After a forward pass published new trial points (`states`), evaluate
    /// every cut of every lane at this rank's share of them. Runs on the
    /// calling Rayon pool; local (no communication).
    pub fn add_states<C: EngineComm>(&mut self, pool: &CutPool<C>, states: Range<usize>) {
        if self.rule == CutSelection::None {
            return;
        }
        let owned = self.owned(states);
        let rank_ranks = (self.rank, self.ranks);
        self.best.par_iter_mut().enumerate().for_each(|(c, best)| {
            let cuts = pool.len(c);
            best.reserve_exact(owned.clone().count());
            for s in owned.clone() {
                debug_assert_eq!(rank_ranks.0 + best.len() * rank_ranks.1, s);
                let x = pool.state(c, s);
                let mut b = NONE;
                for slot in 0..cuts {
                    let cut = pool.cut(c, slot);
                    let v = value(cut.intercept, cut.coefficients, x);
                    if beats(v, &b) {
                        b = Best {
                            value: v,
                            slot: slot as u32,
                        };
                    }
                }
                best.push(b);
            }
        });
    }

    /// After the backward pass published new cuts (`slots`) in lane `c`,
    /// evaluate them at this rank's trial points; the result becomes the
    /// lane's active set once [`Selector::share`]d. Runs on the calling
    /// Rayon pool; local.
    pub fn add_cuts<C: EngineComm>(
        &mut self,
        pool: &CutPool<C>,
        c: usize,
        slots: Range<usize>,
    ) -> Pending {
        let words = pool.len(c).div_ceil(64);
        let mut bits = vec![0u64; words];
        let mut set = |slot: usize| bits[slot / 64] |= 1 << (slot % 64);
        if self.rule == CutSelection::None {
            (0..pool.len(c)).for_each(&mut set);
            return Pending { lane: c, bits };
        }
        let (rank, ranks) = (self.rank, self.ranks);
        self.best[c]
            .par_iter_mut()
            .enumerate()
            .with_min_len(64)
            .for_each(|(i, b)| {
                let x = pool.state(c, rank + i * ranks);
                for slot in slots.clone() {
                    let cut = pool.cut(c, slot);
                    let v = value(cut.intercept, cut.coefficients, x);
                    if beats(v, b) {
                        *b = Best {
                            value: v,
                            slot: slot as u32,
                        };
                    }
                }
            });
        self.best[c]
            .iter()
            .filter(|b| b.slot != u32::MAX)
            .for_each(|b| set(b.slot as usize));
        // The cuts of the current iteration are always active.
        slots.for_each(set);
        Pending { lane: c, bits }
    }

    /// Collective: merge every rank's view of a lane (bitwise OR) and make
    /// it the lane's active set.
    ///
    /// # Errors
    /// When the exchange fails.
    pub fn share<C: EngineComm>(&mut self, comm: &C, pending: Pending) -> Result<(), CommError> {
        let Pending { lane, bits } = pending;
        let mut all = vec![0u64; bits.len()];
        if comm.size() > 1 && !bits.is_empty() {
            comm.allreduce(&bits, &mut all, ReduceOp::BitwiseOr)?;
        } else {
            all = bits;
        }
        let active = &mut self.active[lane];
        active.clear();
        for (w, word) in all.iter().enumerate() {
            let mut word = *word;
            while word != 0 {
                active.push((w * 64) as u32 + word.trailing_zeros());
                word &= word - 1;
            }
        }
        active.shrink_to_fit();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_own_every_trial_point_exactly_once() {
        for ranks in 1..6 {
            for (a, b) in [(0, 0), (0, 1), (0, 13), (3, 4), (5, 17), (64, 128)] {
                let mut seen: Vec<usize> = (0..ranks)
                    .flat_map(|r| {
                        let s = Selector::new(CutSelection::Level1, 1, r, ranks);
                        let owned: Vec<usize> = s.owned(a..b).collect();
                        assert!(owned.iter().all(|p| p % ranks == r), "{owned:?}");
                        owned
                    })
                    .collect();
                seen.sort_unstable();
                assert_eq!(seen, (a..b).collect::<Vec<_>>(), "{ranks} ranks, {a}..{b}");
            }
        }
    }
}
