//! An opening's noise as LP values: the z-inflow row right-hand sides, the
//! stochastic load rows and the stochastic NCS generation bounds of a stage,
//! and the forward pass's choice of noise per (iteration, trajectory, stage).
//!
//! Every formula is cobre-sddp 0.18's (`stochastic/noise.rs`), computed with
//! cobre-stochastic's public PAR kernels where upstream calls them.

use cobre_core::commissioning::commissioning_active;
use cobre_sddp::context::{StageContext, TrainingContext};
use cobre_sddp::InflowNonNegativityMethod;
use cobre_stochastic::{
    derive_forward_seed, evaluate_par_batch, rng_from_seed, solve_par_noise_batch,
    ExternalScenarioLibrary, HistoricalScenarioLibrary,
};
use rand::RngExt;

use super::Scratch;

/// Seed of the historical-window choice (`b"historic"`, cobre-stochastic's
/// class sampler).
const HISTORICAL_SELECTION_SEED: u64 = 0x6869_7374_6f72_6963;
/// Seed of the external-scenario choice (`b"external"`).
const EXTERNAL_SELECTION_SEED: u64 = 0x6578_7465_726e_616c;

/// Where the forward pass takes one noise class from.
#[derive(Clone, Copy)]
pub(super) enum ClassDraw<'a> {
    /// The opening tree: one opening drawn per (iteration, trajectory, stage).
    Tree,
    /// A historical inflow window drawn per (iteration, trajectory).
    Historical(&'a HistoricalScenarioLibrary),
    /// An external scenario drawn per (iteration, trajectory).
    External(&'a ExternalScenarioLibrary),
}

/// One noise class (inflow, load or NCS): its slice of the noise vector and
/// its source.
#[derive(Clone)]
pub(super) struct NoiseClass<'a> {
    pub range: std::ops::Range<usize>,
    pub draw: ClassDraw<'a>,
}

/// The opening the in-sample scheme draws: `derive_forward_seed(base_seed,
/// iteration, scenario, stage)` seeds a PCG64 whose `random_range(0..n)` is the
/// index (cobre-stochastic's `sample_forward`, chain node range `0..n`).
pub(super) fn in_sample_opening(
    base_seed: u64,
    iteration: u32,
    scenario: u32,
    stage: u32,
    openings: usize,
) -> usize {
    let seed = derive_forward_seed(base_seed, iteration, scenario, stage);
    rng_from_seed(seed).random_range(0..openings)
}

/// The noise of `(iteration, trajectory, t)` as upstream's forward sampler
/// fills it, for the classes `classes`; `tree` is stage `t`'s block of the
/// opening tree (`openings × dim`).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_noise(
    classes: &[NoiseClass<'_>],
    base_seed: u64,
    iteration: usize,
    trajectory: usize,
    t: usize,
    openings: usize,
    tree: &[f64],
    out: &mut [f64],
) {
    // Upstream passes these as u32 (truncating casts).
    #[allow(clippy::cast_possible_truncation)]
    let (it, scenario, stage) = (iteration as u32, trajectory as u32, t as u32);
    let dim = out.len();
    let mut opening = None;
    for class in classes {
        let range = class.range.clone();
        if range.is_empty() {
            continue;
        }
        match class.draw {
            ClassDraw::Tree => {
                let j = *opening.get_or_insert_with(|| {
                    in_sample_opening(base_seed, it, scenario, stage, openings)
                });
                let row = j * dim;
                out[range.clone()].copy_from_slice(&tree[row + range.start..row + range.end]);
            }
            ClassDraw::Historical(library) => {
                let hash = derive_forward_seed(HISTORICAL_SELECTION_SEED, it, scenario, 0);
                #[allow(clippy::cast_possible_truncation)]
                let window = (hash as usize) % library.n_windows();
                out[range].copy_from_slice(library.eta_slice(window, t));
            }
            ClassDraw::External(library) => {
                let hash = derive_forward_seed(EXTERNAL_SELECTION_SEED, it, scenario, 0);
                #[allow(clippy::cast_possible_truncation)]
                let k = (hash as usize) % library.n_scenarios();
                out[range].copy_from_slice(library.eta_slice(t, k));
            }
        }
    }
}

/// The z-inflow right-hand sides of stage `t` (m³/s, unscaled) into
/// `s.z_rhs`: `base + σ·η_eff`, where under the truncation methods `η` is
/// raised to the zero-inflow floor for the hydros whose PAR inflow (with the
/// incoming lags) would be negative — only when some is; 0 without a PAR
/// model.
pub(super) fn inflow_rhs(
    training: &TrainingContext<'_>,
    t: usize,
    noise: &[f64],
    incoming: &[f64],
    s: &mut Scratch,
) {
    let stochastic = training.stochastic;
    let dims = stochastic.class_dimensions();
    let n = dims.n_hydros;
    let eta = &noise[dims.hydro_range()];
    let par = stochastic.par();
    let has_par = par.n_stages() > 0;
    let truncate = matches!(
        training.inflow_method,
        InflowNonNegativityMethod::Truncation | InflowNonNegativityMethod::TruncationWithPenalty
    );
    let mut any_negative = false;
    if truncate {
        s.lags.clear();
        s.lags
            .extend_from_slice(&incoming[training.state.inflow_lags.clone()]);
        s.par_inflow.clear();
        s.par_inflow.resize(n, 0.0);
        evaluate_par_batch(par, t, &s.lags, eta, &mut s.par_inflow);
        any_negative = s.par_inflow.iter().any(|&a| a < 0.0);
        if any_negative {
            s.eta_floor.clear();
            s.eta_floor.resize(n, f64::NEG_INFINITY);
            solve_par_noise_batch(par, t, &s.lags, &s.zero_targets[..n], &mut s.eta_floor);
        }
    }
    s.z_rhs.clear();
    for (h, &e) in eta.iter().enumerate() {
        let eta_eff = if any_negative && s.par_inflow[h] < 0.0 {
            e.max(s.eta_floor[h])
        } else {
            e
        };
        s.z_rhs.push(if has_par {
            par.deterministic_base(t, h) + par.sigma(t, h) * eta_eff
        } else {
            0.0
        });
    }
}

/// The stochastic loads of stage `t` per (bus, block) into `out`:
/// `max(0, mean + std·η) · block_factor` (empty without stochastic load).
pub(super) fn load_rhs(
    training: &TrainingContext<'_>,
    t: usize,
    noise: &[f64],
    blocks: usize,
    out: &mut Vec<f64>,
) {
    let stochastic = training.stochastic;
    let dims = stochastic.class_dimensions();
    out.clear();
    if dims.n_load_buses == 0 {
        return;
    }
    let normal = stochastic.normal();
    for (bus, &eta) in noise[dims.load_bus_range()].iter().enumerate() {
        let load = (normal.mean(t, bus) + normal.std(t, bus) * eta).max(0.0);
        for blk in 0..blocks {
            out.push(load * normal.block_factor(t, bus, blk));
        }
    }
}

/// The generation bounds of stage `t`'s stochastic NCS columns (the
/// columns of `super::UpstreamModel::ncs_columns`, source-major then block)
/// into `lower`/`upper`: `max_gen · clamp(mean + std·η, 0, 1) · block_factor`
/// as the upper bound, the lower bound 0 when curtailment is allowed, else
/// equal; `[0, 0]` for a source not in operation at the stage. Not divided
/// by the columns' scale, as upstream.
pub(super) fn ncs_bounds(
    stage: &StageContext<'_>,
    training: &TrainingContext<'_>,
    t: usize,
    noise: &[f64],
    lower: &mut Vec<f64>,
    upper: &mut Vec<f64>,
) {
    let stochastic = training.stochastic;
    let dims = stochastic.class_dimensions();
    let blocks = stage.geometry_per_stage[t].n_blks;
    // The dormancy key is the stage id (not its index).
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let stage_id = training.stages.get(t).map_or(t as i32, |s| s.id);
    let normal = stochastic.ncs_normal();
    lower.clear();
    upper.clear();
    for (k, &eta) in noise[dims.ncs_range()].iter().enumerate() {
        let (entry, exit) = stage.ncs_stochastic_windows[k];
        if !commissioning_active(entry, exit, stage_id) {
            for _ in 0..blocks {
                lower.push(0.0);
                upper.push(0.0);
            }
            continue;
        }
        let availability = (normal.mean(t, k) + normal.std(t, k) * eta).clamp(0.0, 1.0);
        let realized = stage.ncs_max_gen[k] * availability;
        for blk in 0..blocks {
            let cap = realized * normal.block_factor(t, k, blk);
            upper.push(cap);
            lower.push(if stage.ncs_allow_curtailment[k] {
                0.0
            } else {
                cap
            });
        }
    }
}
