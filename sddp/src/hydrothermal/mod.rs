//! The `case.json` front-end: a hydrothermal dispatch case (reservoirs in a
//! cascade, thermal plants, deficit tiers, one demand per stage; inflows
//! listed or lognormal) as a [`Model`]. The state is the reservoirs' volumes;
//! an opening's noise is its inflows.
//!
//! Modules: `case` (the file and its validation), `generate` (synthetic
//! cases), `sampling` (counter-based randomness), `lp` (a stage's LP).
#![forbid(unsafe_code)]

pub mod case;
pub mod generate;
pub mod lp;
pub mod sampling;

use cobre_solver::{HighsProfile, PresolveKind, SolverInterface, StageTemplate};

use std::sync::OnceLock;
use std::time::Duration;

use crate::model::{CutLayout, Model, Phase, RiskMeasure, StageShape};
use crate::options::{CutSelection, StopRules, TrainOptions};
use case::Case;
use lp::{build_stage, Shape};

/// A validated case with its stage LPs, as the trainer sees it.
pub struct HydroThermal<'c> {
    case: &'c Case,
    shape: Shape,
    /// Stage LPs, built when first asked for (a rank builds only those it
    /// publishes into the stage-LP cache).
    stages: Vec<OnceLock<StageTemplate>>,
    layout: CutLayout,
    initial: Vec<f64>,
    seed: u64,
    balance_rows: Vec<usize>,
    incoming_cols: Vec<usize>,
}

/// HiGHS options of every solve: upstream Cobre's defaults without
/// presolve (stage LPs are small and mostly warm-started).
#[must_use]
pub fn engine_profile() -> HighsProfile {
    HighsProfile {
        presolve: PresolveKind::Off,
        ..HighsProfile::default()
    }
}

/// Training options from `case`'s `training` section, with defaults, and
/// its sampling seed.
#[must_use]
pub fn options(case: &Case, threads: usize) -> (TrainOptions, u64) {
    let t = &case.training;
    let opts = TrainOptions {
        iterations: t.iterations.unwrap_or(TrainOptions::DEFAULT_ITERATIONS),
        forward_passes: t
            .forward_passes
            .unwrap_or(TrainOptions::DEFAULT_FORWARD_PASSES),
        stop: StopRules {
            time_limit: t.time_limit_secs.map(Duration::from_secs_f64),
            // "Improved by less than tol over k iterations": compare with
            // the bound k iterations back, a window of k + 1 bounds.
            stall: t
                .stall_tolerance
                .map(|tol| (tol, t.stall_iterations.unwrap_or(5).max(1) + 1)),
            require_all: false,
        },
        threads: threads.max(1),
        replicate: false,
        cut_selection: CutSelection::default(),
        fault: None,
        checkpoint_every: Some(TrainOptions::DEFAULT_CHECKPOINT_EVERY),
        release_eagerly: true,
        keep_checkpoint: true,
    };
    (opts, t.seed.unwrap_or(0))
}

impl<'c> HydroThermal<'c> {
    /// The model of `case`, sampling its forward passes with `seed`.
    #[must_use]
    pub fn new(case: &'c Case, seed: u64) -> Self {
        let shape = Shape::of(case);
        let nh = shape.hydros;
        let stages = (0..case.stages).map(|_| OnceLock::new()).collect();
        let layout = CutLayout {
            state_index: (0..nh).collect(),
            incoming_column: (0..nh).map(|h| shape.incoming(h)).collect(),
            render: (0..nh).map(|h| (h, h)).collect(),
        };
        Self {
            case,
            initial: case.hydros.iter().map(|h| h.initial_volume).collect(),
            balance_rows: (0..nh).collect(),
            incoming_cols: (0..nh).map(|h| shape.incoming(h)).collect(),
            shape,
            stages,
            layout,
            seed,
        }
    }

    /// The case.
    #[must_use]
    pub fn case(&self) -> &'c Case {
        self.case
    }

    /// The column layout of every stage LP.
    #[must_use]
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
}

impl Model for HydroThermal<'_> {
    type Scratch = ();

    fn scratch(&self) -> Self::Scratch {}

    fn name(&self) -> &str {
        &self.case.name
    }

    fn stages(&self) -> usize {
        self.case.stages
    }

    fn state_len(&self) -> usize {
        self.shape.hydros
    }

    fn initial_state(&self) -> &[f64] {
        &self.initial
    }

    fn stage_lp(&self, t: usize) -> &StageTemplate {
        self.stages[t].get_or_init(|| {
            let mut lp = StageTemplate::empty();
            build_stage(self.case, &self.shape, t, &mut lp);
            lp
        })
    }

    fn stage_shape(&self, _t: usize) -> StageShape {
        StageShape {
            cols: self.shape.cols,
            rows: self.shape.rows,
            nonzeros: self.shape.nonzeros,
            n_state: self.shape.hydros,
            col_scaled: false,
            row_scaled: false,
        }
    }

    fn theta_column(&self, _t: usize) -> usize {
        self.shape.theta
    }

    fn cut_layout(&self, _t: usize) -> &CutLayout {
        &self.layout
    }

    fn discount(&self, _t: usize) -> f64 {
        1.0
    }

    fn cumulative_discount(&self, _t: usize) -> f64 {
        1.0
    }

    fn cost_scale(&self) -> f64 {
        1.0
    }

    fn noise_len(&self) -> usize {
        self.shape.hydros
    }

    fn openings(&self, t: usize) -> usize {
        self.case.openings(t)
    }

    fn opening_noise(&self, t: usize, k: usize, out: &mut [f64]) {
        let nh = self.shape.hydros;
        let mut all = vec![0.0; self.case.openings(t) * nh];
        self.case.fill_stage_inflows(t, &mut all);
        out.copy_from_slice(&all[k * nh..(k + 1) * nh]);
    }

    fn opening_probabilities(&self, t: usize) -> Vec<f64> {
        (0..self.case.openings(t))
            .map(|k| self.case.probability(t, k))
            .collect()
    }

    fn solve_order(&self, t: usize) -> Vec<usize> {
        (0..self.case.openings(t)).collect()
    }

    fn forward_noise(
        &self,
        iteration: usize,
        trajectory: usize,
        t: usize,
        tree: &[f64],
        out: &mut [f64],
    ) {
        let u = sampling::uniform([
            self.seed,
            iteration.saturating_sub(1) as u64,
            trajectory as u64,
            t as u64,
        ]);
        let k = sampling::pick(
            (0..self.case.openings(t)).map(|k| self.case.probability(t, k)),
            u,
        );
        let nh = self.shape.hydros;
        out.copy_from_slice(&tree[k * nh..(k + 1) * nh]);
    }

    fn prepare<S: SolverInterface>(
        &self,
        _t: usize,
        noise: &[f64],
        incoming: &[f64],
        _scratch: &mut (),
        solver: &mut S,
    ) {
        solver.set_col_bounds(&self.incoming_cols, incoming, incoming);
        solver.set_row_bounds(&self.balance_rows, noise, noise);
    }

    fn outgoing(
        &self,
        _t: usize,
        primal: &[f64],
        _incoming: &[f64],
        _noise: &[f64],
        _scratch: &mut (),
        out: &mut [f64],
    ) {
        out.copy_from_slice(&primal[..self.shape.hydros]);
    }

    fn risk_measure(&self, _t: usize) -> RiskMeasure {
        RiskMeasure::Expectation
    }

    fn profile(&self, _phase: Phase) -> HighsProfile {
        engine_profile()
    }

    fn penalty_slack(&self, _t: usize, primal: &[f64]) -> f64 {
        self.shape.slacks().map(|c| primal[c]).sum()
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn fingerprint(&self) -> u64 {
        let mut h = crate::model::Fnv::default();
        h.bytes(format!("{:?}", self.case).as_bytes());
        h.0
    }

    fn describe(&self, _t: usize, incoming: &[f64], noise: &[f64]) -> String {
        format!("incoming volumes {incoming:?} and inflows {noise:?}")
    }
}
