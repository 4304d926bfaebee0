//! Sizes checked before upstream allocates them: upstream cobre-sddp
//! preallocates its cut pools, trajectories, opening tree and simulation
//! buffers from `config.json` and `stages.json`, and aborts the process when
//! an allocation fails. A lower bound of those sizes is compared with the
//! memory this machine has, so an absurd number is one clear error instead.

use cobre_core::System;
use cobre_io::config::{ForwardPassesResolution, NumScenariosResolution, StoppingRuleConfig};
use cobre_io::Config;

use crate::RunError;

/// A lower bound of what upstream allocates, by part, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Cut pools: every stage holds `iterations × forward passes` cuts of
    /// (state dimension + 1) coefficients.
    pub cut_pool: u64,
    /// Forward trajectories of one iteration: a state per (pass, stage).
    pub trajectories: u64,
    /// Opening tree: a noise vector per (stage, opening), and upstream's
    /// table of (opening, opening) pairs of the widest stage.
    pub opening_tree: u64,
    /// Per-scenario simulation records.
    pub simulation: u64,
}

impl Estimate {
    /// The sum, saturating.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.cut_pool
            .saturating_add(self.trajectories)
            .saturating_add(self.opening_tree)
            .saturating_add(self.simulation)
    }
}

/// The estimate for `config` on `system` (saturating: an overflow is an
/// absurd size, which the check refuses).
#[must_use]
pub fn estimate(config: &Config, system: &System) -> Estimate {
    let stages = system.stages().len() as u64;
    let state = system.hydros().len() as u64 + 1;
    let noise = (system.hydros().len() + system.buses().len()) as u64;
    let passes = match config.resolve_forward_passes() {
        Some(ForwardPassesResolution::Sampled(n)) => u64::from(n),
        _ => 1,
    };
    let iterations = config
        .training
        .stopping_rules
        .iter()
        .flatten()
        .filter_map(|r| match r {
            StoppingRuleConfig::IterationLimit { limit } => Some(u64::from(*limit)),
            _ => None,
        })
        .min()
        .unwrap_or(1);
    let scenarios = match config.resolve_num_scenarios() {
        NumScenariosResolution::Sampled(n) if config.simulation.enabled => u64::from(n),
        _ => 0,
    };
    let openings: u64 = system
        .stages()
        .iter()
        .map(|s| s.scenario_config.branching_factor as u64)
        .fold(0u64, u64::saturating_add);
    let widest = system
        .stages()
        .iter()
        .map(|s| s.scenario_config.branching_factor as u64)
        .max()
        .unwrap_or(0);
    let f64s = |n: u64| n.saturating_mul(8);
    Estimate {
        cut_pool: f64s(
            iterations
                .saturating_mul(passes)
                .saturating_mul(stages)
                .saturating_mul(state),
        ),
        trajectories: f64s(passes.saturating_mul(stages).saturating_mul(state)),
        opening_tree: f64s(
            openings
                .saturating_mul(noise)
                .saturating_add(widest.saturating_mul(widest)),
        ),
        simulation: f64s(scenarios.saturating_mul(stages)),
    }
}

fn gb(b: u64) -> String {
    format!("{:.2} GB", b as f64 / 1e9)
}

/// Refuse a study whose lower-bound estimate exceeds `available` bytes.
///
/// # Errors
/// [`RunError::TooLarge`] naming every part and what to lower.
pub fn check_against(e: &Estimate, available: u64) -> Result<(), RunError> {
    if e.total() <= available {
        return Ok(());
    }
    Err(RunError::TooLarge(format!(
        "the study needs at least {} (cut pools {}: iteration limit × forward passes × stages × \
         state; trajectories {}; opening tree and opening pairs {}; simulation {}) and this \
         machine has {} \
         available; lower training.stopping_rules' iteration_limit, \
         training.selection.forward_passes, the stages' num_openings or \
         simulation.selection.num_scenarios",
        gb(e.total()),
        gb(e.cut_pool),
        gb(e.trajectories),
        gb(e.opening_tree),
        gb(e.simulation),
        gb(available)
    )))
}

/// Counts upstream needs to be positive but does not check itself (a zero
/// forward-pass count panics inside its workspace setup).
///
/// # Errors
/// [`RunError::Invalid`] naming the field.
pub fn check_counts(config: &Config) -> Result<(), RunError> {
    if let Some(ForwardPassesResolution::Sampled(0)) = config.resolve_forward_passes() {
        return Err(RunError::Invalid(
            "config.json: training.selection.forward_passes must be at least 1".into(),
        ));
    }
    Ok(())
}

/// [`check_counts`], then [`check_against`] the memory available now (no
/// memory check when it cannot be read).
///
/// # Errors
/// As [`check_counts`] and [`check_against`].
pub fn check(config: &Config, system: &System) -> Result<(), RunError> {
    check_counts(config)?;
    match cobre_shm::machine::mem_available() {
        Some(available) => check_against(&estimate(config, system), available),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_within_memory_passes_and_one_above_is_refused_by_name() {
        let e = Estimate {
            cut_pool: 3 << 30,
            trajectories: 1,
            opening_tree: 2,
            simulation: 3,
        };
        assert!(check_against(&e, 4 << 30).is_ok());
        let msg = check_against(&e, 1 << 30)
            .expect_err("too large")
            .to_string();
        assert!(msg.contains("cut pools 3.22 GB"), "{msg}");
        assert!(msg.contains("iteration_limit"), "{msg}");
        let huge = Estimate {
            cut_pool: u64::MAX,
            ..e
        };
        assert_eq!(huge.total(), u64::MAX);
        assert!(check_against(&huge, u64::MAX - 1).is_err());
    }
}
