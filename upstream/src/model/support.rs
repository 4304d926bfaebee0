//! What of an upstream study the shared engine reproduces: the coverage check
//! that refuses, by configuration field, what would make its LPs or its
//! trajectory differ from upstream's training.

use cobre_core::scenario::SamplingScheme;
use cobre_io::config::BackwardScheduler;
use cobre_sddp::context::TrainingContext;
use cobre_sddp::setup::node_graph::OpeningSource;
use cobre_sddp::setup::StudyParams;
use cobre_sddp::{CutSelectionStrategy, StoppingRule, StudySetup};

use super::noise::ClassDraw;

/// A feature of the study the shared engine does not model.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct Unsupported {
    /// The configuration or system field, with the offending value.
    pub field: String,
    /// Why the engine refuses it.
    pub why: String,
}

pub(super) fn refuse(field: impl Into<String>, why: impl Into<String>) -> Unsupported {
    Unsupported {
        field: field.into(),
        why: why.into(),
    }
}

const CLASS_NAMES: [&str; 3] = ["inflow", "load", "ncs"];

/// Check that the shared engine reproduces the training of `setup` (built
/// from `params`): a chain of stages trained by sampled forward passes,
/// by-scenario backward passes, no dynamic cut selection nor budget, a fresh
/// policy, forward noise that is a pure function of (iteration, trajectory,
/// stage), and inflow-lag accumulators that restart every stage.
///
/// # Errors
/// The first feature the engine does not model.
pub fn shared_engine_support(setup: &StudySetup, params: &StudyParams) -> Result<(), Unsupported> {
    let stage = setup.stage_ctx();
    let training = setup.training_ctx();
    let n_stages = stage.templates.len();
    check_training(setup, params)?;
    check_chain(setup, &training, n_stages)?;
    check_noise(&training, n_stages)?;
    check_shapes(&stage, &training, n_stages)?;
    check_lags(&stage, &training, n_stages)?;
    Ok(())
}

/// Traversal, scheduler, cut management, stopping and policy mode.
fn check_training(setup: &StudySetup, params: &StudyParams) -> Result<(), Unsupported> {
    if setup.loop_params.training_enumerated || params.training_enumerated {
        return Err(refuse(
            "training.selection.method: enumerated",
            "the engine samples its forward passes; enumerated traversal is not modelled",
        ));
    }
    match &params.cut_selection {
        Some(CutSelectionStrategy::Dynamic { .. }) => {
            return Err(refuse(
                "training.cut_selection.method: dynamic (DCS)",
                "dynamic cut selection solves each LP with a lazily grown cut subset, \
                 a different LP from the engine's",
            ))
        }
        Some(
            CutSelectionStrategy::Level1 {
                check_frequency, ..
            }
            | CutSelectionStrategy::Lml1 {
                check_frequency, ..
            }
            | CutSelectionStrategy::Dominated {
                check_frequency, ..
            },
        ) if *check_frequency == 0 => {
            return Err(refuse(
                "training.cut_selection.check_frequency: 0",
                "a selection that never runs is not a configuration upstream accepts",
            ))
        }
        _ => {}
    }
    if setup.training_ctx().dcs.is_some() {
        return Err(refuse(
            "training.cut_selection.method: dynamic (DCS)",
            "dynamic cut selection is active in the training context",
        ));
    }
    if let Some(budget) = params.budget {
        return Err(refuse(
            format!("training.cut_selection.max_active_per_stage: {budget}"),
            "the cut budget evicts cuts by their binding history (LP duals counted with \
             cut_activity_tolerance), which the engine does not keep",
        ));
    }
    if let BackwardScheduler::ByNode { .. } = params.backward_scheduler {
        return Err(refuse(
            "training.parallelism.backward_scheduler: by_node",
            "opening blocks change the warm-start chain of the backward solves, hence the \
             optimal vertex a degenerate LP reports and the cut it yields",
        ));
    }
    if let Some(rule) = params
        .stopping_rule_set
        .rules
        .iter()
        .find(|r| matches!(r, StoppingRule::Gap { .. }))
    {
        return Err(refuse(
            format!("training.stopping_rules: {rule:?}"),
            "the gap rule needs an exact upper bound (enumerated traversal)",
        ));
    }
    if setup.boundary_requirements().is_present() || params.boundary.is_present() {
        return Err(refuse(
            "policy.boundary",
            "terminal boundary cuts are not modelled",
        ));
    }
    if let Some(p) = setup
        .fcf
        .pools
        .iter()
        .position(|p| p.warm_start_count > 0 || p.active_count() > 0)
    {
        return Err(refuse(
            "policy.mode: warm_start / resume",
            format!("pool {p} already holds cuts; the engine trains a fresh policy"),
        ));
    }
    Ok(())
}

/// One node per stage, each the only successor of the previous one, with the
/// stage's whole generated opening set.
fn check_chain(
    setup: &StudySetup,
    training: &TrainingContext<'_>,
    n_stages: usize,
) -> Result<(), Unsupported> {
    let graph = training.node_graph;
    let field = "stages.json policy_graph";
    if n_stages < 2 {
        return Err(refuse("stages.json stages", "fewer than two study stages"));
    }
    if graph.nodes.len() != n_stages
        || graph.n_pools != n_stages
        || training.cut_state_layouts.len() != n_stages
        || setup.fcf.pools.len() != n_stages
    {
        return Err(refuse(
            field,
            format!(
                "{} nodes and {} cut pools for {n_stages} stages: not a chain of stages",
                graph.nodes.len(),
                graph.n_pools
            ),
        ));
    }
    let tree = training.stochastic.opening_tree();
    let successors: Vec<_> = graph.successors.iter().collect();
    for (t, node) in graph.nodes.iter().enumerate() {
        if node.stage.0 != t || node.pool_id != t || graph.pool_stage[t].0 != t {
            return Err(refuse(
                field,
                format!("node {t} is not stage {t}'s only node: not a chain of stages"),
            ));
        }
        let expected_children = usize::from(t + 1 < n_stages);
        let chained = successors[t].len() == expected_children
            && successors[t].iter().all(|s| s.child.0 == t + 1);
        if !chained {
            return Err(refuse(
                field,
                format!("stage {t} does not lead to stage {} alone", t + 1),
            ));
        }
        let o = node.openings;
        if o.source != OpeningSource::Generated || o.offset != 0 || o.len != tree.n_openings(t) {
            return Err(refuse(
                format!("{field} node {t} openings"),
                "the node does not take its stage's whole generated opening set",
            ));
        }
        if o.len == 0 {
            return Err(refuse(
                format!("stages.json stage {t} num_openings"),
                "a stage without openings",
            ));
        }
    }
    Ok(())
}

/// Forward noise the engine can draw as a pure function of (iteration,
/// trajectory, stage).
fn check_noise(training: &TrainingContext<'_>, n_stages: usize) -> Result<(), Unsupported> {
    let stochastic = training.stochastic;
    let dims = stochastic.class_dimensions();
    let tree = stochastic.opening_tree();
    if tree.dim() != dims.total() || stochastic.dim() != dims.total() {
        return Err(refuse(
            "scenarios (opening tree)",
            format!(
                "the opening tree holds {} values per opening for {} noise entities",
                tree.dim(),
                dims.total()
            ),
        ));
    }
    if tree.n_stages() != n_stages {
        return Err(refuse(
            "scenarios (opening tree)",
            format!(
                "the opening tree has {} stages for {n_stages} study stages",
                tree.n_stages()
            ),
        ));
    }
    for (class, scheme) in [
        training.inflow_scheme,
        training.load_scheme,
        training.ncs_scheme,
    ]
    .into_iter()
    .enumerate()
    {
        class_draw(training, class, scheme)?;
    }
    Ok(())
}

/// The engine's source of noise class `class` (0 inflow, 1 load, 2 NCS) under
/// `scheme`, or why it has none.
pub(super) fn class_draw<'a>(
    training: &TrainingContext<'a>,
    class: usize,
    scheme: SamplingScheme,
) -> Result<ClassDraw<'a>, Unsupported> {
    let dims = training.stochastic.class_dimensions();
    let len = [dims.n_hydros, dims.n_load_buses, dims.n_ncs][class];
    let name = CLASS_NAMES[class];
    let field = |s: &str| format!("training.scenario_source.{name}.scheme: {s}");
    let n_stages = training.stages.len();
    match scheme {
        SamplingScheme::InSample => Ok(ClassDraw::Tree),
        // An empty class draws nothing.
        _ if len == 0 => Ok(ClassDraw::Tree),
        SamplingScheme::OutOfSample => Err(refuse(
            field("out_of_sample"),
            "out-of-sample noise depends on per-iteration tables of every trajectory and a \
             correlation pass, not modelled",
        )),
        SamplingScheme::Historical => match (class, training.historical_library) {
            (0, Some(library))
                if library.n_windows() > 0
                    && library.n_hydros() == len
                    && library.n_stages() >= n_stages =>
            {
                Ok(ClassDraw::Historical(library))
            }
            _ => Err(refuse(
                field("historical"),
                "no historical library of the class's width covering every stage",
            )),
        },
        SamplingScheme::External => {
            let library = [
                training.external_inflow_library,
                training.external_load_library,
                training.external_ncs_library,
            ][class];
            match library {
                Some(library)
                    if library.n_scenarios() > 0
                        && library.n_entities() == len
                        && library.n_stages() >= n_stages =>
                {
                    Ok(ClassDraw::External(library))
                }
                _ => Err(refuse(
                    field("external"),
                    "no external library of the class's width covering every stage",
                )),
            }
        }
    }
}

/// Lengths the model indexes by.
fn check_shapes(
    stage: &cobre_sddp::context::StageContext<'_>,
    training: &TrainingContext<'_>,
    n_stages: usize,
) -> Result<(), Unsupported> {
    let state = training.state;
    let dims = training.stochastic.class_dimensions();
    let field = "system";
    let mismatch = |what: &str| refuse(field, format!("inconsistent study layout: {what}"));
    if state.hydro_count != dims.n_hydros {
        return Err(mismatch("hydros in the state and in the noise differ"));
    }
    if training.initial_state.len() != state.n_state {
        return Err(mismatch("initial state length"));
    }
    if stage.state_boxes.len() < n_stages
        || stage.geometry_per_stage.len() < n_stages
        || training.stages.len() < n_stages
        || stage.templates.iter().any(|t| t.num_cols <= state.theta)
    {
        return Err(mismatch("per-stage tables shorter than the stages"));
    }
    if !stage.load_bus_indices.is_empty() && stage.load_bus_indices.len() != dims.n_load_buses {
        return Err(mismatch("stochastic load buses"));
    }
    let n_ncs = training.stochastic.n_stochastic_ncs();
    if n_ncs > 0
        && (dims.n_ncs != n_ncs
            || stage.ncs_stochastic_dense_col.len() != n_ncs
            || stage.ncs_stochastic_windows.len() != n_ncs
            || stage.ncs_max_gen.len() != n_ncs
            || stage.ncs_allow_curtailment.len() != n_ncs)
    {
        return Err(mismatch("stochastic non-controllable sources"));
    }
    for seed in [training.lag_accum_seed, training.lag_weight_seed] {
        if !seed.is_empty() && seed.len() != state.hydro_count {
            return Err(mismatch("inflow-lag accumulator seeds"));
        }
    }
    if training.lag_accum_seed.len() != training.lag_weight_seed.len() {
        return Err(mismatch("inflow-lag accumulator seeds"));
    }
    Ok(())
}

/// Inflow-lag accumulators that upstream keeps per worker thread: the engine
/// reproduces them only when they restart at every stage (each stage closes
/// its lag period without spill-over, no coarser downstream lags).
fn check_lags(
    stage: &cobre_sddp::context::StageContext<'_>,
    training: &TrainingContext<'_>,
    n_stages: usize,
) -> Result<(), Unsupported> {
    let state = training.state;
    if state.hydro_count == 0 || state.max_par_order == 0 {
        return Ok(());
    }
    if training.study_dims.downstream_par_order > 0 {
        return Err(refuse(
            "stages.json season_definitions (multi-resolution inflow lags)",
            "coarser downstream lags accumulate across stages in per-thread state",
        ));
    }
    for t in 0..n_stages.saturating_sub(1) {
        let lag =
            cobre_stochastic::par::resolve_stage_lag_transition(stage.stage_lag_transitions, t);
        // Upstream restarts the primary accumulator after a stage exactly
        // when it finalizes without spill-over.
        let spills = lag.spillover_weight > 0.0;
        let restarts = lag.finalize_period && !spills;
        if !restarts || lag.accumulate_downstream || lag.rebuild_from_downstream {
            let id = training.stages.get(t).map_or(-1, |s| s.id);
            return Err(refuse(
                format!("stages.json stage {id} (inflow-lag period)"),
                "the stage does not close its inflow-lag period, so the lag accumulator \
                 carries into the next stage in upstream's per-thread state",
            ));
        }
    }
    Ok(())
}
