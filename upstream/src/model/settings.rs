//! The training settings of an upstream study (stopping, cut selection,
//! seeds, forward passes), collected for the engine to map.

use cobre_sddp::setup::StudyParams;
use cobre_sddp::{CutSelectionStrategy, StoppingMode, StoppingRule, StudySetup};

use super::support::{refuse, Unsupported};

/// How a cut-selection run picks the cuts it keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CutSelectionMethod {
    /// Keep every cut within `tie_tolerance` of the best at some visited state.
    Level1 {
        /// Tie tolerance.
        tie_tolerance: f64,
    },
    /// Keep only the oldest such cut per visited state.
    Lml1 {
        /// Tie tolerance.
        tie_tolerance: f64,
    },
    /// Drop the cuts dominated by more than `threshold` at every visited state.
    Dominated {
        /// Domination threshold.
        threshold: f64,
    },
}

/// `training.cut_selection`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CutSelectionConfig {
    /// The selection rule.
    pub method: CutSelectionMethod,
    /// Iterations between selection runs (runs at multiples of it).
    pub check_frequency: u64,
}

/// One stopping rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopRule {
    /// Stop once `iteration ≥ limit`.
    IterationLimit(u64),
    /// Stop once the wall time reaches `seconds`.
    TimeLimit {
        /// Seconds.
        seconds: f64,
    },
    /// Stop once `|LB_now − LB_{now−iterations}| / max(1, |LB_now|) < tolerance`.
    BoundStalling {
        /// Window, in iterations.
        iterations: u64,
        /// Relative tolerance.
        tolerance: f64,
    },
}

/// How the rules combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Any rule stops.
    Any,
    /// All rules must hold (upstream leaves the iteration limit out of the
    /// conjunction: it always stops).
    All,
}

/// The training settings of an upstream study, for the engine to map.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamTraining {
    /// `training.tree_seed` (default 42): the opening tree's seed.
    pub seed: u64,
    /// Seed of the in-sample forward draws (the stochastic context's base seed).
    pub base_seed: u64,
    /// Seed of out-of-sample forward noise, when configured.
    pub forward_seed: Option<u64>,
    /// Forward passes per iteration.
    pub forward_passes: usize,
    /// Iteration budget (the largest iteration limit).
    pub max_iterations: u64,
    /// The stopping rules.
    pub stopping_rules: Vec<StopRule>,
    /// How they combine.
    pub stopping_mode: StopMode,
    /// Cut selection (`None`: off).
    pub cut_selection: Option<CutSelectionConfig>,
    /// Minimum dual for a cut to count as binding.
    pub cut_activity_tolerance: f64,
}

impl UpstreamTraining {
    /// The settings of `setup` (built from `params`).
    ///
    /// # Errors
    /// A stopping rule or cut selection the engine does not model.
    pub fn new(setup: &StudySetup, params: &StudyParams) -> Result<Self, Unsupported> {
        let stopping_rules = params
            .stopping_rule_set
            .rules
            .iter()
            .map(|rule| match *rule {
                StoppingRule::IterationLimit { limit } => Ok(StopRule::IterationLimit(limit)),
                StoppingRule::TimeLimit { seconds } => Ok(StopRule::TimeLimit { seconds }),
                StoppingRule::BoundStalling {
                    tolerance,
                    iterations,
                } => Ok(StopRule::BoundStalling {
                    iterations,
                    tolerance,
                }),
                StoppingRule::Gap { .. } => Err(refuse(
                    "training.stopping_rules: gap",
                    "the gap rule needs an exact upper bound (enumerated traversal)",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cut_selection = match params.cut_selection.as_ref() {
            None => None,
            Some(&CutSelectionStrategy::Level1 {
                check_frequency,
                tie_tolerance,
            }) => Some(CutSelectionConfig {
                method: CutSelectionMethod::Level1 { tie_tolerance },
                check_frequency,
            }),
            Some(&CutSelectionStrategy::Lml1 {
                check_frequency,
                tie_tolerance,
            }) => Some(CutSelectionConfig {
                method: CutSelectionMethod::Lml1 { tie_tolerance },
                check_frequency,
            }),
            Some(&CutSelectionStrategy::Dominated {
                threshold,
                check_frequency,
            }) => Some(CutSelectionConfig {
                method: CutSelectionMethod::Dominated { threshold },
                check_frequency,
            }),
            Some(CutSelectionStrategy::Dynamic { .. }) => {
                return Err(refuse(
                    "training.cut_selection.method: dynamic (DCS)",
                    "dynamic cut selection is not modelled",
                ))
            }
        };
        let stochastic = &setup.inputs.stochastic;
        Ok(Self {
            seed: params.seed,
            base_seed: stochastic.base_seed(),
            forward_seed: stochastic.forward_seed(),
            forward_passes: setup.loop_params.forward_passes as usize,
            max_iterations: setup.loop_params.max_iterations,
            stopping_rules,
            stopping_mode: match params.stopping_rule_set.mode {
                StoppingMode::Any => StopMode::Any,
                StoppingMode::All => StopMode::All,
            },
            cut_selection,
            cut_activity_tolerance: params.cut_activity_tolerance,
        })
    }
}
