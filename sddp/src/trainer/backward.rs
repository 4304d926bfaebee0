//! The backward pass, stage by stage from the last: at stage `t` every
//! worker solves, for each of its trial points `x` (end volumes of stage
//! `t − 1`), the stage-`t` LP under every opening, and averages the results
//! into one cut `θ_{t−1} ≥ α + β·v`. The new cuts are written straight into
//! their pool slots and published in one collective; cut selection then
//! decides which cuts stage `t − 1` loads.
#![forbid(unsafe_code)]

use std::ops::Range;
use std::time::Instant;

use rayon::prelude::*;

use super::split::{split_lengths, Split};
use super::{opening, Trainer, Worker};
use crate::engine::{EngineComm, EngineError};
use crate::pool::{CutPool, HEAD};
use crate::workspace::{SolveFailure, Source};

/// What one worker's backward stage reads.
struct Plan<'p, C: EngineComm> {
    split: &'p Split,
    tree: &'p [f64],
    tree_off: &'p [usize],
    probs: &'p [f64],
    pool: &'p CutPool<C>,
    /// Index of the first trial point of this iteration.
    states0: usize,
    stage: usize,
    iteration: usize,
    hydros: usize,
}

/// Write the cuts of worker `w`'s trial points at stage `plan.stage` into
/// `out` (one record per trajectory).
fn worker_pass<C: EngineComm>(
    w: usize,
    worker: &mut Worker,
    src: Source<'_, C>,
    plan: &Plan<'_, C>,
    out: &mut [f64],
) -> Result<(), SolveFailure> {
    let (t, nh) = (plan.stage, plan.hydros);
    let stride = HEAD + nh;
    let base = plan.split.worker_range(w).start;
    let mut beta = vec![0.0; nh];
    let Worker {
        ws,
        first_group,
        bases,
        warm,
    } = worker;
    for (gi, entries) in bases.iter_mut().enumerate() {
        let g = *first_group + gi;
        ws.load(src, t).map_err(|e| SolveFailure {
            stage: t + 1,
            error: format!("{e:?}"),
            state: Vec::new(),
            inflows: Vec::new(),
            rungs: "load".into(),
        })?;
        let mut offer = entries[t].restore(ws.slots(), warm);
        for j in plan.split.groups[g].clone() {
            let x = plan.pool.state(t - 1, plan.states0 + j);
            let mut alpha = 0.0;
            beta.fill(0.0);
            for (k, &p) in plan.probs.iter().enumerate() {
                let a = opening(plan.tree, plan.tree_off, nh, t, k);
                let sol = ws.solve(x, a, offer.then_some(&*warm))?;
                offer = false;
                let pi = ws.state_duals();
                let dot: f64 = pi.iter().zip(x).map(|(p, x)| p * x).sum();
                alpha += p * (sol.objective - dot);
                for (b, &d) in beta.iter_mut().zip(pi) {
                    *b += p * d;
                }
            }
            let rec = &mut out[(j - base) * stride..(j - base + 1) * stride];
            rec[0] = alpha;
            rec[1] = (plan.iteration + 1) as f64;
            rec[2] = j as f64;
            rec[HEAD..].copy_from_slice(&beta);
        }
        ws.capture(&mut entries[t]);
    }
    Ok(())
}

impl<C: EngineComm> Trainer<'_, C> {
    /// The backward pass of `iteration` (0-based) at the trial points
    /// `states` published by its forward pass.
    pub(super) fn backward(
        &mut self,
        iteration: usize,
        states: Range<usize>,
    ) -> Result<(), EngineError> {
        let nh = self.case.hydros.len();
        let stride = HEAD + nh;
        let lens = self.split.worker_lens();
        let mut records = vec![0.0; self.split.mine.len() * stride];
        for t in (1..self.case.stages).rev() {
            let t0 = Instant::now();
            let outcome = {
                let src = Source {
                    cache: &self.cache,
                    pool: &self.pool,
                    selector: &self.selector,
                };
                let plan = Plan {
                    split: &self.split,
                    tree: self.tree.lane(0),
                    tree_off: &self.tree_off,
                    probs: &self.probs[t],
                    pool: &self.pool,
                    states0: states.start,
                    stage: t,
                    iteration,
                    hydros: nh,
                };
                let parts = split_lengths(&mut records, lens.iter().map(|l| l * stride));
                let workers = &mut self.workers;
                self.threads.install(|| {
                    workers
                        .par_iter_mut()
                        .zip(parts)
                        .enumerate()
                        .map(|(w, (worker, out))| worker_pass(w, worker, src, &plan, out))
                        .collect::<Vec<_>>()
                })
            };
            let local = outcome
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), |e| Err(EngineError::Solve(e)));
            self.phases.backward += t0.elapsed();
            self.agree(local, iteration + 1)?;
            let t1 = Instant::now();
            let slots =
                self.pool
                    .append_cuts(self.comm, t - 1, &self.split.rank_counts, &records)?;
            self.phases.cut_exchange += t1.elapsed();
            let t2 = Instant::now();
            let (selector, pool) = (&mut self.selector, &self.pool);
            let pending = self
                .threads
                .install(|| selector.add_cuts(pool, t - 1, slots.clone()));
            selector.share(self.comm, pending)?;
            self.phases.selection += t2.elapsed();
        }
        Ok(())
    }
}
