//! The forward pass, stage-major: each worker takes all of its trajectories
//! through stage `t` (group by group: load the stage, solve the group's
//! trajectories warm from the group's cached basis) before stage `t + 1`.
//! The end volumes of every stage but the last are the trial points; they
//! are published for every rank in one collective, then evaluated by cut
//! selection.
#![forbid(unsafe_code)]

use std::ops::Range;
use std::time::Instant;

use rayon::prelude::*;

use super::split::{split_lengths, Split};
use super::{opening, Trainer, Worker};
use crate::engine::{EngineComm, EngineError};
use crate::rng;
use crate::workspace::{SolveFailure, Source};

/// What one worker's forward pass reads.
struct Plan<'p> {
    split: &'p Split,
    tree: &'p [f64],
    tree_off: &'p [usize],
    probs: &'p [Vec<f64>],
    initial: &'p [f64],
    seed: u64,
    iteration: usize,
    hydros: usize,
    lanes: usize,
}

/// What one worker writes: the trial points and costs of its trajectories.
struct Out<'o> {
    states: &'o mut [f64],
    costs: &'o mut [f64],
}

/// Take worker `w`'s trajectories through every stage; returns the slack used.
fn worker_pass<C: EngineComm>(
    w: usize,
    worker: &mut Worker,
    src: Source<'_, C>,
    plan: &Plan<'_>,
    out: Out<'_>,
) -> Result<f64, SolveFailure> {
    let nh = plan.hydros;
    let base = plan.split.worker_range(w).start;
    let n = out.costs.len();
    let mut volumes: Vec<f64> = plan.initial.repeat(n);
    let mut incoming = vec![0.0; nh];
    let mut slack = 0.0;
    out.costs.fill(0.0);
    let Worker {
        ws,
        first_group,
        bases,
        warm,
    } = worker;
    for (t, probs) in plan.probs.iter().enumerate() {
        for (gi, entries) in bases.iter_mut().enumerate() {
            let g = *first_group + gi;
            ws.load(src, t).map_err(|e| SolveFailure {
                stage: t + 1,
                error: format!("{e:?}"),
                state: Vec::new(),
                inflows: Vec::new(),
                rungs: "load".into(),
            })?;
            let warm_ok = entries[t].restore(ws.slots(), warm);
            for (i, j) in plan.split.groups[g].clone().enumerate() {
                let local = j - base;
                let u = rng::uniform([plan.seed, plan.iteration as u64, j as u64, t as u64]);
                let k = rng::pick(probs.iter().copied(), u);
                let a = opening(plan.tree, plan.tree_off, nh, t, k);
                let v = &mut volumes[local * nh..(local + 1) * nh];
                incoming.copy_from_slice(v);
                let offer = (i == 0 && warm_ok).then_some(&*warm);
                let sol = ws.solve(&incoming, a, offer)?;
                out.costs[local] += sol.stage_cost;
                slack += sol.slack;
                v.copy_from_slice(ws.end_volumes());
                if t < plan.lanes {
                    let at = (local * plan.lanes + t) * nh;
                    out.states[at..at + nh].copy_from_slice(v);
                }
            }
            ws.capture(&mut entries[t]);
        }
    }
    Ok(slack)
}

impl<C: EngineComm> Trainer<'_, C> {
    /// The forward pass of `iteration` (0-based); returns the indices of
    /// the trial points it published.
    pub(super) fn forward(&mut self, iteration: usize) -> Result<Range<usize>, EngineError> {
        let t0 = Instant::now();
        let nh = self.case.hydros.len();
        let lanes = self.pool.lanes();
        let mut states = vec![0.0; self.split.mine.len() * lanes * nh];
        let lens = self.split.worker_lens();
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
                probs: &self.probs,
                initial: &self.initial,
                seed: self.opts.seed,
                iteration,
                hydros: nh,
                lanes,
            };
            let state_parts = split_lengths(&mut states, lens.iter().map(|l| l * lanes * nh));
            let cost_parts = split_lengths(&mut self.costs, lens.iter().copied());
            let workers = &mut self.workers;
            self.threads.install(|| {
                workers
                    .par_iter_mut()
                    .zip(state_parts.into_par_iter().zip(cost_parts))
                    .enumerate()
                    .map(|(w, (worker, (states, costs)))| {
                        worker_pass(w, worker, src, &plan, Out { states, costs })
                    })
                    .collect::<Vec<_>>()
            })
        };
        let mut local = Ok(());
        for r in outcome {
            match r {
                Ok(s) => self.slack += s,
                Err(e) if local.is_ok() => local = Err(EngineError::Solve(e)),
                Err(_) => {}
            }
        }
        self.phases.forward += t0.elapsed();
        self.agree(local, iteration + 1)?;
        let t1 = Instant::now();
        let range = self
            .pool
            .append_states(self.comm, &self.split.rank_counts, &states)?;
        self.phases.cut_exchange += t1.elapsed();
        let t2 = Instant::now();
        let (selector, pool) = (&mut self.selector, &self.pool);
        self.threads
            .install(|| selector.add_states(pool, range.clone()));
        self.phases.selection += t2.elapsed();
        Ok(range)
    }
}
