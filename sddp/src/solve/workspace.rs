//! One solver workspace per worker thread: a HiGHS instance (upstream
//! `cobre-solver`) plus the scratch to load any stage into it.
//!
//! A stage is *frozen* once per pass: its structural LP copied out of the
//! stage-LP cache and the rows of its active cuts (built straight from the
//! cut pool, ascending slot) merged into one column-major model. Every
//! trajectory then loads that model into HiGHS (`load_model`, and
//! `add_rows` for the cuts of the running iteration in the backward pass):
//! a solve sequence after a load depends only on the model, the offered
//! basis and the solves since the load, whoever runs it.
//!
//! Every failed solve goes through a fixed recovery ladder (see [`Rung`]);
//! only when every rung fails does the solve fail, saying what it saw.
#![forbid(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use cobre_solver::{
    freeze_rows_into_template, Basis, FreezeScratch, HighsProfile, HighsSolver, PresolveKind,
    RowBatch, SolverError, SolverInterface, StageTemplate,
};

use super::basis::Entry;
use crate::comm::EngineComm;
use crate::model::CutLayout;
use crate::shared::cache::StageCache;
use crate::shared::pool::{CutPool, CutRef};

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

    fn profile(self, base: HighsProfile) -> HighsProfile {
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
    /// What was counted since `before` (an earlier reading of the same
    /// counters).
    #[must_use]
    pub fn since(&self, before: &Self) -> Self {
        let mut recovered = self.recovered;
        for (a, b) in recovered.iter_mut().zip(before.recovered) {
            *a = a.saturating_sub(b);
        }
        Self {
            loads: self.loads.saturating_sub(before.loads),
            load_time: self.load_time.saturating_sub(before.load_time),
            solves: self.solves.saturating_sub(before.solves),
            solve_time: self.solve_time.saturating_sub(before.solve_time),
            warm_starts: self.warm_starts.saturating_sub(before.warm_starts),
            iterations: self.iterations.saturating_sub(before.iterations),
            recovered,
        }
    }

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
    "stage {stage} LP could not be solved (last error: {error}) for {what}, after every recovery \
     ({rungs})"
)]
pub struct SolveFailure {
    /// Stage, 1-based.
    pub stage: usize,
    /// The last solver error.
    pub error: String,
    /// What the solve saw (incoming state, noise), from the model.
    pub what: String,
    /// Rungs tried.
    pub rungs: String,
}

/// Which cuts a frozen stage holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutsOf {
    /// Every active cut of the lane.
    Active,
    /// The active cuts of iterations before this one (1-based).
    Before(usize),
}

/// Where a workspace freezes stages from, and how cut rows look.
pub struct Frozen<'a, C: EngineComm> {
    /// Structural LPs.
    pub cache: &'a StageCache<C>,
    /// Cut records and active flags.
    pub pool: &'a CutPool<C>,
    /// The cut layout of the stage's lane (`None`: the stage has no cuts).
    pub layout: Option<&'a CutLayout>,
    /// The future-cost column.
    pub theta: usize,
}

impl<C: EngineComm> Clone for Frozen<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C: EngineComm> Copy for Frozen<'_, C> {}

/// A solved stage, in the LP's (scaled) cost units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Solved {
    /// Objective: stage cost plus discounted future cost.
    pub objective: f64,
    /// Simplex iterations.
    pub iterations: u64,
}

/// A batch of no rows.
#[must_use]
pub fn empty_batch() -> RowBatch {
    RowBatch {
        num_rows: 0,
        row_starts: Vec::new(),
        col_indices: Vec::new(),
        values: Vec::new(),
        row_lower: Vec::new(),
        row_upper: Vec::new(),
    }
}

/// Append the row of `cut` (`d_θ θ − Σ π_k d_k x_k ≥ α`, in the LP's
/// scaled columns) to `batch`.
pub fn push_cut_row(
    batch: &mut RowBatch,
    cut: &CutRef<'_>,
    layout: &CutLayout,
    theta: usize,
    col_scale: &[f64],
) {
    let scale = |j: usize| col_scale.get(j).copied().unwrap_or(1.0);
    if batch.row_starts.is_empty() {
        batch.row_starts.push(0);
    }
    for &(k, col) in &layout.render {
        batch.col_indices.push(col as i32);
        batch.values.push(-cut.coefficients[k] * scale(col));
    }
    batch.col_indices.push(theta as i32);
    batch.values.push(scale(theta));
    batch.row_starts.push(batch.col_indices.len() as i32);
    batch.row_lower.push(cut.intercept);
    batch.row_upper.push(f64::INFINITY);
    batch.num_rows += 1;
}

/// A HiGHS instance and the scratch to load and solve any stage.
pub struct Workspace {
    solver: HighsSolver,
    profile: HighsProfile,
    base: StageTemplate,
    frozen: StageTemplate,
    frozen_key: Option<(usize, CutsOf, u64)>,
    cuts: RowBatch,
    delta: RowBatch,
    freeze: FreezeScratch,
    slots: Vec<u32>,
    frozen_slots: usize,
    stage: usize,
    warm: Basis,
    basis: Basis,
    lookup: Vec<u32>,
    primal: Vec<f64>,
    reduced: Vec<f64>,
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
    /// A workspace solving with `profile` until told otherwise.
    ///
    /// # Errors
    /// When HiGHS cannot start.
    pub fn new(profile: HighsProfile, fault: Option<Fault>) -> Result<Self, SolverError> {
        Ok(Self {
            solver: new_solver(&profile)?,
            profile,
            base: StageTemplate::empty(),
            frozen: StageTemplate::empty(),
            frozen_key: None,
            cuts: empty_batch(),
            delta: empty_batch(),
            freeze: FreezeScratch::new(),
            slots: Vec::new(),
            frozen_slots: 0,
            stage: usize::MAX,
            warm: Basis::new(0, 0),
            basis: Basis::new(0, 0),
            lookup: Vec::new(),
            primal: Vec::new(),
            reduced: Vec::new(),
            stats: WorkStats::default(),
            fault,
            iteration: 0,
        })
    }

    /// Tell the workspace which iteration (1-based) its solves belong to.
    pub fn set_iteration(&mut self, iteration: usize) {
        self.iteration = iteration;
    }

    /// Solve with `profile` from now on.
    pub fn set_profile(&mut self, profile: HighsProfile) {
        if profile != self.profile {
            self.profile = profile;
            self.solver.apply_profile(&profile);
        }
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> &WorkStats {
        &self.stats
    }

    /// Bytes of scratch this workspace holds outside HiGHS.
    #[must_use]
    pub fn scratch_bytes(&self) -> usize {
        let t = |t: &StageTemplate| {
            (t.values.capacity()
                + t.col_lower.capacity()
                + t.col_upper.capacity()
                + t.objective.capacity()
                + t.row_lower.capacity()
                + t.row_upper.capacity()
                + t.col_scale.capacity()
                + t.row_scale.capacity())
                * 8
                + (t.col_starts.capacity() + t.row_indices.capacity()) * 4
        };
        let b = |b: &RowBatch| {
            (b.values.capacity() + b.row_lower.capacity() + b.row_upper.capacity()) * 8
                + (b.col_indices.capacity() + b.row_starts.capacity()) * 4
        };
        t(&self.base)
            + t(&self.frozen)
            + b(&self.cuts)
            + b(&self.delta)
            + (self.primal.capacity() + self.reduced.capacity()) * 8
            + (self.slots.capacity() + self.lookup.capacity()) * 4
            + self.basis.col_status.capacity()
            + self.basis.row_status.capacity()
            + self.warm.col_status.capacity()
            + self.warm.row_status.capacity()
    }

    /// Freeze stage `t` with the cuts `which` of its lane: its structural
    /// LP and the cut rows merged into one model. `key` names the state of
    /// the pool (a freeze with the same stage, cuts and key is reused).
    pub fn freeze<C: EngineComm>(&mut self, src: Frozen<'_, C>, t: usize, which: CutsOf, key: u64) {
        self.delta.clear();
        self.stage = t;
        if self.frozen_key == Some((t, which, key)) {
            self.slots.truncate(self.frozen_slots);
            return;
        }
        let start = Instant::now();
        src.cache.fill(t, &mut self.base);
        self.cuts.clear();
        self.slots.clear();
        if let Some(layout) = src.layout {
            for slot in src.pool.active(t) {
                let cut = src.pool.cut(t, slot);
                if let CutsOf::Before(k) = which {
                    if cut.iteration >= k {
                        continue;
                    }
                }
                push_cut_row(
                    &mut self.cuts,
                    &cut,
                    layout,
                    src.theta,
                    &self.base.col_scale,
                );
                self.slots.push(slot as u32);
            }
        }
        if self.cuts.row_starts.is_empty() {
            self.cuts.row_starts.push(0);
        }
        freeze_rows_into_template(&self.base, &self.cuts, &mut self.frozen, &mut self.freeze);
        self.frozen_slots = self.slots.len();
        self.frozen_key = Some((t, which, key));
        self.stats.load_time += start.elapsed();
    }

    /// Add to the frozen stage the cuts of iteration `k` of its lane (the
    /// backward pass's new cuts, all active), as rows after the frozen ones.
    pub fn add_iteration_cuts<C: EngineComm>(&mut self, src: Frozen<'_, C>, k: usize) {
        self.delta.clear();
        self.slots.truncate(self.frozen_slots);
        let Some(layout) = src.layout else {
            return;
        };
        for slot in src.pool.active(self.stage) {
            let cut = src.pool.cut(self.stage, slot);
            if cut.iteration == k {
                push_cut_row(
                    &mut self.delta,
                    &cut,
                    layout,
                    src.theta,
                    &self.base.col_scale,
                );
                self.slots.push(slot as u32);
            }
        }
    }

    /// Slots of the cut rows of the next load, in row order.
    #[must_use]
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// The column scale of the frozen stage (empty when unscaled).
    #[must_use]
    pub fn col_scale(&self) -> &[f64] {
        &self.base.col_scale
    }

    /// Load the frozen stage (and the added cuts) into HiGHS.
    ///
    /// # Errors
    /// When HiGHS rejects the model even in a fresh instance.
    pub fn load(&mut self) -> Result<(), SolverError> {
        let start = Instant::now();
        // A model HiGHS rejects is tried once more in a fresh instance.
        let result = self
            .pass_to_solver(self.profile, false)
            .or_else(|_| self.pass_to_solver(self.profile, true));
        self.stats.loads += 1;
        self.stats.load_time += start.elapsed();
        result
    }

    /// Hand the frozen stage to HiGHS, in a fresh instance if `fresh`;
    /// HiGHS failures (reported by cobre-solver as panics) become errors.
    fn pass_to_solver(&mut self, profile: HighsProfile, fresh: bool) -> Result<(), SolverError> {
        if fresh {
            self.solver = new_solver(&profile)?;
        } else {
            self.solver.apply_profile(&profile);
        }
        let (solver, frozen, delta) = (&mut self.solver, &self.frozen, &self.delta);
        catch_unwind(AssertUnwindSafe(|| {
            solver.load_model(frozen);
            if delta.num_rows > 0 {
                solver.add_rows(delta);
            }
        }))
        .map_err(|_| {
            internal(format!(
                "HiGHS rejected stage {} of the cache",
                self.stage + 1
            ))
        })
    }

    fn injected(&self, rung: usize) -> bool {
        self.fault.is_some_and(|f| {
            f.stage == self.stage + 1 && f.iteration == self.iteration && rung < f.rungs
        })
    }

    /// Solve the loaded stage after `set` has set its bounds, from `warm`
    /// (restored for the loaded cut rows) if given, else from the state of
    /// the last solve (or cold right after a load). A failure climbs the
    /// recovery ladder: every later rung reloads the stage into a fresh
    /// instance and calls `set` again. `what` describes the solve for the
    /// failure message.
    ///
    /// # Errors
    /// [`SolveFailure`] when every rung of the ladder failed.
    pub fn solve(
        &mut self,
        warm: Option<&Entry>,
        set: &mut dyn FnMut(&mut HighsSolver),
        what: &dyn Fn() -> String,
    ) -> Result<Solved, SolveFailure> {
        let start = Instant::now();
        set(&mut self.solver);
        let offered = warm.is_some_and(|e| {
            e.restore(
                self.base.num_cols,
                self.base.num_rows,
                &self.slots,
                &mut self.lookup,
                &mut self.warm,
            )
        });
        if offered {
            self.stats.warm_starts += 1;
        }
        let mut last = String::new();
        let mut tried = Vec::new();
        for (i, rung) in LADDER.into_iter().enumerate() {
            tried.push(rung.as_str());
            if rung != Rung::Solve {
                if let Err(e) = self.pass_to_solver(rung.profile(self.profile), true) {
                    last = format!("{e:?}");
                    continue;
                }
                set(&mut self.solver);
            }
            let basis = (rung == Rung::Solve && offered).then_some(&self.warm);
            let outcome = if self.injected(i) {
                Err(SolverError::NumericalDifficulty {
                    message: "failure injected by --inject-solver-fault".into(),
                })
            } else {
                let scale = &self.base.col_scale;
                let (primal, reduced) = (&mut self.primal, &mut self.reduced);
                self.solver.solve(basis).map(|v| {
                    primal.clear();
                    if scale.is_empty() {
                        primal.extend_from_slice(v.primal);
                    } else {
                        primal.extend(v.primal.iter().zip(scale).map(|(x, d)| d * x));
                    }
                    reduced.clear();
                    reduced.extend_from_slice(v.reduced_costs);
                    Solved {
                        objective: v.objective,
                        iterations: v.iterations,
                    }
                })
            };
            if rung != Rung::Solve && outcome.is_ok() {
                // Later solves of this load go on with the normal options.
                self.solver.apply_profile(&self.profile);
            }
            match outcome {
                Ok(solved) => {
                    self.stats.solves += 1;
                    self.stats.iterations += solved.iterations;
                    self.stats.recovered[i] += u64::from(i > 0);
                    self.stats.solve_time += start.elapsed();
                    return Ok(solved);
                }
                Err(e) => last = format!("{e:?}"),
            }
        }
        self.stats.solve_time += start.elapsed();
        Err(SolveFailure {
            stage: self.stage + 1,
            error: last,
            what: what(),
            rungs: tried.join(", "),
        })
    }

    /// The unscaled primal solution of the last solve.
    #[must_use]
    pub fn primal(&self) -> &[f64] {
        &self.primal
    }

    /// The reduced costs of the last solve, in the LP's scaled columns.
    #[must_use]
    pub fn reduced_costs(&self) -> &[f64] {
        &self.reduced
    }

    /// Store the current basis into `entry`.
    pub fn capture(&mut self, entry: &mut Entry) {
        self.solver.get_basis(&mut self.basis);
        entry.capture(&self.basis, self.base.num_rows, &self.slots);
    }
}
