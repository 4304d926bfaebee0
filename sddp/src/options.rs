//! What a training run is asked to do: iterations, forward passes, stop
//! rules, cut selection, threads, checkpoints.
#![forbid(unsafe_code)]

use std::str::FromStr;
use std::time::Duration;

use crate::solve::workspace::Fault;

/// How cuts are chosen for the stage LPs: which cuts score, by their value
/// at the trial points visited since the last two selections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectionRule {
    /// Every cut within the tolerance of the best at some visited point.
    Level1,
    /// Only the oldest such cut at each visited point.
    Lml1,
    /// As Level-1 with a domination threshold.
    Dominated,
}

/// Cut selection: a rule (none: every cut is loaded), run every `every`
/// iterations with tie `tolerance`. Never touches the first stage's cuts,
/// the cuts of the iteration that runs it, or the last stage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CutSelection {
    /// The rule; `None` keeps every cut active.
    pub rule: Option<SelectionRule>,
    /// Iterations between selections.
    pub every: usize,
    /// How close to the best value a cut must be to count as binding.
    pub tolerance: f64,
}

impl Default for CutSelection {
    fn default() -> Self {
        Self {
            rule: Some(SelectionRule::Level1),
            every: 5,
            tolerance: 1e-10,
        }
    }
}

impl CutSelection {
    /// `none`, `level1`, `lml1` or `dominated`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self.rule {
            None => "none",
            Some(SelectionRule::Level1) => "level1",
            Some(SelectionRule::Lml1) => "lml1",
            Some(SelectionRule::Dominated) => "dominated",
        }
    }

    /// Does selection run after `iteration` (1-based)?
    #[must_use]
    pub fn runs_at(&self, iteration: usize) -> bool {
        self.rule.is_some() && iteration > 0 && iteration % self.every.max(1) == 0
    }
}

impl FromStr for CutSelection {
    type Err = String;

    /// `none`, `level1`, `lml1` or `dominated` (every 5 iterations, tolerance
    /// 1e-10: upstream Cobre's defaults).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rule = match s {
            "none" => None,
            "level1" | "level-1" => Some(SelectionRule::Level1),
            "lml1" => Some(SelectionRule::Lml1),
            "dominated" => Some(SelectionRule::Dominated),
            other => {
                return Err(format!(
                    "cut selection '{other}' is not one of: none, level1, lml1, dominated"
                ))
            }
        };
        Ok(Self {
            rule,
            ..Self::default()
        })
    }
}

/// Stop rules besides the iteration limit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StopRules {
    /// Wall-clock limit.
    pub time_limit: Option<Duration>,
    /// `(tolerance, window)`: stop when `|LB_now − LB_(window−1 back)| /
    /// max(1, |LB_now|) < tolerance`, once `window` lower bounds exist.
    pub stall: Option<(f64, usize)>,
    /// Stop only when every configured rule holds (the iteration limit
    /// always stops).
    pub require_all: bool,
}

/// Training parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// Iteration limit (also the cut pool's capacity).
    pub iterations: usize,
    /// Forward trajectories per iteration.
    pub forward_passes: usize,
    /// Other stop rules.
    pub stop: StopRules,
    /// Worker threads of this rank.
    pub threads: usize,
    /// Keep private copies of the shared data in every rank.
    pub replicate: bool,
    /// Which cuts each stage LP loads.
    pub cut_selection: CutSelection,
    /// Solve failures to inject (tests of the recovery ladder).
    pub fault: Option<Fault>,
    /// Also write a checkpoint (with the results so far) every this many
    /// iterations; `None`: only the one every run ends with.
    pub checkpoint_every: Option<usize>,
    /// Set glibc to hand freed memory back at once (see
    /// [`crate::allocator::release_eagerly`]); otherwise free pages go back
    /// once per iteration only.
    pub release_eagerly: bool,
    /// Keep what a checkpoint needs (every trajectory's bases as of the
    /// last completed iteration, gathered on rank 0 at a report); off when
    /// nothing will write a checkpoint, which saves two copies of the bases.
    pub keep_checkpoint: bool,
}

impl TrainOptions {
    /// Default iterations when neither the case nor the command line says.
    pub const DEFAULT_ITERATIONS: usize = 50;
    /// Default forward passes.
    pub const DEFAULT_FORWARD_PASSES: usize = 10;
    /// Default checkpoint interval, in iterations.
    pub const DEFAULT_CHECKPOINT_EVERY: usize = 10;
}
