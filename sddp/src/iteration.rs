//! One completed iteration, as `convergence.csv` and checkpoints hold it.
#![forbid(unsafe_code)]

/// One completed iteration (`convergence.csv` shows its first fields).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IterationRow {
    /// 1-based iteration.
    pub iteration: usize,
    /// Expected stage-1 value.
    pub lower_bound: f64,
    /// Mean cost of the forward trajectories.
    pub upper_bound_mean: f64,
    /// Half width of the 95 % confidence interval of that mean.
    pub upper_bound_ci95: f64,
    /// `(ub − lb) / max(1, |lb|)`.
    pub gap: f64,
    /// Cuts in the pool.
    pub cuts: usize,
    /// Seconds since training started.
    pub elapsed_secs: f64,
    /// Sample standard deviation of the trajectory costs.
    pub upper_bound_std: f64,
    /// LP solves of the iteration, over every rank.
    pub lp_solves: u64,
    /// Active cuts over every stage after the iteration's selection.
    pub active_cuts: usize,
    /// Rank 0's seconds in the forward pass, the backward pass and the
    /// lower bound of the iteration.
    pub phase_secs: [f64; 3],
}
