//! One completed iteration, as `convergence.csv` and checkpoints hold it.
#![forbid(unsafe_code)]

/// One line of `convergence.csv`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IterationRow {
    /// 1-based iteration.
    pub iteration: usize,
    /// Expected stage-1 value.
    pub lower_bound: f64,
    /// Mean cost of the forward trajectories.
    pub upper_bound_mean: f64,
    /// Half width of the 95 % confidence interval of that mean.
    pub upper_bound_ci95: f64,
    /// `(ub − lb) / |ub|`.
    pub gap: f64,
    /// Cuts in the pool.
    pub cuts: usize,
    /// Seconds since training started.
    pub elapsed_secs: f64,
}
