//! One solver workspace per worker thread: a HiGHS instance (upstream
//! `cobre-solver`) plus the scratch to load any stage into it.
//!
//! Loading stage `t` copies its structural LP out of the stage-LP cache and
//! builds the rows of its active cuts straight from the cut pool, then hands
//! both to HiGHS (`load_model`, `add_rows`). A load always starts from a
//! clean HiGHS state, and a solve sequence after it depends only on the LP,
//! the offered basis and the solves since the load — that is what keeps
//! results independent of which thread did what.
//!
//! Every failed solve goes through a fixed recovery ladder (see [`Rung`]);
//! only when every rung fails does the solve fail, naming the stage, the
//! incoming state and the inflows.
#![forbid(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use cobre_solver::{
    Basis, HighsProfile, HighsSolver, PresolveKind, RowBatch, SolverError, SolverInterface,
    StageTemplate,
};

use crate::cache::StageCache;
use crate::engine::EngineComm;
use crate::lp::{empty_batch, push_cut, Shape};
use crate::pool::CutPool;
use crate::selection::Selector;

/// The rungs of the recovery ladder, tried in this order on every failed
/// solve (so recovery is as deterministic as the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rung {
    /// The solve as asked for (HiGHS's own retries included).
    Solve,
    /// A fresh HiGHS instance, the stage reloaded from the cache, a cold solve.
    Reload,
    /// As `Reload`, with presolve, Curtis–Reid scaling, steepest-edge
    /// pricing and dual cost perturbation.
    Presolve,
    /// As `Reload`, with equilibration scaling, Dantzig pricing and
    /// tolerances loosened to 1e-7.
    Safe,
}

/// Every rung, in order.
pub const LADDER: [Rung; 4] = [Rung::Solve, Rung::Reload, Rung::Presolve, Rung::Safe];

impl Rung {
    /// Name for reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Solve => "solve",
            Self::Reload => "reload",
            Self::Presolve => "reload_presolve",
            Self::Safe => "reload_safe",
        }
    }

    fn profile(self) -> HighsProfile {
        let base = engine_profile();
        match self {
            Self::Solve | Self::Reload => base,
            Self::Presolve => HighsProfile {
                presolve: PresolveKind::On,
                simplex_scale_strategy: 2,
                simplex_dual_edge_weight_strategy: 2,
                cost_perturbation: 1.0,
                ..base
            },
            Self::Safe => HighsProfile {
                primal_feasibility_tolerance: 1e-7,
                dual_feasibility_tolerance: 1e-7,
                simplex_scale_strategy: 4,
                simplex_dual_edge_weight_strategy: 0,
                ..base
            },
        }
    }
}

/// The HiGHS options of every normal solve: upstream Cobre's tuned defaults
/// without presolve (stage LPs are small and mostly warm-started). Measured
/// (`benches/solver_choice.rs`, benches/README.md): these defaults make warm
/// and basis-started solves fastest and a training iteration ~10 % faster
/// than HiGHS's own dual cost perturbation, which only wins on cold solves —
/// rare here, since every stage load offers the group's cached basis.
#[must_use]
pub fn engine_profile() -> HighsProfile {
    HighsProfile {
        presolve: PresolveKind::Off,
        ..HighsProfile::default()
    }
}

/// A solve failure injected for tests of the recovery ladder: at `stage`
/// (1-based) during `iteration` (1-based), the first `rungs` rungs of every
/// solve report failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Stage, 1-based.
    pub stage: usize,
    /// Iteration, 1-based.
    pub iteration: usize,
    /// Rungs that fail.
    pub rungs: usize,
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// `stage=S,iteration=I,rungs=R`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut f = Self {
            stage: 0,
            iteration: 0,
            rungs: 1,
        };
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not key=value"))?;
            let v: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("'{v}' is not a number"))?;
            match k.trim() {
                "stage" => f.stage = v,
                "iteration" => f.iteration = v,
                "rungs" => f.rungs = v,
                other => return Err(format!("unknown key '{other}' (stage, iteration, rungs)")),
            }
        }
        Ok(f)
    }
}

/// Counters of one workspace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkStats {
    /// Stage loads.
    pub loads: u64,
    /// Time spent loading.
    pub load_time: Duration,
    /// LP solves.
    pub solves: u64,
    /// Time spent solving.
    pub solve_time: Duration,
    /// Solves offered a cached basis.
    pub warm_starts: u64,
    /// Simplex iterations.
    pub iterations: u64,
    /// Solves that succeeded on each rung after the first.
    pub recovered: [u64; LADDER.len()],
}

impl WorkStats {
    /// Add `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        self.loads += other.loads;
        self.load_time += other.load_time;
        self.solves += other.solves;
        self.solve_time += other.solve_time;
        self.warm_starts += other.warm_starts;
        self.iterations += other.iterations;
        for (a, b) in self.recovered.iter_mut().zip(other.recovered) {
            *a += b;
        }
    }
}

/// A solve that failed on every rung.
#[derive(Debug, thiserror::Error)]
#[error(
    "stage {stage} LP could not be solved (last error: {error}) for incoming volumes {state:?} \
     and inflows {inflows:?}, after every recovery ({rungs})"
)]
pub struct SolveFailure {
    /// Stage, 1-based.
    pub stage: usize,
    /// The last solver error.
    pub error: String,
    /// Incoming volumes.
    pub state: Vec<f64>,
    /// Inflows.
    pub inflows: Vec<f64>,
    /// Rungs tried.
    pub rungs: String,
}

/// What a workspace loads stages from.
pub struct Source<'a, C: EngineComm> {
    /// Structural LPs.
    pub cache: &'a StageCache<C>,
    /// Cut records.
    pub pool: &'a CutPool<C>,
    /// Active cuts per lane.
    pub selector: &'a Selector,
}

impl<C: EngineComm> Clone for Source<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C: EngineComm> Copy for Source<'_, C> {}

/// A solved stage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Solved {
    /// Objective: stage cost plus future cost `θ`.
    pub objective: f64,
    /// Stage cost alone.
    pub stage_cost: f64,
    /// Penalised slack used (overflow volume plus unserved energy).
    pub slack: f64,
}

/// A HiGHS instance and the scratch to load and solve any stage.
pub struct Workspace {
    solver: HighsSolver,
    shape: Shape,
    template: StageTemplate,
    cuts: RowBatch,
    slots: Vec<u32>,
    stage: usize,
    rows_index: Vec<usize>,
    rhs: Vec<f64>,
    primal: Vec<f64>,
    duals: Vec<f64>,
    basis: Basis,
    stats: WorkStats,
    fault: Option<Fault>,
    iteration: usize,
}

fn internal(message: String) -> SolverError {
    SolverError::InternalError {
        message,
        error_code: None,
    }
}

fn new_solver(profile: &HighsProfile) -> Result<HighsSolver, SolverError> {
    let mut s = HighsSolver::new()?;
    s.apply_profile(profile);
    Ok(s)
}

impl Workspace {
    /// A workspace for LPs of `shape`.
    ///
    /// # Errors
    /// When HiGHS cannot start.
    pub fn new(shape: &Shape, fault: Option<Fault>) -> Result<Self, SolverError> {
        Ok(Self {
            solver: new_solver(&engine_profile())?,
            shape: shape.clone(),
            template: StageTemplate::empty(),
            cuts: empty_batch(),
            slots: Vec::new(),
            stage: usize::MAX,
            rows_index: (0..shape.hydros).collect(),
            rhs: vec![0.0; shape.hydros],
            primal: Vec::new(),
            duals: Vec::new(),
            basis: Basis::new(0, 0),
            stats: WorkStats::default(),
            fault,
            iteration: 0,
        })
    }

    /// Tell the workspace which iteration (1-based) its solves belong to.
    pub fn set_iteration(&mut self, iteration: usize) {
        self.iteration = iteration;
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> &WorkStats {
        &self.stats
    }

    /// Bytes of scratch this workspace holds outside HiGHS.
    #[must_use]
    pub fn scratch_bytes(&self) -> usize {
        let t = &self.template;
        let f = std::mem::size_of::<f64>();
        (t.values.capacity()
            + t.col_lower.capacity()
            + t.col_upper.capacity()
            + t.objective.capacity()
            + t.row_lower.capacity()
            + t.row_upper.capacity()
            + self.cuts.values.capacity()
            + self.cuts.row_lower.capacity()
            + self.cuts.row_upper.capacity()
            + self.primal.capacity()
            + self.duals.capacity())
            * f
            + (t.col_starts.capacity()
                + t.row_indices.capacity()
                + self.cuts.col_indices.capacity()
                + self.cuts.row_starts.capacity()
                + self.slots.capacity())
                * 4
            + self.basis.col_status.capacity()
            + self.basis.row_status.capacity()
    }

    /// Slots of the cut rows loaded, in row order.
    #[must_use]
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// Load stage `t` (0-based): its structural LP from the cache and its
    /// active cuts from the pool. Always leaves HiGHS in a clean state.
    ///
    /// # Errors
    /// When HiGHS rejects the model even in a fresh instance.
    pub fn load<C: EngineComm>(&mut self, src: Source<'_, C>, t: usize) -> Result<(), SolverError> {
        let start = Instant::now();
        src.cache.fill(t, &mut self.template);
        self.cuts.clear();
        self.slots.clear();
        if t < src.pool.lanes() {
            for &slot in src.selector.active(t) {
                let cut = src.pool.cut(t, slot as usize);
                push_cut(&mut self.cuts, &self.shape, cut.intercept, cut.coefficients);
                self.slots.push(slot);
            }
        }
        self.stage = t;
        // A model HiGHS rejects is tried once more in a fresh instance.
        let result = self
            .pass_to_solver(&engine_profile(), false)
            .or_else(|_| self.pass_to_solver(&engine_profile(), true));
        self.stats.loads += 1;
        self.stats.load_time += start.elapsed();
        result
    }

    /// Hand the loaded stage to HiGHS, in a fresh instance if `fresh`;
    /// HiGHS failures (reported by cobre-solver as panics) become errors.
    fn pass_to_solver(&mut self, profile: &HighsProfile, fresh: bool) -> Result<(), SolverError> {
        if fresh {
            self.solver = new_solver(profile)?;
        } else {
            self.solver.apply_profile(profile);
        }
        let (solver, template, cuts) = (&mut self.solver, &self.template, &self.cuts);
        catch_unwind(AssertUnwindSafe(|| {
            solver.load_model(template);
            if cuts.num_rows > 0 {
                solver.add_rows(cuts);
            }
        }))
        .map_err(|_| {
            internal(format!(
                "HiGHS rejected stage {} of the cache",
                self.stage + 1
            ))
        })
    }

    fn set_rhs(&mut self, state: &[f64], inflows: &[f64]) {
        for h in 0..self.shape.hydros {
            self.rhs[h] = state[h] + inflows[h];
        }
        self.solver
            .set_row_bounds(&self.rows_index, &self.rhs, &self.rhs);
    }

    fn injected(&self, rung: usize) -> bool {
        self.fault.is_some_and(|f| {
            f.stage == self.stage + 1 && f.iteration == self.iteration && rung < f.rungs
        })
    }

    /// Solve the loaded stage with incoming volumes `state` and `inflows`,
    /// from `warm` if given, else from the state of the last solve (or cold
    /// right after a load).
    ///
    /// # Errors
    /// [`SolveFailure`] when every rung of the ladder failed.
    pub fn solve(
        &mut self,
        state: &[f64],
        inflows: &[f64],
        warm: Option<&Basis>,
    ) -> Result<Solved, SolveFailure> {
        let start = Instant::now();
        self.set_rhs(state, inflows);
        if warm.is_some() {
            self.stats.warm_starts += 1;
        }
        let mut last = String::new();
        let mut tried = Vec::new();
        for (i, rung) in LADDER.into_iter().enumerate() {
            tried.push(rung.as_str());
            if rung != Rung::Solve {
                if let Err(e) = self.pass_to_solver(&rung.profile(), true) {
                    last = format!("{e:?}");
                    continue;
                }
                self.set_rhs(state, inflows);
            }
            let basis = if rung == Rung::Solve { warm } else { None };
            let outcome = if self.injected(i) {
                Err(SolverError::NumericalDifficulty {
                    message: "failure injected by --inject-solver-fault".into(),
                })
            } else {
                self.solver.solve(basis).map(|v| {
                    self.primal.clear();
                    self.primal.extend_from_slice(v.primal);
                    self.duals.clear();
                    self.duals.extend_from_slice(&v.dual[..self.shape.hydros]);
                    (v.objective, v.iterations)
                })
            };
            match outcome {
                Ok((objective, iterations)) => {
                    self.stats.solves += 1;
                    self.stats.iterations += iterations;
                    self.stats.recovered[i] += u64::from(i > 0);
                    self.stats.solve_time += start.elapsed();
                    let theta = self.primal[self.shape.theta];
                    return Ok(Solved {
                        objective,
                        stage_cost: objective - theta,
                        slack: self.slack(),
                    });
                }
                Err(e) => last = format!("{e:?}"),
            }
        }
        self.stats.solve_time += start.elapsed();
        Err(SolveFailure {
            stage: self.stage + 1,
            error: last,
            state: state.to_vec(),
            inflows: inflows.to_vec(),
            rungs: tried.join(", "),
        })
    }

    fn slack(&self) -> f64 {
        self.shape
            .overflow
            .iter()
            .flatten()
            .chain(self.shape.unserved.iter())
            .map(|&c| self.primal[c])
            .sum()
    }

    /// End volumes of the last solve.
    #[must_use]
    pub fn end_volumes(&self) -> &[f64] {
        &self.primal[..self.shape.hydros]
    }

    /// Duals of the water balances of the last solve: ∂objective/∂v_prev.
    #[must_use]
    pub fn state_duals(&self) -> &[f64] {
        &self.duals
    }

    /// The current basis, for the basis cache.
    pub fn capture(&mut self, entry: &mut crate::basis::Entry) {
        self.solver.get_basis(&mut self.basis);
        entry.capture(&self.basis, self.shape.rows, &self.slots);
    }
}
