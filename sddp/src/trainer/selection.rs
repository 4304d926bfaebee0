//! Cut selection by value at the visited trial points: every few iterations
//! (`CutSelection::every`), for every lane but the first and the last stage,
//! each cut is valued at the trial points of the last two selection windows
//! (`α + π·x`), and a cut counts as binding at a point when it is within the
//! tolerance of the best cut there (Level-1 and the domination rule mark
//! all such cuts, LML-1 only the oldest). Cuts of earlier iterations then
//! become active exactly when they bind somewhere; the running iteration's
//! cuts stay as they are. The values are computed by the same matrix
//! product as upstream's (see `gemm`), eight points at a time.
//!
//! Lanes are dealt over ranks in contiguous blocks and the new active flags
//! exchanged in one collective, so every rank ends with the same flags.
#![forbid(unsafe_code)]

use std::time::Instant;

use cobre_comm::{per_rank_counts, prefix_displs};
use rayon::prelude::*;

use super::Trainer;
use crate::comm::EngineComm;
use crate::error::EngineError;
use crate::model::Model;
use crate::options::{CutSelection, SelectionRule};
use crate::shared::pool::CutPool;

/// Trial points valued per matrix product.
const BLOCK: usize = 8;

/// The new active flags of lane `c` after selection at iteration `k`
/// (1-based), from the trial points `window` (state indices).
fn select_lane<C: EngineComm>(
    pool: &CutPool<C>,
    c: usize,
    state_index: &[usize],
    window: std::ops::Range<usize>,
    k: usize,
    rule: SelectionRule,
    tolerance: f64,
) -> Vec<u64> {
    let mut words = pool.active_words(c).to_vec();
    let populated = pool.len(c);
    let width = state_index.len();
    let eligible: Vec<bool> = (0..populated)
        .map(|s| pool.cut(c, s).iteration < k)
        .collect();
    if eligible.iter().filter(|&&e| e).count() < 2 || width == 0 || window.is_empty() {
        return words;
    }
    let mut coef = Vec::with_capacity(populated * width);
    let mut intercepts = Vec::with_capacity(populated);
    for s in 0..populated {
        let cut = pool.cut(c, s);
        coef.extend_from_slice(cut.coefficients);
        intercepts.push(cut.intercept);
    }
    let mut selected = vec![false; populated];
    let mut xs = Vec::with_capacity(BLOCK * width);
    let mut v = vec![0.0; populated * BLOCK];
    let states: Vec<usize> = window.collect();
    for block in states.chunks(BLOCK) {
        xs.clear();
        for &m in block {
            let x = pool.state(c, m);
            xs.extend(state_index.iter().map(|&j| x[j]));
        }
        let m_len = block.len();
        let v = &mut v[..populated * m_len];
        crate::gemm::values(&coef, &xs, populated, width, m_len, v);
        for (row, &alpha) in v.chunks_exact_mut(m_len).zip(&intercepts) {
            for value in row {
                *value += alpha;
            }
        }
        for col in 0..m_len {
            let mut best = f64::NEG_INFINITY;
            for s in 0..populated {
                if v[s * m_len + col] > best {
                    best = v[s * m_len + col];
                }
            }
            let cutoff = best - tolerance;
            for s in 0..populated {
                if eligible[s] && v[s * m_len + col] >= cutoff {
                    selected[s] = true;
                    if rule == SelectionRule::Lml1 {
                        break;
                    }
                }
            }
        }
    }
    for (s, &on) in selected.iter().enumerate() {
        if eligible[s] {
            let (w, b) = (s / 64, s % 64);
            if on {
                words[w] |= 1 << b;
            } else {
                words[w] &= !(1 << b);
            }
        }
    }
    words
}

/// The trial points selection at iteration `k` looks at: those of the
/// iterations since the selection before last (`every` iterations apart),
/// as state indices for `m` trajectories per iteration.
fn window(sel: &CutSelection, k: usize, m: usize) -> std::ops::Range<usize> {
    let lo = (k + 1).saturating_sub(2 * sel.every.max(1)).max(1);
    (lo - 1) * m..k * m
}

impl<C: EngineComm, M: Model> Trainer<'_, C, M> {
    /// Cut selection after the backward pass of iteration `k`, when due.
    pub(super) fn select(&mut self, k: usize) -> Result<(), EngineError> {
        let sel = self.opts.cut_selection;
        let Some(rule) = sel.rule else {
            return Ok(());
        };
        if !sel.runs_at(k) || !self.pool.keeps_states() {
            return Ok(());
        }
        let t0 = Instant::now();
        // Lanes 1 ..= stages - 2: never the first stage's cuts, and the
        // last stage has none.
        let lanes: Vec<usize> = (1..self.pool.lanes()).collect();
        if lanes.is_empty() {
            return Ok(());
        }
        let counts = per_rank_counts(lanes.len(), self.comm.size());
        let first: usize = counts[..self.comm.rank()].iter().sum();
        let mine = &lanes[first..first + counts[self.comm.rank()]];
        let win = window(&sel, k, self.opts.forward_passes);
        let (pool, model) = (&self.pool, self.model);
        let words: Vec<u64> = self.threads.install(|| {
            mine.par_iter()
                .map(|&c| {
                    let index = &model.cut_layout(c).state_index;
                    select_lane(pool, c, index, win.clone(), k, rule, sel.tolerance)
                })
                .collect::<Vec<_>>()
                .concat()
        });
        let per = self.pool.active_words(0).len();
        let word_counts: Vec<usize> = counts.iter().map(|c| c * per).collect();
        let mut all = vec![0u64; lanes.len() * per];
        self.comm
            .allgatherv(&words, &mut all, &word_counts, &prefix_displs(&word_counts))?;
        for (i, &c) in lanes.iter().enumerate() {
            self.pool.set_active_words(c, &all[i * per..(i + 1) * per]);
        }
        self.phases.selection += t0.elapsed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::window;
    use crate::options::CutSelection;

    #[test]
    fn the_window_covers_the_last_two_selection_periods() {
        let every = |e| CutSelection {
            every: e,
            ..CutSelection::default()
        };
        // Every iteration: this one and the one before.
        assert_eq!(window(&every(1), 1, 4), 0..4);
        assert_eq!(window(&every(1), 5, 4), 12..20);
        // Every 3: first run sees iterations 1-3, then the last 6.
        assert_eq!(window(&every(3), 3, 2), 0..6);
        assert_eq!(window(&every(3), 6, 2), 0..12);
        assert_eq!(window(&every(3), 9, 2), 6..18);
    }
}
