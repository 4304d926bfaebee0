//! Two instrumented solvers: [`Capture`] keeps the bound changes a model
//! makes (and solves nothing); [`Recording`] wraps HiGHS and logs every call
//! upstream's training makes, with what each solve returned.

use std::sync::{Arc, Mutex};

use cobre_solver::{
    ActiveSolver, Basis, HighsProfile, RowBatch, SolutionView, SolverError, SolverInterface,
    SolverStatistics, StageTemplate,
};

/// One `set_col_bounds` / `set_row_bounds` call, values as bit patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Column bounds.
    Cols(Vec<usize>, Vec<u64>, Vec<u64>),
    /// Row bounds.
    Rows(Vec<usize>, Vec<u64>, Vec<u64>),
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Keeps the bound calls; solves return a zero objective.
#[derive(Default)]
pub struct Capture {
    pub calls: Vec<Bound>,
    empty: Vec<f64>,
}

impl SolverInterface for Capture {
    type Profile = HighsProfile;

    fn apply_profile(&mut self, _profile: &HighsProfile) {}

    fn load_model(&mut self, _template: &StageTemplate) {}

    fn add_rows(&mut self, _rows: &RowBatch) {}

    fn set_row_bounds(&mut self, indices: &[usize], lower: &[f64], upper: &[f64]) {
        self.calls
            .push(Bound::Rows(indices.to_vec(), bits(lower), bits(upper)));
    }

    fn set_col_bounds(&mut self, indices: &[usize], lower: &[f64], upper: &[f64]) {
        self.calls
            .push(Bound::Cols(indices.to_vec(), bits(lower), bits(upper)));
    }

    fn solve(&mut self, _basis: Option<&Basis>) -> Result<SolutionView<'_>, SolverError> {
        Ok(SolutionView {
            objective: 0.0,
            primal: &self.empty,
            dual: &self.empty,
            reduced_costs: &self.empty,
            iterations: 0,
            solve_time_seconds: 0.0,
        })
    }

    fn get_basis(&mut self, _out: &mut Basis) {}

    fn statistics(&self) -> SolverStatistics {
        SolverStatistics::default()
    }

    fn statistics_into(&self, out: &mut SolverStatistics) {
        out.copy_from(&SolverStatistics::default());
    }

    fn name(&self) -> &'static str {
        "capture"
    }

    fn solver_name_version(&self) -> String {
        "capture".into()
    }
}

/// What a solve returned.
#[derive(Clone, Debug)]
pub struct Solved {
    pub objective: f64,
    pub primal: Vec<f64>,
    pub reduced_costs: Vec<f64>,
}

/// One call upstream made on a solver.
#[derive(Clone, Debug)]
pub enum Event {
    Profile(HighsProfile),
    Load(Box<StageTemplate>),
    AddRows(RowBatch),
    Bound(Bound),
    Solve(Option<Solved>),
}

/// The calls of every solver, tagged by the solver's id.
pub type Log = Arc<Mutex<Vec<(usize, Event)>>>;

/// HiGHS, logging every call into a shared log.
pub struct Recording {
    id: usize,
    inner: ActiveSolver,
    log: Log,
}

impl Recording {
    pub fn new(id: usize, log: &Log) -> Result<Self, SolverError> {
        Ok(Self {
            id,
            inner: ActiveSolver::new()?,
            log: Arc::clone(log),
        })
    }

    fn push(log: &Log, id: usize, event: Event) {
        log.lock()
            .expect("the log is not poisoned")
            .push((id, event));
    }
}

impl SolverInterface for Recording {
    type Profile = HighsProfile;

    fn apply_profile(&mut self, profile: &HighsProfile) {
        Self::push(&self.log, self.id, Event::Profile(*profile));
        self.inner.apply_profile(profile);
    }

    fn load_model(&mut self, template: &StageTemplate) {
        Self::push(&self.log, self.id, Event::Load(Box::new(template.clone())));
        self.inner.load_model(template);
    }

    fn add_rows(&mut self, rows: &RowBatch) {
        Self::push(&self.log, self.id, Event::AddRows(rows.clone()));
        self.inner.add_rows(rows);
    }

    fn set_row_bounds(&mut self, indices: &[usize], lower: &[f64], upper: &[f64]) {
        let b = Bound::Rows(indices.to_vec(), bits(lower), bits(upper));
        Self::push(&self.log, self.id, Event::Bound(b));
        self.inner.set_row_bounds(indices, lower, upper);
    }

    fn set_col_bounds(&mut self, indices: &[usize], lower: &[f64], upper: &[f64]) {
        let b = Bound::Cols(indices.to_vec(), bits(lower), bits(upper));
        Self::push(&self.log, self.id, Event::Bound(b));
        self.inner.set_col_bounds(indices, lower, upper);
    }

    fn solve(&mut self, basis: Option<&Basis>) -> Result<SolutionView<'_>, SolverError> {
        let result = self.inner.solve(basis);
        let solved = result.as_ref().ok().map(|v| Solved {
            objective: v.objective,
            primal: v.primal.to_vec(),
            reduced_costs: v.reduced_costs.to_vec(),
        });
        Self::push(&self.log, self.id, Event::Solve(solved));
        result
    }

    fn get_basis(&mut self, out: &mut Basis) {
        self.inner.get_basis(out);
    }

    fn statistics(&self) -> SolverStatistics {
        self.inner.statistics()
    }

    fn statistics_into(&self, out: &mut SolverStatistics) {
        self.inner.statistics_into(out);
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn solver_name_version(&self) -> String {
        self.inner.solver_name_version()
    }

    fn record_reconstruction_stats(&mut self) {
        self.inner.record_reconstruction_stats();
    }

    fn reset_solver_state(&mut self) {
        self.inner.reset_solver_state();
    }
}

/// The calls between two solves, and the solve that ends them.
#[derive(Debug, Default)]
pub struct Group {
    pub loads: Vec<StageTemplate>,
    pub add_rows: Vec<RowBatch>,
    pub bounds: Vec<Bound>,
    pub profiles: Vec<HighsProfile>,
    pub solved: Option<Solved>,
}

/// Split one solver's calls into solve groups (calls after the last solve
/// are dropped).
pub fn groups(events: impl IntoIterator<Item = Event>) -> Vec<Group> {
    let mut out = Vec::new();
    let mut current = Group::default();
    for event in events {
        match event {
            Event::Profile(p) => current.profiles.push(p),
            Event::Load(t) => current.loads.push(*t),
            Event::AddRows(r) => current.add_rows.push(r),
            Event::Bound(b) => current.bounds.push(b),
            Event::Solve(s) => {
                current.solved = s;
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}
