//! The LP of one stage, kept alive across solves.
//!
//! Columns: end volume `v[h]`, turbined `q[h]`, spill `s[h]`, thermal `g[j]`,
//! deficit `d[l]`, future cost `θ` (fixed to 0 in the last stage).
//! Rows: one water balance per hydro,
//! `v[h] + q[h] + s[h] − Σ_{u→h}(q[u] + s[u]) = v_prev[h] + a[h]`
//! (its dual is ∂cost/∂v_prev[h]), the demand balance, then one row per cut
//! `θ − β·v ≥ α`.
#![forbid(unsafe_code)]

use crate::case::Case;
use crate::solver::{Algorithm, Lp, LpError, LpStatus, Rows, INF};

/// Why a stage solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// HiGHS failed.
    #[error(transparent)]
    Lp(#[from] LpError),
    /// The stage LP has no optimal solution.
    #[error(
        "stage {stage} LP is {status:?} for incoming volumes {state:?} and inflows {inflows:?}; \
         the case lacks relatively complete recourse (add an unlimited deficit tier, allow spill)"
    )]
    NotOptimal {
        /// Stage (1-based).
        stage: usize,
        /// HiGHS status.
        status: LpStatus,
        /// Incoming volumes.
        state: Vec<f64>,
        /// Inflows.
        inflows: Vec<f64>,
    },
}

/// A solved stage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageSolution {
    /// Objective: stage cost plus future cost `θ`.
    pub objective: f64,
    /// Stage cost alone.
    pub stage_cost: f64,
}

/// One stage's LP and its scratch buffers.
pub struct StageLp {
    lp: Lp,
    stage: usize,
    hydros: usize,
    theta: usize,
    rhs_rows: Vec<i32>,
    rhs: Vec<f64>,
    cols: Vec<f64>,
    duals: Vec<f64>,
    cuts: usize,
    solves: u64,
    recoveries: u64,
    cut_rows: Rows,
}

impl StageLp {
    /// Build the LP of stage `t` (0-based) of `case`.
    ///
    /// # Errors
    /// When HiGHS rejects the model.
    pub fn build(case: &Case, t: usize) -> Result<Self, LpError> {
        let nh = case.hydros.len();
        let (nj, nl) = (case.thermals.len(), case.deficit.len());
        let (v0, q0, s0, g0) = (0, nh, 2 * nh, 3 * nh);
        let d0 = g0 + nj;
        let theta = d0 + nl;
        let n = theta + 1;
        let mut cost = vec![0.0; n];
        let mut lo = vec![0.0; n];
        let mut hi = vec![INF; n];
        for (h, hy) in case.hydros.iter().enumerate() {
            lo[v0 + h] = hy.min_volume;
            hi[v0 + h] = hy.max_volume;
            hi[q0 + h] = hy.max_turbined;
            cost[s0 + h] = hy.spill_cost;
            if !hy.spill_allowed {
                hi[s0 + h] = 0.0;
            }
        }
        for (j, th) in case.thermals.iter().enumerate() {
            cost[g0 + j] = th.cost[t];
            hi[g0 + j] = th.capacity;
        }
        for (l, d) in case.deficit.iter().enumerate() {
            cost[d0 + l] = d.cost;
            hi[d0 + l] = d.max;
        }
        cost[theta] = 1.0;
        if t + 1 == case.stages {
            hi[theta] = 0.0;
        }
        let mut rows = Rows::default();
        for (h, hy) in case.hydros.iter().enumerate() {
            let mut entries = vec![(v0 + h, 1.0), (q0 + h, 1.0), (s0 + h, 1.0)];
            for (u, up) in case.hydros.iter().enumerate() {
                if up.downstream == Some(h) {
                    entries.push((q0 + u, -1.0));
                    entries.push((s0 + u, -1.0));
                }
            }
            let rhs = hy.initial_volume;
            rows.push(rhs, rhs, entries);
        }
        let demand = case.demand[t];
        let supply = case
            .hydros
            .iter()
            .enumerate()
            .map(|(h, hy)| (q0 + h, hy.productivity))
            .chain((0..nj).map(|j| (g0 + j, 1.0)))
            .chain((0..nl).map(|l| (d0 + l, 1.0)));
        rows.push(demand, demand, supply);
        Ok(Self {
            lp: Lp::new(&cost, &lo, &hi, &rows)?,
            stage: t,
            hydros: nh,
            theta,
            rhs_rows: (0..nh as i32).collect(),
            rhs: vec![0.0; nh],
            cols: Vec::new(),
            duals: Vec::new(),
            cuts: 0,
            solves: 0,
            recoveries: 0,
            cut_rows: Rows::default(),
        })
    }

    /// Forget the basis: the next solve starts cold.
    ///
    /// # Errors
    /// From HiGHS.
    pub fn cold_start(&mut self) -> Result<(), LpError> {
        self.lp.cold_start()
    }

    /// Solve with incoming volumes `state` and `inflows`, warm from the
    /// current basis.
    ///
    /// # Errors
    /// When the LP is not solved to optimality.
    pub fn solve(&mut self, state: &[f64], inflows: &[f64]) -> Result<StageSolution, SolveError> {
        for h in 0..self.hydros {
            self.rhs[h] = state[h] + inflows[h];
        }
        self.lp
            .set_row_bounds(&self.rhs_rows, &self.rhs, &self.rhs)?;
        let mut status = self.lp.solve()?;
        self.solves += 1;
        if status != LpStatus::Optimal {
            status = self.recover()?;
        }
        if status != LpStatus::Optimal {
            return Err(SolveError::NotOptimal {
                stage: self.stage + 1,
                status,
                state: state.to_vec(),
                inflows: inflows.to_vec(),
            });
        }
        self.lp.solution(&mut self.cols, &mut self.duals);
        let objective = self.lp.objective();
        Ok(StageSolution {
            objective,
            stage_cost: objective - self.cols[self.theta],
        })
    }

    /// After a failed warm solve (numerical trouble), try again from a cold
    /// start with the dual simplex, then the primal simplex, then interior
    /// point. The ladder is a fixed sequence, so results stay deterministic.
    fn recover(&mut self) -> Result<LpStatus, LpError> {
        let mut status = LpStatus::Other(-1);
        for algorithm in [
            Algorithm::DualSimplex,
            Algorithm::PrimalSimplex,
            Algorithm::InteriorPoint,
        ] {
            self.lp.cold_start()?;
            self.lp.set_algorithm(algorithm)?;
            status = self.lp.solve()?;
            self.recoveries += 1;
            if status == LpStatus::Optimal {
                break;
            }
        }
        self.lp.set_algorithm(Algorithm::DualSimplex)?;
        Ok(status)
    }

    /// Solves that needed [`Self::recover`].
    #[must_use]
    pub fn recoveries(&self) -> u64 {
        self.recoveries
    }

    /// End volumes of the last solve.
    #[must_use]
    pub fn end_volumes(&self) -> &[f64] {
        &self.cols[..self.hydros]
    }

    /// Duals of the water balances of the last solve: ∂objective/∂v_prev.
    #[must_use]
    pub fn state_duals(&self) -> &[f64] {
        &self.duals[..self.hydros]
    }

    /// Append cuts `θ ≥ α + β·v`, given as `(α, β)`, in order.
    ///
    /// # Errors
    /// From HiGHS.
    pub fn add_cuts<'a>(
        &mut self,
        cuts: impl IntoIterator<Item = (f64, &'a [f64])>,
    ) -> Result<(), LpError> {
        let rows = &mut self.cut_rows;
        *rows = Rows::default();
        for (alpha, beta) in cuts {
            let entries = std::iter::once((self.theta, 1.0))
                .chain(beta.iter().enumerate().map(|(h, &b)| (h, -b)));
            rows.push(alpha, INF, entries);
        }
        self.cuts += rows.len();
        self.lp.add_rows(rows)
    }

    /// Cuts added so far.
    #[must_use]
    pub fn cut_count(&self) -> usize {
        self.cuts
    }

    /// Solves done so far.
    #[must_use]
    pub fn solves(&self) -> u64 {
        self.solves
    }
}
