//! Bounds and the stop decision: the lower bound (the first stage's value
//! at the initial state, every opening solved on rank 0 with every cut of
//! the first lane, aggregated by the model's risk measure and broadcast),
//! the mean and 95 % confidence interval of the forward costs in global
//! trajectory order, and the stop rules decided by rank 0 and broadcast.
#![forbid(unsafe_code)]

use std::time::Instant;

use cobre_comm::{prefix_displs, ReduceOp};

use super::Trainer;
use crate::comm::EngineComm;
use crate::error::EngineError;
use crate::model::{Model, Phase};
use crate::report::{IterationRow, StopReason};
use crate::solve::workspace::CutsOf;

/// Mean, sample standard deviation and half-width of the 95 % confidence
/// interval of `xs`, by Welford's recurrence in order.
fn statistics(xs: &[f64]) -> (f64, f64, f64) {
    let (mut mean, mut m2) = (0.0, 0.0);
    for (i, &x) in xs.iter().enumerate() {
        let d = x - mean;
        mean += d / (i + 1) as f64;
        m2 += d * (x - mean);
    }
    let n = xs.len();
    if n < 2 {
        return (mean, 0.0, 0.0);
    }
    let std = (m2 / (n - 1) as f64).sqrt();
    (mean, std, 1.96 * std / (n as f64).sqrt())
}

impl<C: EngineComm, M: Model> Trainer<'_, C, M> {
    /// The first stage's value at the initial state (rank 0 solves, every
    /// rank gets it), in reported units.
    pub(super) fn lower_bound(&mut self, k: usize) -> Result<f64, EngineError> {
        let t0 = Instant::now();
        let mut lb = [0.0];
        let local = if self.comm.rank() == 0 {
            self.solve_lower_bound(k).map(|v| lb[0] = v)
        } else {
            Ok(())
        };
        self.phases.lower_bound += t0.elapsed();
        self.agree(local, k)?;
        self.comm.broadcast(&mut lb, 0)?;
        Ok(lb[0])
    }

    fn solve_lower_bound(&mut self, k: usize) -> Result<f64, EngineError> {
        let model = self.model;
        let frozen = super::frozen(&self.cache, &self.pool, model, 0);
        let tree = super::tree_block(&self.tree, &self.tree_off, 0);
        let noise_len = model.noise_len();
        let initial = model.initial_state();
        let probs = &self.probs[0];
        let worker = &mut self.workers[0];
        let ws = &mut worker.ws;
        ws.set_profile(model.profile(Phase::LowerBound));
        // Every cut of the first lane (selection never leaves one out).
        ws.freeze(frozen, 0, CutsOf::Active, u64::MAX - k as u64);
        ws.load()
            .map_err(|e| EngineError::Solver(format!("{e:?}")))?;
        let mut values = Vec::with_capacity(probs.len());
        let last = model.stages() == 1;
        let theta = model.theta_column(0);
        for w in 0..probs.len() {
            let noise = &tree[w * noise_len..(w + 1) * noise_len];
            let scratch = &mut worker.scratch;
            let mut set = |s: &mut cobre_solver::HighsSolver| {
                model.prepare(0, noise, initial, scratch, s);
                if last {
                    cobre_solver::SolverInterface::set_col_bounds(s, &[theta], &[0.0], &[0.0]);
                }
            };
            let warm = (w == 0).then_some(&self.lb_basis);
            let sol = ws.solve(warm, &mut set, &|| model.describe(0, initial, noise))?;
            values.push(sol.objective);
        }
        ws.capture(&mut self.lb_basis);
        Ok(model.risk_measure(0).evaluate(&values, probs) * model.cost_scale())
    }

    /// Gather the forward costs, record the iteration, and decide whether
    /// to stop (rank 0 decides, everyone follows).
    pub(super) fn close_iteration(
        &mut self,
        k: usize,
        lb: f64,
        on_iteration: &mut dyn FnMut(&IterationRow),
    ) -> Result<Option<StopReason>, EngineError> {
        let t0 = Instant::now();
        let mut all = vec![0.0; self.opts.forward_passes];
        let counts = &self.split.rank_counts;
        self.comm
            .allgatherv(&self.costs, &mut all, counts, &prefix_displs(counts))?;
        let (mean, std, ci95) = statistics(&all);
        let solves: u64 = self.workers.iter().map(|w| w.ws.stats().solves).sum();
        let mut total = [0u64];
        self.comm.allreduce(&[solves], &mut total, ReduceOp::Sum)?;
        let (solves_before, phases_before) = self.mark;
        let p = &self.phases;
        let row = IterationRow {
            iteration: k,
            lower_bound: lb,
            upper_bound_mean: mean,
            upper_bound_ci95: ci95,
            gap: (mean - lb) / lb.abs().max(1.0),
            cuts: (0..self.pool.lanes()).map(|c| self.pool.len(c)).sum(),
            elapsed_secs: self.elapsed_before + self.start.elapsed().as_secs_f64(),
            upper_bound_std: std,
            lp_solves: total[0] - solves_before,
            active_cuts: (0..self.pool.lanes())
                .map(|c| self.pool.active_count(c))
                .sum(),
            phase_secs: [
                (p.forward - phases_before.forward).as_secs_f64(),
                (p.backward - phases_before.backward).as_secs_f64(),
                (p.lower_bound - phases_before.lower_bound).as_secs_f64(),
            ],
        };
        self.mark = (total[0], self.phases);
        self.gather_phase_work(k)?;
        self.rows.push(row);
        let mut decision = [0u64];
        if self.comm.rank() == 0 {
            decision[0] = self.stop_rule().map_or(0, StopReason::code);
            on_iteration(&row);
        }
        self.comm.broadcast(&mut decision, 0)?;
        self.phases.bounds_sync += t0.elapsed();
        Ok(StopReason::from_code(decision[0]))
    }

    /// Which stop rule fires after the last recorded iteration (rank 0).
    fn stop_rule(&self) -> Option<StopReason> {
        if self.rows.len() >= self.opts.iterations {
            return Some(StopReason::IterationLimit);
        }
        let rules = &self.opts.stop;
        let elapsed = self.elapsed_before + self.start.elapsed().as_secs_f64();
        let time = rules
            .time_limit
            .map(|l| (elapsed >= l.as_secs_f64(), StopReason::TimeLimit));
        let stall = rules.stall.map(|(tol, window)| {
            let lbs: Vec<f64> = self.rows.iter().map(|r| r.lower_bound).collect();
            let window = window.max(1);
            let held = lbs.len() >= window && {
                let now = lbs[lbs.len() - 1];
                let then = lbs[lbs.len() - window];
                ((now - then) / now.abs().max(1.0)).abs() < tol
            };
            (held, StopReason::Stall)
        });
        let rules: Vec<(bool, StopReason)> = [time, stall].into_iter().flatten().collect();
        if rules.is_empty() {
            return None;
        }
        if self.opts.stop.require_all {
            rules.iter().all(|r| r.0).then(|| rules[0].1)
        } else {
            rules.iter().find(|r| r.0).map(|r| r.1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::statistics;

    #[test]
    fn mean_deviation_and_interval() {
        let (m, s, ci) = statistics(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert_eq!(s, 1.0);
        assert!((ci - 1.96 / 3f64.sqrt()).abs() < 1e-15);
        assert_eq!(statistics(&[5.0]), (5.0, 0.0, 0.0));
    }
}
