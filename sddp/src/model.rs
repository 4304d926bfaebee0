//! The boundary between what to solve and how: a [`Model`] tells the
//! trainer, stage by stage, the structural LP, the state layout, how an
//! opening's noise and the incoming state change the LP, how the solution
//! becomes the next stage's incoming state, and the risk measure that
//! aggregates the openings. The trainer owns everything else (the shared
//! stage-LP cache, opening tree and cut pool, workspaces, passes, cut
//! selection, bounds, checkpoints, outputs).
//!
//! Conventions every model follows (those of upstream Cobre's stage LPs):
//!
//! - The stage LP may be pre-scaled: column `j` holds `x̃_j = x_j / d_j`
//!   (`d = col_scale`, empty for none) and row `i` is multiplied by `r_i`
//!   (`row_scale`). Bounds a model sets are in the scaled space.
//! - The incoming state is pinned by the bounds of *incoming-state columns*;
//!   the reduced cost of such a column, divided by its scale, is the slope of
//!   the stage's value in that state coordinate (the cut coefficient).
//! - A cut of pool `t` reads `θ_t ≥ α + Σ_k π_k x_{out,k}` in the model's
//!   cost units; in stage `t`'s LP it is the row
//!   `d_θ θ̃ − Σ_k π_k d_k x̃_{out,k} ≥ α` (no row scaling).
//! - The objective of stage `t` is `cost + δ_t θ_t`, with `δ_t` the
//!   one-step discount ([`Model::discount`]); costs are in units of
//!   [`Model::cost_scale`] (reported figures are multiplied back).
#![forbid(unsafe_code)]

use cobre_solver::{HighsProfile, SolverInterface, StageTemplate};

/// How the coefficients of a pool's cuts map onto LP columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutLayout {
    /// For coefficient `k`: its coordinate in the global state vector.
    pub state_index: Vec<usize>,
    /// For coefficient `k`: the incoming-state column of the *next* stage's
    /// LP whose reduced cost gives it.
    pub incoming_column: Vec<usize>,
    /// `(k, column)`: the outgoing-state column of this stage's LP that
    /// coefficient `k` multiplies in a cut row, in the row's entry order
    /// (coefficients that are structurally zero may be left out).
    pub render: Vec<(usize, usize)>,
}

impl CutLayout {
    /// Coefficients per cut.
    #[must_use]
    pub fn len(&self) -> usize {
        self.state_index.len()
    }

    /// No coefficient (a stage without state).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.state_index.is_empty()
    }
}

/// The size of a stage LP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageShape {
    /// Columns.
    pub cols: usize,
    /// Structural rows.
    pub rows: usize,
    /// Matrix nonzeros.
    pub nonzeros: usize,
    /// Width of the state it declares (`StageTemplate::n_state`).
    pub n_state: usize,
    /// Whether it carries a column scale.
    pub col_scaled: bool,
    /// Whether it carries a row scale.
    pub row_scaled: bool,
}

impl StageShape {
    /// The shape of `lp`.
    #[must_use]
    pub fn of(lp: &StageTemplate) -> Self {
        Self {
            cols: lp.num_cols,
            rows: lp.num_rows,
            nonzeros: lp.num_nz,
            n_state: lp.n_state,
            col_scaled: !lp.col_scale.is_empty(),
            row_scaled: !lp.row_scale.is_empty(),
        }
    }
}

/// How the openings' cuts (and the first stage's values) are aggregated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RiskMeasure {
    /// The probability-weighted mean.
    Expectation,
    /// `(1 − λ)·E + λ·CVaR_α` (upper tail of costs).
    CVaR {
        /// Tail probability, in (0, 1].
        alpha: f64,
        /// Weight of the tail, in [0, 1].
        lambda: f64,
    },
}

impl RiskMeasure {
    /// The weights `μ` that aggregate outcomes whose objective values are
    /// `values` and probabilities `p` (canonical opening order): `p` for the
    /// expectation; for CVaR `(1 − λ)p + λν`, where `ν` fills caps `p/α`
    /// from the costliest outcome down (ties by index).
    pub fn weights(&self, values: &[f64], p: &[f64], mu: &mut Vec<f64>) {
        mu.clear();
        match *self {
            Self::Expectation => mu.extend_from_slice(p),
            Self::CVaR { alpha, lambda } => {
                let n = p.len();
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_unstable_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
                let mut nu = vec![0.0; n];
                let mut rem = 1.0;
                for &i in &order {
                    if rem <= 0.0 {
                        break;
                    }
                    let take = (p[i] / alpha).min(rem);
                    nu[i] = take;
                    rem -= take;
                }
                mu.extend(
                    p.iter()
                        .zip(&nu)
                        .map(|(&pi, &vi)| (1.0 - lambda) * pi + lambda * vi),
                );
            }
        }
    }

    /// The aggregated value of `values` under probabilities `p`.
    #[must_use]
    pub fn evaluate(&self, values: &[f64], p: &[f64]) -> f64 {
        let mut mu = Vec::with_capacity(p.len());
        self.weights(values, p, &mut mu);
        values.iter().zip(&mu).map(|(v, m)| v * m).sum()
    }
}

/// The solver phase a profile is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Forward-pass solves.
    Forward,
    /// Backward-pass solves.
    Backward,
    /// Lower-bound solves.
    LowerBound,
}

/// What a study looks like to the trainer. Stages are 0-based; pool `t`
/// holds the cuts that bound the cost after stage `t` (the last stage has
/// none).
pub trait Model: Sync {
    /// Per-thread scratch of [`Model::prepare`] and [`Model::outgoing`].
    type Scratch: Send;

    /// A fresh scratch for one worker thread.
    fn scratch(&self) -> Self::Scratch;

    /// Name of the study (reports).
    fn name(&self) -> &str;

    /// Number of stages.
    fn stages(&self) -> usize;

    /// Length of the global state vector.
    fn state_len(&self) -> usize;

    /// The state entering the first stage.
    fn initial_state(&self) -> &[f64];

    /// The structural LP of stage `t` (scaled as its `col_scale` and
    /// `row_scale` say, with the future-cost column and no cut rows).
    fn stage_lp(&self, t: usize) -> &StageTemplate;

    /// The size of stage `t`'s LP, without building it.
    fn stage_shape(&self, t: usize) -> StageShape {
        StageShape::of(self.stage_lp(t))
    }

    /// The future-cost column `θ` of stage `t`'s LP.
    fn theta_column(&self, t: usize) -> usize;

    /// The cut layout of pool `t` (`t + 1 < stages`).
    fn cut_layout(&self, t: usize) -> &CutLayout;

    /// One-step discount `δ_t`: the objective coefficient of `θ_t`.
    fn discount(&self, t: usize) -> f64;

    /// Discount from the start of the study to stage `t`.
    fn cumulative_discount(&self, t: usize) -> f64;

    /// The unit of the LP's costs (figures are reported times this).
    fn cost_scale(&self) -> f64;

    /// Length of one opening's noise vector.
    fn noise_len(&self) -> usize;

    /// Openings of stage `t`.
    fn openings(&self, t: usize) -> usize;

    /// The noise of opening `k` of stage `t`, into `out` (`noise_len` long).
    fn opening_noise(&self, t: usize, k: usize, out: &mut [f64]);

    /// Probabilities of the openings of stage `t`, in opening order.
    fn opening_probabilities(&self, t: usize) -> Vec<f64>;

    /// The order in which the backward pass solves the openings of stage
    /// `t` (a warm-start chain; the cut does not depend on it).
    fn solve_order(&self, t: usize) -> Vec<usize>;

    /// The noise of trajectory `trajectory` at stage `t` in the forward pass
    /// of iteration `iteration` (1-based), into `out`, given the opening
    /// tree's stage-`t` block `tree` (`openings(t) × noise_len`). A pure
    /// function of its arguments, so any rank can sample any trajectory.
    fn forward_noise(
        &self,
        iteration: usize,
        trajectory: usize,
        t: usize,
        tree: &[f64],
        out: &mut [f64],
    );

    /// Set the bounds of the loaded stage-`t` LP for `incoming` (the pinned
    /// state) and `noise` (the opening's values).
    fn prepare<S: SolverInterface>(
        &self,
        t: usize,
        noise: &[f64],
        incoming: &[f64],
        scratch: &mut Self::Scratch,
        solver: &mut S,
    );

    /// The state leaving stage `t` (`state_len` long), from the unscaled
    /// primal solution `primal`, the pinned `incoming` state and the
    /// opening's `noise`.
    fn outgoing(
        &self,
        t: usize,
        primal: &[f64],
        incoming: &[f64],
        noise: &[f64],
        scratch: &mut Self::Scratch,
        out: &mut [f64],
    );

    /// The risk measure of pool `t`'s cuts (for `t = 0` also the lower
    /// bound's aggregation over the first stage's openings).
    fn risk_measure(&self, t: usize) -> RiskMeasure;

    /// HiGHS options of a phase.
    fn profile(&self, phase: Phase) -> HighsProfile;

    /// Penalised slack in an unscaled primal solution of stage `t` (reported
    /// as `penalty_slack`; 0 for models without such slacks).
    fn penalty_slack(&self, _t: usize, _primal: &[f64]) -> f64 {
        0.0
    }

    /// The seed the forward passes are sampled with (part of a study's
    /// identity, checked apart from [`Model::fingerprint`]).
    fn seed(&self) -> u64 {
        0
    }

    /// A hash of everything else the results depend on (the stage LPs,
    /// state layouts, initial state, openings, risk measures): a checkpoint
    /// written for one fingerprint is refused by a model of another.
    fn fingerprint(&self) -> u64 {
        let mut h = Fnv::default();
        h.usize(self.stages());
        h.f64s(self.initial_state());
        for t in 0..self.stages() {
            let lp = self.stage_lp(t);
            h.usize(lp.num_cols);
            h.usize(lp.num_rows);
            h.f64s(&lp.values);
            h.f64s(&lp.col_lower);
            h.f64s(&lp.col_upper);
            h.f64s(&lp.objective);
            h.f64s(&lp.row_lower);
            h.f64s(&lp.row_upper);
            h.usize(self.theta_column(t));
            h.f64s(&[self.discount(t), self.cumulative_discount(t)]);
            h.f64s(&self.opening_probabilities(t));
            let mut noise = vec![0.0; self.noise_len()];
            for k in 0..self.openings(t) {
                self.opening_noise(t, k, &mut noise);
                h.f64s(&noise);
            }
            if t + 1 < self.stages() {
                let l = self.cut_layout(t);
                for v in [&l.state_index, &l.incoming_column] {
                    v.iter().for_each(|&x| h.usize(x));
                }
                h.bytes(format!("{:?}", self.risk_measure(t)).as_bytes());
            }
        }
        h.f64s(&[self.cost_scale()]);
        h.0
    }

    /// What a stage-`t` solve saw, for a failure message (`stage t LP could
    /// not be solved … for <this>`).
    fn describe(&self, t: usize, incoming: &[f64], noise: &[f64]) -> String {
        let show = |v: &[f64]| {
            let shown: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
            let more = if v.len() > 8 { ", …" } else { "" };
            format!("[{}{more}]", shown.join(", "))
        };
        let _ = t;
        format!(
            "incoming state {} and noise {}",
            show(incoming),
            show(noise)
        )
    }
}

/// FNV-1a, for fingerprints.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Mix in bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Mix in a count.
    pub fn usize(&mut self, v: usize) {
        self.bytes(&(v as u64).to_le_bytes());
    }

    /// Mix in numbers, bit for bit.
    pub fn f64s(&mut self, v: &[f64]) {
        self.usize(v.len());
        for x in v {
            self.bytes(&x.to_bits().to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvar_fills_the_costliest_outcomes_first() {
        let p = [0.25; 4];
        let values = [1.0, 4.0, 3.0, 2.0];
        let mut mu = Vec::new();
        RiskMeasure::CVaR {
            alpha: 0.5,
            lambda: 1.0,
        }
        .weights(&values, &p, &mut mu);
        assert_eq!(mu, [0.0, 0.5, 0.5, 0.0]);
        RiskMeasure::CVaR {
            alpha: 0.5,
            lambda: 0.5,
        }
        .weights(&values, &p, &mut mu);
        assert_eq!(mu, [0.125, 0.375, 0.375, 0.125]);
        // Ties go to the lower index first.
        RiskMeasure::CVaR {
            alpha: 0.25,
            lambda: 1.0,
        }
        .weights(&[2.0, 2.0, 1.0, 1.0], &p, &mut mu);
        assert_eq!(mu, [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(RiskMeasure::Expectation.evaluate(&values, &p), 2.5);
    }
}
