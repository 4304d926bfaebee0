//! The backward pass, stage by stage from the last: the cut of lane `t` at a
//! trajectory's trial point `x̂` (the state it left stage `t` with) comes
//! from stage `t + 1`'s LP, loaded with its cuts from earlier iterations and
//! the ones every rank just made for it, solved under every opening in the
//! model's solve order. The first solve starts from the basis the trajectory
//! left at stage `t + 1` and stores its own; the others go on warm.
//!
//! Per opening `ω`, the slope of the stage value in state coordinate `k` is
//! the reduced cost of its pinned incoming column (unscaled), and the
//! intercept `Q_ω − π_ω·x̂`; the model's risk measure weighs the openings
//! (in opening order) into one cut. Each rank writes the cuts of its
//! trajectories into their pool slots, published in one collective per lane.
#![forbid(unsafe_code)]

use std::time::Instant;

use rayon::prelude::*;

use super::split::split_lengths;
use super::{Trainer, Worker};
use crate::comm::EngineComm;
use crate::error::EngineError;
use crate::model::{CutLayout, Model, Phase, RiskMeasure};
use crate::shared::pool::HEAD;
use crate::solve::workspace::{CutsOf, Frozen, SolveFailure};

/// What one worker's backward stage reads.
struct Plan<'p, C: EngineComm, M: Model> {
    model: &'p M,
    frozen: Frozen<'p, C>,
    /// The stage whose LP is solved (`lane + 1`).
    stage: usize,
    layout: &'p CutLayout,
    risk: RiskMeasure,
    probs: &'p [f64],
    order: &'p [usize],
    tree: &'p [f64],
    /// Trial points of this rank: `[trajectory][lane][coordinate]`.
    trial: &'p [f64],
    lanes: usize,
    iteration: usize,
}

/// One opening's cut.
struct Outcome {
    objective: f64,
    intercept: f64,
    slopes: Vec<f64>,
}

/// Write the cuts of `worker`'s trial points into `out` (one record per
/// trajectory).
fn worker_pass<C: EngineComm, M: Model>(
    worker: &mut Worker<M::Scratch>,
    first_local: usize,
    plan: &Plan<'_, C, M>,
    out: &mut [f64],
) -> Result<(), SolveFailure> {
    let model = plan.model;
    let (s, n, width) = (plan.stage, model.state_len(), plan.layout.len());
    let lane = s - 1;
    let noise_len = model.noise_len();
    let stride = HEAD + width;
    let mut outcomes: Vec<Outcome> = (0..plan.probs.len())
        .map(|_| Outcome {
            objective: 0.0,
            intercept: 0.0,
            slopes: vec![0.0; width],
        })
        .collect();
    let (mut values, mut mu) = (vec![0.0; outcomes.len()], Vec::new());
    let Worker {
        ws,
        scratch,
        range,
        bases,
    } = worker;
    ws.set_profile(model.profile(Phase::Backward));
    ws.freeze(
        plan.frozen,
        s,
        CutsOf::Before(plan.iteration),
        plan.iteration as u64,
    );
    ws.add_iteration_cuts(plan.frozen, plan.iteration);
    for (i, g) in range.clone().enumerate() {
        let local = first_local + i;
        let at = (local * plan.lanes + lane) * n;
        let x = &plan.trial[at..at + n];
        ws.load().map_err(|e| SolveFailure {
            stage: s + 1,
            error: format!("{e:?}"),
            what: model.describe(s, x, &[]),
            rungs: "load".into(),
        })?;
        for (pos, &w) in plan.order.iter().enumerate() {
            let noise = &plan.tree[w * noise_len..(w + 1) * noise_len];
            let mut set = |solver: &mut cobre_solver::HighsSolver| {
                model.prepare(s, noise, x, scratch, solver);
            };
            let warm = (pos == 0).then_some(&bases[i][s]);
            let sol = ws.solve(warm, &mut set, &|| model.describe(s, x, noise))?;
            let rc = ws.reduced_costs();
            let scale = ws.col_scale();
            let o = &mut outcomes[w];
            o.objective = sol.objective;
            for (k, slope) in o.slopes.iter_mut().enumerate() {
                let col = plan.layout.incoming_column[k];
                *slope = rc[col] / scale.get(col).copied().unwrap_or(1.0);
            }
            let dot: f64 = o
                .slopes
                .iter()
                .zip(&plan.layout.state_index)
                .map(|(p, &j)| p * x[j])
                .sum();
            o.intercept = sol.objective - dot;
            if pos == 0 {
                ws.capture(&mut bases[i][s]);
            }
        }
        for (v, o) in values.iter_mut().zip(&outcomes) {
            *v = o.objective;
        }
        plan.risk.weights(&values, plan.probs, &mut mu);
        let rec = &mut out[i * stride..(i + 1) * stride];
        let (head, coefficients) = rec.split_at_mut(HEAD);
        coefficients.fill(0.0);
        let mut alpha = 0.0;
        for (o, &m) in outcomes.iter().zip(&mu) {
            alpha += m * o.intercept;
            for (c, &p) in coefficients.iter_mut().zip(&o.slopes) {
                *c += m * p;
            }
        }
        head[0] = alpha;
        head[1] = plan.iteration as f64;
        head[2] = g as f64;
    }
    Ok(())
}

impl<C: EngineComm, M: Model> Trainer<'_, C, M> {
    /// The backward pass of iteration `k` (1-based) at the trial points of
    /// its forward pass.
    pub(super) fn backward(&mut self, k: usize) -> Result<(), EngineError> {
        let lanes = self.pool.lanes();
        let lens = self.split.worker_lens();
        for lane in (0..lanes).rev() {
            let t0 = Instant::now();
            let stride = self.pool.stride(lane);
            let mut records = vec![0.0; self.split.mine.len() * stride];
            let s = lane + 1;
            let outcome = {
                let plan = Plan {
                    model: self.model,
                    frozen: super::frozen(&self.cache, &self.pool, self.model, s),
                    stage: s,
                    layout: self.model.cut_layout(lane),
                    risk: self.model.risk_measure(lane),
                    probs: &self.probs[s],
                    order: &self.orders[s],
                    tree: super::tree_block(&self.tree, &self.tree_off, s),
                    trial: &self.trial,
                    lanes,
                    iteration: k,
                };
                let parts = split_lengths(&mut records, lens.iter().map(|l| l * stride));
                let firsts: Vec<usize> = lens
                    .iter()
                    .scan(0, |acc, l| {
                        *acc += l;
                        Some(*acc - l)
                    })
                    .collect();
                let workers = &mut self.workers;
                self.threads.install(|| {
                    workers
                        .par_iter_mut()
                        .zip(parts.into_par_iter().zip(firsts))
                        .map(|(worker, (out, first))| worker_pass(worker, first, &plan, out))
                        .collect::<Vec<_>>()
                })
            };
            let local = outcome
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), |e| Err(EngineError::Solve(e)));
            self.phases.backward += t0.elapsed();
            self.agree(local, k)?;
            let t1 = Instant::now();
            self.pool
                .append_cuts(self.comm, lane, &self.split.rank_counts, &records)?;
            self.phases.cut_exchange += t1.elapsed();
            self.trim_between_stages();
        }
        Ok(())
    }
}
