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

/// The selection state of every lane.
#[derive(Debug)]
pub struct Selector {
    rule: CutSelection,
    /// Per lane, the best cut at every trial point.
    best: Vec<Vec<Best>>,
    /// Per lane, the active slots in ascending order.
    active: Vec<Vec<u32>>,
    /// Slots of the current iteration's cuts, per lane (always active).
    fresh: Vec<Range<usize>>,
}

impl Selector {
    /// An empty selection for `lanes` lanes.
    #[must_use]
    pub fn new(rule: CutSelection, lanes: usize) -> Self {
        Self {
            rule,
            best: vec![Vec::new(); lanes],
            active: vec![Vec::new(); lanes],
            fresh: vec![0..0; lanes],
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

    /// Bytes of bookkeeping held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.best.iter().map(|b| b.capacity() * 16).sum::<usize>()
            + self.active.iter().map(|a| a.capacity() * 4).sum::<usize>()
    }

    /// After a forward pass published new trial points (`states`), evaluate
    /// every cut of every lane at them. Runs on the calling Rayon pool.
    pub fn add_states<C: EngineComm>(&mut self, pool: &CutPool<C>, states: Range<usize>) {
        if self.rule == CutSelection::None {
            return;
        }
        self.best.par_iter_mut().enumerate().for_each(|(c, best)| {
            let cuts = pool.len(c);
            for s in states.clone() {
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
                debug_assert_eq!(best.len(), s);
                best.push(b);
            }
        });
    }

    /// After the backward pass published new cuts (`slots`) in lane `c`,
    /// evaluate them at every trial point and recompute the lane's active
    /// set. Runs on the calling Rayon pool.
    pub fn add_cuts<C: EngineComm>(&mut self, pool: &CutPool<C>, c: usize, slots: Range<usize>) {
        self.fresh[c] = slots.clone();
        if self.rule == CutSelection::None {
            self.active[c] = (0..pool.len(c) as u32).collect();
            return;
        }
        self.best[c]
            .par_iter_mut()
            .enumerate()
            .with_min_len(64)
            .for_each(|(s, b)| {
                let x = pool.state(c, s);
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
        let mut active: Vec<u32> = self.best[c]
            .iter()
            .filter(|b| b.slot != u32::MAX)
            .map(|b| b.slot)
            .chain(slots.map(|s| s as u32))
            .collect();
        active.sort_unstable();
        active.dedup();
        self.active[c] = active;
    }
}
