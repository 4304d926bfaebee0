//! The model against upstream's own training: upstream trains a few
//! iterations on a HiGHS wrapper that logs every call (the bounds it sets
//! per solve, the LPs it loads, what each solve returns); the model then
//! replays the same forward passes, backward passes and lower bounds and
//! must set bit for bit the same bounds, rebuild the same trial states, cut
//! rows, cuts and lower bounds. Besides: the bounds against an independent
//! computation from the formulas for perturbed states, the first stage
//! against upstream's lower-bound evaluation for perturbed initial states,
//! the forward noise against upstream's sampler, and the coverage check.

mod cases;
mod oracles;
mod replay;
mod solvers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cobre_comm::LocalBackend;
use cobre_sddp::indexer::{BlockIdx, BusSys};
use cobre_sddp::lower_bound::{evaluate_lower_bound, LbEvalScratch, LbEvalScratchBundle};
use cobre_sddp::workspace::{ScratchBuffers, WorkspaceSizing};
use cobre_sddp::{CutPool, StudySetup};
use cobre_shm_sddp::model::{Model, Phase};
use cobre_solver::{ActiveSolver, RowBatch, SolverInterface, StageTemplate};
use cobre_stochastic::{ForwardNoiseTables, SampleRequest};

use super::{LoadedStudy, UpstreamModel};
use cases::{
    fixture, generated, generated_external, generated_with, load, rich, rich_historical,
    rich_mid_month, rich_split_january, toy, Case, TempDir,
};
use oracles::{
    first_stage_matches_upstream_at_perturbed_states, forward_noise_matches_upstream_sampler,
    prepare_matches_the_formulas,
};
use replay::replay;
use solvers::{groups, Bound, Capture, Event, Group, Log, Recording, Solved};

/// Stage `t`'s block of the opening tree, as the engine shares it.
fn tree_block(model: &UpstreamModel<'_>, t: usize) -> Vec<f64> {
    let dim = model.noise_len();
    let mut block = vec![0.0; model.openings(t) * dim];
    for (k, row) in block
        .chunks_mut(dim.max(1))
        .enumerate()
        .take(model.openings(t))
    {
        model.opening_noise(t, k, row);
    }
    block
}

/// The bound calls of `model.prepare(t, noise, incoming)`.
fn prepared(
    model: &UpstreamModel<'_>,
    scratch: &mut super::Scratch,
    t: usize,
    noise: &[f64],
    incoming: &[f64],
) -> Vec<Bound> {
    let mut capture = Capture::default();
    model.prepare(t, noise, incoming, scratch, &mut capture);
    capture.calls
}

fn unscaled(primal: &[f64], col_scale: &[f64]) -> Vec<f64> {
    if col_scale.is_empty() {
        primal.to_vec()
    } else {
        primal.iter().zip(col_scale).map(|(&x, &d)| d * x).collect()
    }
}

fn scale(col_scale: &[f64], j: usize) -> f64 {
    if col_scale.is_empty() {
        1.0
    } else {
        col_scale[j]
    }
}

macro_rules! coverage_case {
    ($name:ident, $case:expr, $iterations:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn replays_upstream_training() {
                replay(&$case, $iterations);
            }

            #[test]
            fn prepare_matches_formulas() {
                prepare_matches_the_formulas(&$case);
            }

            #[test]
            fn first_stage_matches_upstream_at_perturbed_states() {
                super::first_stage_matches_upstream_at_perturbed_states(&$case);
            }

            #[test]
            fn forward_noise_matches_upstream_sampler() {
                super::forward_noise_matches_upstream_sampler(&$case);
            }
        }
    };
}

coverage_case!(toy_1d, toy(), 3);
coverage_case!(generated_case, generated(), 3);
coverage_case!(rich_case, rich(), 3);
coverage_case!(rich_mid_month_case, rich_mid_month(), 3);
coverage_case!(rich_historical_case, rich_historical(), 3);
coverage_case!(external_case, generated_external(), 3);
coverage_case!(
    b6a_hydro_inflow_cascade,
    fixture("b6a_hydro_inflow_cascade"),
    3
);
coverage_case!(chronological_storage, fixture("chronological_storage"), 3);
coverage_case!(
    custom_cycle_evaporation_month_mismatch,
    fixture("custom_cycle_evaporation_month_mismatch"),
    3
);
coverage_case!(exited_plant_transit, fixture("exited_plant_transit"), 3);
coverage_case!(
    nonzero_stage_fpha_override,
    fixture("nonzero_stage_fpha_override"),
    3
);
coverage_case!(parallel_storage, fixture("parallel_storage"), 3);
coverage_case!(pumping_transfer, fixture("pumping_transfer"), 3);
coverage_case!(travel_time_arc, fixture("travel_time_arc"), 3);
coverage_case!(
    weekly_cycle_evaporation,
    fixture("weekly_cycle_evaporation"),
    3
);

/// The training settings of the generated case.
#[test]
fn upstream_training_settings_of_the_generated_case() {
    let case = generated();
    let out = TempDir::new("settings");
    let study = load(&case, out.path());
    let s = super::UpstreamTraining::new(&study.setup, &study.params).expect("settings");
    assert_eq!(s.forward_passes, 4);
    assert_eq!(s.max_iterations, 8);
    assert_eq!(s.stopping_rules, vec![super::StopRule::IterationLimit(8)]);
    assert_eq!(s.stopping_mode, super::StopMode::Any);
    assert_eq!(s.cut_selection, None);
    assert_eq!(s.seed, cobre_sddp::DEFAULT_SEED);
    let model = UpstreamModel::new("settings", &study.setup, &study.params).expect("supported");
    assert_eq!(model.seed(), s.base_seed);
    assert_eq!(s.base_seed, s.seed);
}

/// Level-1 selection and stalling are passed on, not refused.
#[test]
fn cut_selection_and_stalling_are_collected() {
    let case = generated_with("selection", |c| {
        c["training"]["cut_selection"] =
            serde_json::json!({ "selection": { "method": "level1", "check_frequency": 3 } });
        c["training"]["stopping_rules"] = serde_json::json!([
            { "type": "iteration_limit", "limit": 20 },
            { "type": "bound_stalling", "iterations": 5, "tolerance": 1e-4 }
        ]);
    });
    let out = TempDir::new("selection");
    let study = load(&case, out.path());
    super::shared_engine_support(&study.setup, &study.params).expect("supported");
    let s = super::UpstreamTraining::new(&study.setup, &study.params).expect("settings");
    let selection = s.cut_selection.expect("selection on");
    assert_eq!(selection.check_frequency, 3);
    assert!(matches!(
        selection.method,
        super::CutSelectionMethod::Level1 { .. }
    ));
    assert_eq!(
        s.stopping_rules,
        vec![
            super::StopRule::IterationLimit(20),
            super::StopRule::BoundStalling {
                iterations: 5,
                tolerance: 1e-4
            }
        ]
    );
}

/// What the coverage check refuses, by field.
#[test]
fn the_coverage_check_refuses_what_the_engine_does_not_model() {
    let case = generated();
    let out = TempDir::new("refusals");
    let study = load(&case, out.path());
    let setup = &study.setup;
    super::shared_engine_support(setup, &study.params).expect("the generated case is supported");
    let refused = |edit: &dyn Fn(&mut cobre_sddp::setup::StudyParams)| {
        let mut params = study.params.clone();
        edit(&mut params);
        super::shared_engine_support(setup, &params)
            .expect_err("refused")
            .field
    };
    assert!(refused(&|p| p.budget = Some(10)).contains("max_active_per_stage"));
    assert!(refused(&|p| p.backward_scheduler =
        cobre_io::config::BackwardScheduler::ByNode { block_size: None })
    .contains("by_node"));
    assert!(refused(
        &|p| p.cut_selection = Some(cobre_sddp::CutSelectionStrategy::Dynamic {
            k1: None,
            k2: 2,
            nadic: 1,
            epsilon_viol: 1e-6,
            start_iteration: 1,
        })
    )
    .contains("dynamic"));
    assert!(refused(&|p| p.training_enumerated = true).contains("enumerated"));

    let oos = generated_with("out-of-sample", |c| {
        c["training"]["scenario_source"]["inflow"] =
            serde_json::json!({ "scheme": "out_of_sample" });
    });
    let out = TempDir::new("oos");
    let study = load(&oos, out.path());
    let err = super::shared_engine_support(&study.setup, &study.params)
        .expect_err("out-of-sample forward noise is refused");
    assert!(err.field.contains("inflow.scheme: out_of_sample"), "{err}");

    let split = rich_split_january();
    let out = TempDir::new("split");
    let study = load(&split, out.path());
    let err = super::shared_engine_support(&study.setup, &study.params)
        .expect_err("a lag period spanning two stages is refused");
    assert!(err.field.contains("inflow-lag"), "{err}");
}

/// The rich case does exercise what it is for: inflow lags in the state,
/// truncated negative inflows, stochastic NCS (one dormant at first) and
/// CVaR.
#[test]
fn the_rich_case_exercises_lags_truncation_ncs_and_cvar() {
    let case = rich();
    let out = TempDir::new("rich-features");
    let study = load(&case, out.path());
    let model = UpstreamModel::new("rich", &study.setup, &study.params).expect("supported");
    let training = study.setup.training_ctx();
    assert_eq!(training.state.max_par_order, 2);
    assert_eq!(model.state_len(), 2 + 2 * 2);
    assert_eq!(training.stochastic.n_stochastic_ncs(), 2);
    assert!(matches!(
        model.risk_measure(0),
        cobre_shm_sddp::model::RiskMeasure::CVaR { .. }
    ));
    assert_eq!(
        model.risk_measure(4),
        cobre_shm_sddp::model::RiskMeasure::Expectation
    );
    // Some opening's PAR inflow at the initial lags is negative: truncation
    // changes its right-hand side.
    let par = training.stochastic.par();
    let lags = &model.initial_state()[training.state.inflow_lags.clone()];
    let mut noise = vec![0.0; model.noise_len()];
    let mut negative = 0;
    for t in 0..model.stages() {
        for w in 0..model.openings(t) {
            model.opening_noise(t, w, &mut noise);
            for h in 0..2 {
                let psi = par.psi_slice(t, h);
                let det = par.deterministic_base(t, h)
                    + psi
                        .iter()
                        .enumerate()
                        .map(|(l, p)| p * lags[l * 2 + h])
                        .sum::<f64>();
                if det + par.sigma(t, h) * noise[h] < 0.0 {
                    negative += 1;
                }
            }
        }
    }
    assert!(negative > 0, "no opening truncates");
}

/// Starting mid-month, upstream seeds the lag accumulator of the first stage
/// with the observed part of the month (what the mid-month replay checks).
#[test]
fn the_mid_month_case_seeds_the_lag_accumulator() {
    let case = rich_mid_month();
    let out = TempDir::new("mid-month");
    let study = load(&case, out.path());
    let training = study.setup.training_ctx();
    assert!(
        training.lag_accum_seed.iter().any(|&v| v != 0.0),
        "seeds {:?}",
        training.lag_accum_seed
    );
}

/// The fingerprint is a function of the study: equal for the same case
/// loaded twice, different for another case.
#[test]
fn the_fingerprint_tells_studies_apart() {
    let fingerprint = |case: &Case| {
        let out = TempDir::new("fingerprint");
        let study = load(case, out.path());
        let model =
            UpstreamModel::new(case.name.clone(), &study.setup, &study.params).expect("supported");
        model.fingerprint()
    };
    let case = generated();
    assert_eq!(fingerprint(&case), fingerprint(&case));
    assert_ne!(fingerprint(&case), fingerprint(&rich()));
    assert_ne!(fingerprint(&rich()), fingerprint(&rich_mid_month()));
}

/// The historical case does draw its forward inflows from the history.
#[test]
fn the_historical_case_draws_forward_inflows_from_the_history() {
    let case = rich_historical();
    let out = TempDir::new("historical");
    let study = load(&case, out.path());
    let training = study.setup.training_ctx();
    assert_eq!(
        training.inflow_scheme,
        cobre_core::scenario::SamplingScheme::Historical
    );
    let library = training.historical_library.expect("a historical library");
    assert!(library.n_windows() > 1);
    let model = UpstreamModel::new("historical", &study.setup, &study.params).expect("supported");
    let (t, dim) = (1, model.noise_len());
    let block = tree_block(&model, t);
    let mut noise = vec![0.0; dim];
    let outside = (0..16).any(|g| {
        model.forward_noise(1, g, t, &block, &mut noise);
        block.chunks(dim).all(|row| row[..2] != noise[..2])
    });
    assert!(outside, "the forward inflows are openings of the tree");
}

/// The external case does sample its forward inflows and loads externally.
#[test]
fn the_external_case_draws_from_the_external_libraries() {
    let case = generated_external();
    let out = TempDir::new("external");
    let study = load(&case, out.path());
    let training = study.setup.training_ctx();
    use cobre_core::scenario::SamplingScheme;
    assert_eq!(training.inflow_scheme, SamplingScheme::External);
    assert_eq!(training.load_scheme, SamplingScheme::External);
    assert!(training.external_inflow_library.is_some());
    assert!(training.external_load_library.is_some());
}
