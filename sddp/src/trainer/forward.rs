//! The forward pass, stage-major: each worker takes all of its trajectories
//! through stage `t` before stage `t + 1`. Every (trajectory, stage) solve
//! loads the stage frozen with its active cuts, sets the incoming state and
//! the sampled noise, starts from the basis that trajectory left at that
//! stage in the last iteration, and stores the basis it ends with. The
//! states leaving every stage but the last are this iteration's trial
//! points; with cut selection on they are also published for every rank.
#![forbid(unsafe_code)]

use std::time::Instant;

use rayon::prelude::*;

use super::split::split_lengths;
use super::{Trainer, Worker};
use crate::comm::EngineComm;
use crate::error::EngineError;
use crate::model::{Model, Phase};
use crate::solve::workspace::{CutsOf, Frozen, SolveFailure};

/// What one worker's forward pass reads.
struct Plan<'p, C: EngineComm, M: Model> {
    model: &'p M,
    frozen: Vec<Frozen<'p, C>>,
    tree: Vec<&'p [f64]>,
    iteration: usize,
}

/// What one worker writes: the trial points and costs of its trajectories.
struct Out<'o> {
    trial: &'o mut [f64],
    costs: &'o mut [f64],
}

/// Take `worker`'s trajectories through every stage; returns the slack
/// they used.
// The stage index also picks the model's stage, the frozen LP and the tree
// block, not only a stored basis.
#[allow(clippy::needless_range_loop)]
fn worker_pass<C: EngineComm, M: Model>(
    worker: &mut Worker<M::Scratch>,
    plan: &Plan<'_, C, M>,
    out: Out<'_>,
) -> Result<f64, SolveFailure> {
    let model = plan.model;
    let (nt, n) = (model.stages(), model.state_len());
    let lanes = nt - 1;
    let count = worker.range.len();
    let mut state: Vec<f64> = model.initial_state().repeat(count);
    let mut incoming = vec![0.0; n];
    let mut outgoing = vec![0.0; n];
    let mut noise = vec![0.0; model.noise_len()];
    let mut slack = 0.0;
    out.costs.fill(0.0);
    let scale = model.cost_scale();
    let Worker {
        ws,
        scratch,
        range,
        bases,
    } = worker;
    ws.set_profile(model.profile(Phase::Forward));
    for t in 0..nt {
        ws.freeze(plan.frozen[t], t, CutsOf::Active, plan.iteration as u64);
        let theta = model.theta_column(t);
        let (delta, cum) = (model.discount(t), model.cumulative_discount(t));
        for (i, g) in range.clone().enumerate() {
            model.forward_noise(plan.iteration, g, t, plan.tree[t], &mut noise);
            incoming.copy_from_slice(&state[i * n..(i + 1) * n]);
            ws.load().map_err(|e| SolveFailure {
                stage: t + 1,
                error: format!("{e:?}"),
                what: model.describe(t, &incoming, &noise),
                rungs: "load".into(),
            })?;
            let last = t + 1 == nt;
            let mut set = |s: &mut cobre_solver::HighsSolver| {
                model.prepare(t, &noise, &incoming, scratch, s);
                if last {
                    // No future after the last stage.
                    cobre_solver::SolverInterface::set_col_bounds(s, &[theta], &[0.0], &[0.0]);
                }
            };
            let sol = ws.solve(Some(&bases[i][t]), &mut set, &|| {
                model.describe(t, &incoming, &noise)
            })?;
            let x = ws.primal();
            out.costs[i] += cum * ((sol.objective - delta * x[theta]) * scale);
            slack += model.penalty_slack(t, x);
            model.outgoing(t, x, &incoming, &noise, scratch, &mut outgoing);
            ws.capture(&mut bases[i][t]);
            state[i * n..(i + 1) * n].copy_from_slice(&outgoing);
            if t < lanes {
                let at = (i * lanes + t) * n;
                out.trial[at..at + n].copy_from_slice(&outgoing);
            }
        }
    }
    Ok(slack)
}

impl<C: EngineComm, M: Model> Trainer<'_, C, M> {
    /// The forward pass of iteration `k` (1-based).
    pub(super) fn forward(&mut self, k: usize) -> Result<(), EngineError> {
        let t0 = Instant::now();
        let nt = self.model.stages();
        let per = (nt - 1) * self.model.state_len();
        let lens = self.split.worker_lens();
        let outcome = {
            let plan = Plan {
                model: self.model,
                frozen: (0..nt)
                    .map(|t| super::frozen(&self.cache, &self.pool, self.model, t))
                    .collect(),
                tree: (0..nt)
                    .map(|t| super::tree_block(&self.tree, &self.tree_off, t))
                    .collect(),
                iteration: k,
            };
            let trial = split_lengths(&mut self.trial, lens.iter().map(|l| l * per));
            let costs = split_lengths(&mut self.costs, lens.iter().copied());
            let workers = &mut self.workers;
            self.threads.install(|| {
                workers
                    .par_iter_mut()
                    .zip(trial.into_par_iter().zip(costs))
                    .map(|(worker, (trial, costs))| {
                        worker_pass(worker, &plan, Out { trial, costs })
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
        self.agree(local, k)?;
        let t1 = Instant::now();
        self.pool
            .append_states(self.comm, &self.split.rank_counts, &self.trial)?;
        self.phases.cut_exchange += t1.elapsed();
        Ok(())
    }
}
