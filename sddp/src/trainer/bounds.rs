//! Bounds and the stop decision: the lower bound (expected stage-1 value,
//! the same solves in the same order on every rank), the mean and 95 %
//! confidence interval of the forward costs summed in global trajectory
//! order, and the stop rules decided by rank 0 and broadcast.
#![forbid(unsafe_code)]

use std::time::Instant;

use cobre_comm::prefix_displs;

use super::{opening, Trainer};
use crate::engine::{EngineComm, EngineError, IterationRow, StopReason};
use crate::workspace::Source;

/// Mean and half-width of the 95 % confidence interval of `xs`.
fn mean_ci95(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

impl<C: EngineComm> Trainer<'_, C> {
    /// The expected value of stage 1 at the initial volumes, on worker 0's
    /// workspace, warm from the basis the previous lower bound left.
    pub(super) fn lower_bound(&mut self, iteration: usize) -> Result<f64, EngineError> {
        let t0 = Instant::now();
        let nh = self.case.hydros.len();
        let src = Source {
            cache: &self.cache,
            pool: &self.pool,
            selector: &self.selector,
        };
        let worker = &mut self.workers[0];
        let result = (|| {
            worker
                .ws
                .load(src, 0)
                .map_err(|e| EngineError::Solver(format!("{e:?}")))?;
            let mut offer = self.lb_basis.restore(worker.ws.slots(), &mut worker.warm);
            let mut lb = 0.0;
            for (k, &p) in self.probs[0].iter().enumerate() {
                let a = opening(self.tree.lane(0), &self.tree_off, nh, 0, k);
                let sol = worker
                    .ws
                    .solve(&self.initial, a, offer.then_some(&worker.warm))?;
                offer = false;
                lb += p * sol.objective;
            }
            worker.ws.capture(&mut self.lb_basis);
            Ok(lb)
        })();
        self.phases.lower_bound += t0.elapsed();
        let (local, lb) = match result {
            Ok(lb) => (Ok(()), lb),
            Err(e) => (Err(e), f64::NAN),
        };
        self.agree(local, iteration + 1)?;
        Ok(lb)
    }

    /// Gather the forward costs, record the iteration, and decide whether
    /// to stop (rank 0 decides, everyone follows).
    pub(super) fn close_iteration(
        &mut self,
        iteration: usize,
        lb: f64,
        on_iteration: &mut dyn FnMut(&IterationRow),
    ) -> Result<Option<StopReason>, EngineError> {
        let t0 = Instant::now();
        let m = self.opts.forward_passes;
        let mut all = vec![0.0; m];
        let counts = &self.split.rank_counts;
        self.comm
            .allgatherv(&self.costs, &mut all, counts, &prefix_displs(counts))?;
        let (mean, ci95) = mean_ci95(&all);
        let row = IterationRow {
            iteration: iteration + 1,
            lower_bound: lb,
            upper_bound_mean: mean,
            upper_bound_ci95: ci95,
            gap: if mean == 0.0 {
                0.0
            } else {
                (mean - lb) / mean.abs()
            },
            cuts: (0..self.pool.lanes()).map(|c| self.pool.len(c)).sum(),
            elapsed_secs: self.elapsed_before + self.start.elapsed().as_secs_f64(),
        };
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
        let lbs: Vec<f64> = self.rows.iter().map(|r| r.lower_bound).collect();
        let stalled = self.opts.stall.is_some_and(|(tol, k)| {
            lbs.len() > k && {
                let now = lbs[lbs.len() - 1];
                let then = lbs[lbs.len() - 1 - k];
                ((now - then) / now.abs().max(1.0)).abs() < tol
            }
        });
        if self.rows.len() >= self.opts.iterations {
            Some(StopReason::IterationLimit)
        } else if self
            .opts
            .time_limit
            .is_some_and(|l| self.start.elapsed() >= l)
        {
            Some(StopReason::TimeLimit)
        } else if stalled {
            Some(StopReason::Stall)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mean_ci95;

    #[test]
    fn mean_and_interval() {
        let (m, ci) = mean_ci95(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((ci - 1.96 * (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_ci95(&[5.0]), (5.0, 0.0));
    }
}
