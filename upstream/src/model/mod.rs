//! An upstream Cobre study as a [`Model`] of the shared-memory engine: the
//! stage LPs, state layout, noise and risk measures of cobre-sddp 0.18's
//! `StudySetup`, and per solve exactly the bounds upstream's stage-solve
//! preparation sets (`training/stage_solve_prep.rs`: incoming-state column
//! pins, load and z-inflow row right-hand sides, stochastic NCS bounds), so
//! the engine solves the LPs upstream's training solves.
//!
//! What the engine does not reproduce is refused up front by
//! [`shared_engine_support`], naming the configuration field.
#![forbid(unsafe_code)]

mod fingerprint;
mod noise;
mod settings;
mod support;
#[cfg(test)]
mod tests;

use cobre_comm::Communicator;
use cobre_core::System;
use cobre_io::Config;
use cobre_sddp::context::{StageContext, TrainingContext};
use cobre_sddp::indexer::{BlockGrid, BlockIdx, CutSlot, NcsSys};
use cobre_sddp::lp::builder::PatchBuffer;
use cobre_sddp::setup::StudyParams;
use cobre_sddp::{Phase as UpstreamPhase, StudySetup};
use cobre_shm_sddp::model::{CutLayout, Model, Phase, RiskMeasure};
use cobre_solver::{HighsProfile, SolverInterface, StageTemplate};
use cobre_stochastic::par::lag_kernel::{
    advance_lag_chain, DownstreamLagAccum, LagMajor, PrimaryLagAccum,
};
use cobre_stochastic::par::resolve_stage_lag_transition;

use noise::NoiseClass;
pub use settings::{CutSelectionConfig, CutSelectionMethod, StopMode, StopRule, UpstreamTraining};
pub use support::{shared_engine_support, Unsupported};

use crate::{RunError, RunOptions};

/// An upstream study loaded on every rank, as `cobre-shm run` loads it.
pub struct LoadedStudy {
    /// The (estimated) system.
    pub system: System,
    /// Upstream's setup.
    pub setup: StudySetup,
    /// The parameters the setup was built from.
    pub params: StudyParams,
    /// `config.json`.
    pub config: Config,
}

/// Load the study of `opts.case_dir` on `comm` (collective): rank 0 reads the
/// case, the others receive it, every rank builds the same setup.
///
/// # Errors
/// As loading in `cobre-shm run`: the case cannot be read, is invalid or
/// asks for a policy mode the runner refuses.
pub fn load_study<C: Communicator>(comm: &C, opts: &RunOptions) -> Result<LoadedStudy, RunError> {
    let ctx = crate::study::Context::new(comm, opts);
    let study = crate::study::load_and_share(&ctx)?;
    Ok(LoadedStudy {
        system: study.system,
        setup: study.setup,
        params: study.params,
        config: study.config,
    })
}

/// The solver profiles of the three phases.
#[derive(Clone, Copy, Debug)]
struct Profiles {
    forward: HighsProfile,
    backward: HighsProfile,
    lower_bound: HighsProfile,
}

/// An upstream study seen by the shared engine.
pub struct UpstreamModel<'a> {
    name: String,
    stage: StageContext<'a>,
    training: TrainingContext<'a>,
    n_stages: usize,
    noise_len: usize,
    layouts: Vec<CutLayout>,
    risk: Vec<RiskMeasure>,
    probabilities: Vec<Vec<f64>>,
    solve_orders: Vec<Vec<usize>>,
    /// Per stage: the stochastic NCS generation columns (source, then block).
    ncs_columns: Vec<Vec<usize>>,
    classes: Vec<NoiseClass<'a>>,
    base_seed: u64,
    profiles: Profiles,
}

/// Per-thread buffers of [`UpstreamModel::prepare`] and
/// [`UpstreamModel::outgoing`], sized once.
pub struct Scratch {
    patch: PatchBuffer,
    lags: Vec<f64>,
    par_inflow: Vec<f64>,
    eta_floor: Vec<f64>,
    zero_targets: Vec<f64>,
    z_rhs: Vec<f64>,
    load_rhs: Vec<f64>,
    ncs_lower: Vec<f64>,
    ncs_upper: Vec<f64>,
    lag_accumulator: Vec<f64>,
    lag_weight: Vec<f64>,
}

impl<'a> UpstreamModel<'a> {
    /// The model of `setup` (built from `params`), named `name`.
    ///
    /// # Errors
    /// [`shared_engine_support`] refuses the study.
    pub fn new(
        name: impl Into<String>,
        setup: &'a StudySetup,
        params: &StudyParams,
    ) -> Result<Self, Unsupported> {
        shared_engine_support(setup, params)?;
        let stage = setup.stage_ctx();
        let training = setup.training_ctx();
        let n_stages = stage.templates.len();
        let tree = training.stochastic.opening_tree();
        let graph = training.node_graph;
        let nodes: Vec<_> = graph.nodes.iter().collect();
        let successors: Vec<_> = graph.successors.iter().collect();

        let layouts = training.cut_state_layouts[..n_stages]
            .iter()
            .map(|layout| CutLayout {
                state_index: (0..layout.n_slots())
                    .map(|k| layout.global_state_index(CutSlot::new(k)).get())
                    .collect(),
                incoming_column: (0..layout.n_slots())
                    .map(|k| layout.incoming_column(CutSlot::new(k)).get())
                    .collect(),
                render: layout
                    .render_pairs()
                    .map(|(k, col)| (k.get(), col.get()))
                    .collect(),
            })
            .collect();
        let risk = training.stages[..n_stages]
            .iter()
            .map(|s| match cobre_sddp::RiskMeasure::from(s.risk_config) {
                cobre_sddp::RiskMeasure::Expectation => RiskMeasure::Expectation,
                cobre_sddp::RiskMeasure::CVaR { alpha, lambda } => {
                    RiskMeasure::CVaR { alpha, lambda }
                }
            })
            .collect();
        // Stage t's openings weigh P(t−1 → t)·q_t (the root: 1·q_0), q the
        // node's 1/n, as upstream's backward pass and lower bound.
        let probabilities = (0..n_stages)
            .map(|t| {
                let into = if t == 0 {
                    1.0
                } else {
                    successors[t - 1][0].probability
                };
                let openings = nodes[t].openings;
                vec![into * openings.q; openings.len]
            })
            .collect();
        let solve_orders = (0..n_stages)
            .map(|t| tree.solve_order(t).iter().map(|&k| k as usize).collect())
            .collect();
        let ncs_columns = stage.geometry_per_stage[..n_stages]
            .iter()
            .map(|g| {
                stage
                    .ncs_stochastic_dense_col
                    .iter()
                    .flat_map(|&col| {
                        (0..g.n_blks).map(move |blk| {
                            g.ncs_generation_col(NcsSys::new(col), BlockIdx::new(blk))
                        })
                    })
                    .collect()
            })
            .collect();
        let dims = training.stochastic.class_dimensions();
        let classes = [
            (dims.hydro_range(), training.inflow_scheme),
            (dims.load_bus_range(), training.load_scheme),
            (dims.ncs_range(), training.ncs_scheme),
        ]
        .into_iter()
        .enumerate()
        .map(|(class, (range, scheme))| {
            let draw = support::class_draw(&training, class, scheme)?;
            Ok(NoiseClass { range, draw })
        })
        .collect::<Result<Vec<_>, Unsupported>>()?;
        Ok(Self {
            name: name.into(),
            n_stages,
            noise_len: tree.dim(),
            layouts,
            risk,
            probabilities,
            solve_orders,
            ncs_columns,
            classes,
            base_seed: training.stochastic.base_seed(),
            profiles: Profiles {
                forward: UpstreamPhase::Forward
                    .resolve_profile(params.training_solver_forward.as_ref()),
                backward: UpstreamPhase::Backward
                    .resolve_profile(params.training_solver_backward.as_ref()),
                // `StudySetup::train`'s lower bound solves on the caller's
                // solver, which `cobre run` (and this runner) create with
                // `ActiveSolver::new()` and never give a profile.
                lower_bound: HighsProfile::default(),
            },
            stage,
            training,
        })
    }

    fn template(&self, t: usize) -> &StageTemplate {
        &self.stage.templates[t]
    }
}

impl Model for UpstreamModel<'_> {
    type Scratch = Scratch;

    fn scratch(&self) -> Scratch {
        let state = self.training.state;
        let n = state.hydro_count;
        let max_blocks = self
            .stage
            .geometry_per_stage
            .iter()
            .map(|g| g.n_blks)
            .max()
            .unwrap_or(0);
        let loads = self.training.stochastic.class_dimensions().n_load_buses * max_blocks;
        let ncs = self.ncs_columns.iter().map(Vec::len).max().unwrap_or(0);
        Scratch {
            patch: PatchBuffer::new(
                state,
                self.stage.load_bus_indices,
                self.stage.geometry_per_stage,
            ),
            lags: Vec::with_capacity(state.inflow_lags.len()),
            par_inflow: Vec::with_capacity(n),
            eta_floor: Vec::with_capacity(n),
            zero_targets: vec![0.0; n],
            z_rhs: Vec::with_capacity(n),
            load_rhs: Vec::with_capacity(loads),
            ncs_lower: Vec::with_capacity(ncs),
            ncs_upper: Vec::with_capacity(ncs),
            lag_accumulator: vec![0.0; n],
            lag_weight: vec![0.0; n],
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn stages(&self) -> usize {
        self.n_stages
    }

    fn state_len(&self) -> usize {
        self.training.state.n_state
    }

    fn initial_state(&self) -> &[f64] {
        self.training.initial_state
    }

    fn stage_lp(&self, t: usize) -> &StageTemplate {
        self.template(t)
    }

    fn theta_column(&self, _t: usize) -> usize {
        self.training.state.theta
    }

    fn cut_layout(&self, t: usize) -> &CutLayout {
        &self.layouts[t]
    }

    fn discount(&self, t: usize) -> f64 {
        self.stage.discount_factors.get(t).copied().unwrap_or(1.0)
    }

    fn cumulative_discount(&self, t: usize) -> f64 {
        self.stage
            .cumulative_discount_factors
            .get(t)
            .copied()
            .unwrap_or(1.0)
    }

    fn cost_scale(&self) -> f64 {
        self.stage.cost_scale_factor
    }

    fn noise_len(&self) -> usize {
        self.noise_len
    }

    fn openings(&self, t: usize) -> usize {
        self.probabilities[t].len()
    }

    fn opening_noise(&self, t: usize, k: usize, out: &mut [f64]) {
        out.copy_from_slice(self.training.stochastic.opening_tree().opening(t, k));
    }

    fn opening_probabilities(&self, t: usize) -> Vec<f64> {
        self.probabilities[t].clone()
    }

    fn solve_order(&self, t: usize) -> Vec<usize> {
        self.solve_orders[t].clone()
    }

    fn forward_noise(
        &self,
        iteration: usize,
        trajectory: usize,
        t: usize,
        tree: &[f64],
        out: &mut [f64],
    ) {
        noise::forward_noise(
            &self.classes,
            self.base_seed,
            iteration,
            trajectory,
            t,
            self.openings(t),
            tree,
            out,
        );
    }

    fn prepare<S: SolverInterface>(
        &self,
        t: usize,
        noise: &[f64],
        incoming: &[f64],
        s: &mut Scratch,
        solver: &mut S,
    ) {
        let stage = &self.stage;
        let training = &self.training;
        let template = self.template(t);
        noise::inflow_rhs(training, t, noise, incoming, s);
        let stochastic_load = !stage.load_bus_indices.is_empty();
        let load_blocks = if stochastic_load {
            stage.geometry_per_stage[t].n_blks
        } else {
            0
        };
        noise::load_rhs(training, t, noise, load_blocks, &mut s.load_rhs);
        // Upstream checks the pin against the producer's box in debug
        // builds only; the engine may pin any state.
        s.patch
            .fill_col_state_patches(training.state, incoming, &template.col_scale, None);
        if stochastic_load {
            s.patch.fill_load_patches(
                stage.geometry_per_stage[t].load_balance,
                BlockGrid::new(load_blocks, training.study_dims.max_deficit_segments),
                &s.load_rhs,
                stage.load_bus_indices,
                &template.row_scale,
            );
        }
        s.patch
            .fill_z_inflow_patches(training.state, &s.z_rhs, &template.row_scale);
        let cols = s.patch.state_col_patch_count();
        solver.set_col_bounds(
            &s.patch.col_indices[..cols],
            &s.patch.col_lower[..cols],
            &s.patch.col_upper[..cols],
        );
        let rows = s.patch.forward_patch_count();
        solver.set_row_bounds(
            &s.patch.indices[..rows],
            &s.patch.lower[..rows],
            &s.patch.upper[..rows],
        );
        if training.stochastic.n_stochastic_ncs() > 0 {
            noise::ncs_bounds(
                stage,
                training,
                t,
                noise,
                &mut s.ncs_lower,
                &mut s.ncs_upper,
            );
            solver.set_col_bounds(&self.ncs_columns[t], &s.ncs_lower, &s.ncs_upper);
        }
    }

    fn outgoing(
        &self,
        t: usize,
        primal: &[f64],
        incoming: &[f64],
        _noise: &[f64],
        s: &mut Scratch,
        out: &mut [f64],
    ) {
        let state = self.training.state;
        let n_state = state.n_state;
        out[..n_state].copy_from_slice(&primal[..n_state]);
        let (n, order) = (state.hydro_count, state.max_par_order);
        if n > 0 && order > 0 {
            // The accumulators entering stage t: upstream's seeds at the first
            // stage; zero after a stage that closes its lag period without
            // spill-over (the support check refuses the others).
            let seed = self.training.lag_accum_seed;
            if t == 0 && !seed.is_empty() {
                s.lag_accumulator.copy_from_slice(seed);
                s.lag_weight.copy_from_slice(self.training.lag_weight_seed);
            } else {
                s.lag_accumulator.fill(0.0);
                s.lag_weight.fill(0.0);
            }
            let mut weight = 0.0;
            let mut completed = 0;
            advance_lag_chain(
                LagMajor {
                    entity_count: n,
                    max_order: order,
                },
                &mut out[state.inflow_lags.start..n_state],
                &incoming[state.inflow_lags.clone()],
                &primal[state.z_inflow.clone()],
                &resolve_stage_lag_transition(self.stage.stage_lag_transitions, t),
                &mut PrimaryLagAccum {
                    accumulator: &mut s.lag_accumulator,
                    weight_accum: &mut s.lag_weight,
                },
                &mut DownstreamLagAccum {
                    accumulator: &mut [],
                    weight_accum: &mut weight,
                    completed_lags: &mut [],
                    n_completed: &mut completed,
                    par_order: 0,
                },
            );
        }
        let bounds = &self.stage.state_boxes[t];
        for (j, value) in out[..n_state].iter_mut().enumerate() {
            *value = value.clamp(bounds.lower[j], bounds.upper[j]);
        }
    }

    fn risk_measure(&self, t: usize) -> RiskMeasure {
        self.risk[t]
    }

    fn profile(&self, phase: Phase) -> HighsProfile {
        match phase {
            Phase::Forward => self.profiles.forward,
            Phase::Backward => self.profiles.backward,
            Phase::LowerBound => self.profiles.lower_bound,
        }
    }

    fn seed(&self) -> u64 {
        self.base_seed
    }

    fn fingerprint(&self) -> u64 {
        fingerprint::fingerprint(self)
    }

    fn describe(&self, t: usize, incoming: &[f64], noise: &[f64]) -> String {
        let show = |v: &[f64]| {
            let shown: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
            let more = if v.len() > 8 { ", …" } else { "" };
            format!("[{}{more}]", shown.join(", "))
        };
        let state = self.training.state;
        let id = self.training.stages.get(t).map_or(-1, |s| s.id);
        let inflows = &noise[self.training.stochastic.class_dimensions().hydro_range()];
        format!(
            "incoming storage {} hm³, incoming state {} and noise {} (inflow noise {}; stage id {id})",
            show(&incoming[state.storage.clone()]),
            show(incoming),
            show(noise),
            show(inflows),
        )
    }
}
