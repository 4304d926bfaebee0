//! The structural LP of one stage, in the compressed sparse column form that
//! the stage-LP cache stores and `load_model` takes.
//!
//! Columns, in this order: end volume `v[h]` (the state), turbined `q[h]`,
//! spill `s[h]`, thermal `g[j]`, deficit tiers `d[l]`, then the penalised
//! slacks the case needs (overflow `o[h]` of each reservoir that cannot
//! spill and has a turbine limit; unserved energy `u` when every deficit tier
//! is limited), the future cost `θ`, then the incoming volumes `w[h]`
//! (pinned by their bounds: the reduced cost of `w[h]` is `∂cost/∂w[h]`).
//!
//! Rows: one water balance per hydro,
//! `v[h] − w[h] + q[h] + s[h] + o[h] − Σ_{u→h}(q[u] + s[u] + o[u]) = a[h]`
//! (right-hand side: the opening's inflow), and the demand balance
//! `Σ ρ_h q[h] + Σ g[j] + Σ d[l] + u = D_t`. The trainer appends one row per
//! cut `θ − β·v ≥ α` and fixes `θ = 0` in the last stage.
#![forbid(unsafe_code)]

use cobre_solver::StageTemplate;

use super::case::Case;

/// Cost per unit of a penalised slack: this many times the most expensive
/// way the case has to serve or store energy (deficit, thermal or spill
/// costs), so a slack is used only where the stage has no other way out.
pub const PENALTY_FACTOR: f64 = 10.0;

/// Where each kind of column sits in a stage LP.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// Hydros (state dimension).
    pub hydros: usize,
    /// First thermal column.
    pub thermal0: usize,
    /// First deficit column.
    pub deficit0: usize,
    /// Overflow column of each hydro, if it has one.
    pub overflow: Vec<Option<usize>>,
    /// Unserved-energy column, if the case has one.
    pub unserved: Option<usize>,
    /// The future-cost column `θ`.
    pub theta: usize,
    /// First incoming-volume column.
    pub incoming0: usize,
    /// Columns.
    pub cols: usize,
    /// Structural rows (water balances, then the demand row).
    pub rows: usize,
    /// Nonzeros of the structural matrix.
    pub nonzeros: usize,
    /// Cost of one unit of a penalised slack.
    pub penalty: f64,
}

impl Shape {
    /// The layout of every stage LP of `case` (the same for all stages).
    #[must_use]
    pub fn of(case: &Case) -> Self {
        let nh = case.hydros.len();
        let (nj, nl) = (case.thermals.len(), case.deficit.len());
        let thermal0 = 3 * nh;
        let deficit0 = thermal0 + nj;
        let mut next = deficit0 + nl;
        let overflow: Vec<Option<usize>> = case
            .hydros
            .iter()
            .map(|h| {
                (!h.spill_allowed && h.max_turbined.is_finite()).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        let unserved = case.deficit.iter().all(|d| d.max.is_finite()).then(|| {
            next += 1;
            next - 1
        });
        let theta = next;
        let with_overflow = |h: usize| usize::from(overflow[h].is_some());
        let balance_nz: usize = (0..nh).map(|h| 3 + with_overflow(h)).sum::<usize>()
            + case
                .hydros
                .iter()
                .enumerate()
                .filter(|(_, h)| h.downstream.is_some())
                .map(|(u, _)| 2 + with_overflow(u))
                .sum::<usize>();
        let demand_nz = nh + nj + nl + usize::from(unserved.is_some());
        let incoming0 = theta + 1;
        Self {
            hydros: nh,
            thermal0,
            deficit0,
            overflow,
            unserved,
            theta,
            incoming0,
            cols: incoming0 + nh,
            rows: nh + 1,
            nonzeros: balance_nz + nh + demand_nz,
            penalty: penalty_cost(case),
        }
    }

    /// Turbined-flow column of hydro `h`.
    #[must_use]
    pub fn turbined(&self, h: usize) -> usize {
        self.hydros + h
    }

    /// Spill column of hydro `h`.
    #[must_use]
    pub fn spill(&self, h: usize) -> usize {
        2 * self.hydros + h
    }

    /// Incoming-volume column of hydro `h`.
    #[must_use]
    pub fn incoming(&self, h: usize) -> usize {
        self.incoming0 + h
    }

    /// Penalised slack columns (overflows and unserved energy).
    pub fn slacks(&self) -> impl Iterator<Item = usize> + '_ {
        self.overflow
            .iter()
            .flatten()
            .chain(&self.unserved)
            .copied()
    }
}

/// Cost of a penalised slack for `case` (see [`PENALTY_FACTOR`]).
#[must_use]
pub fn penalty_cost(case: &Case) -> f64 {
    let deficit = case.deficit.iter().map(|d| d.cost).fold(0.0, f64::max);
    let thermal = case
        .thermals
        .iter()
        .flat_map(|t| t.cost.iter().copied())
        .fold(0.0, f64::max);
    let spill = case.hydros.iter().map(|h| h.spill_cost).fold(0.0, f64::max);
    PENALTY_FACTOR * deficit.max(thermal).max(spill).max(1.0)
}

/// Build the structural LP of stage `t` (0-based) into `out`, reusing its
/// buffers. Water-balance right-hand sides and incoming volumes are left at
/// zero and the initial volumes; every solve sets them.
pub fn build_stage(case: &Case, shape: &Shape, t: usize, out: &mut StageTemplate) {
    let nh = shape.hydros;
    let n = shape.cols;
    // Column-wise entries: (row, value) per column.
    let mut entries: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    let demand_row = nh;
    for (h, hy) in case.hydros.iter().enumerate() {
        entries[h].push((h, 1.0));
        entries[shape.incoming(h)].push((h, -1.0));
        entries[shape.turbined(h)].push((h, 1.0));
        entries[shape.spill(h)].push((h, 1.0));
        if let Some(o) = shape.overflow[h] {
            entries[o].push((h, 1.0));
        }
        if let Some(d) = hy.downstream {
            entries[shape.turbined(h)].push((d, -1.0));
            entries[shape.spill(h)].push((d, -1.0));
            if let Some(o) = shape.overflow[h] {
                entries[o].push((d, -1.0));
            }
        }
        entries[shape.turbined(h)].push((demand_row, hy.productivity));
    }
    for j in 0..case.thermals.len() {
        entries[shape.thermal0 + j].push((demand_row, 1.0));
    }
    for l in 0..case.deficit.len() {
        entries[shape.deficit0 + l].push((demand_row, 1.0));
    }
    if let Some(u) = shape.unserved {
        entries[u].push((demand_row, 1.0));
    }
    out.num_cols = n;
    out.num_rows = shape.rows;
    out.col_starts.clear();
    out.row_indices.clear();
    out.values.clear();
    for col in &mut entries {
        col.sort_by_key(|&(r, _)| r);
        out.col_starts.push(out.row_indices.len() as i32);
        for &(r, v) in col.iter() {
            out.row_indices.push(r as i32);
            out.values.push(v);
        }
    }
    out.col_starts.push(out.row_indices.len() as i32);
    out.num_nz = out.row_indices.len();
    debug_assert_eq!(out.num_nz, shape.nonzeros);
    out.col_lower.clear();
    out.col_lower.resize(n, 0.0);
    out.col_upper.clear();
    out.col_upper.resize(n, f64::INFINITY);
    out.objective.clear();
    out.objective.resize(n, 0.0);
    for (h, hy) in case.hydros.iter().enumerate() {
        out.col_lower[h] = hy.min_volume;
        out.col_upper[h] = hy.max_volume;
        out.col_upper[shape.turbined(h)] = hy.max_turbined;
        out.objective[shape.spill(h)] = hy.spill_cost;
        if !hy.spill_allowed {
            out.col_upper[shape.spill(h)] = 0.0;
        }
        if let Some(o) = shape.overflow[h] {
            out.objective[o] = shape.penalty;
        }
    }
    for (j, th) in case.thermals.iter().enumerate() {
        out.objective[shape.thermal0 + j] = th.cost[t];
        out.col_upper[shape.thermal0 + j] = th.capacity;
    }
    for (l, d) in case.deficit.iter().enumerate() {
        out.objective[shape.deficit0 + l] = d.cost;
        out.col_upper[shape.deficit0 + l] = d.max;
    }
    if let Some(u) = shape.unserved {
        out.objective[u] = shape.penalty;
    }
    out.objective[shape.theta] = 1.0;
    for (h, hy) in case.hydros.iter().enumerate() {
        out.col_lower[shape.incoming(h)] = hy.initial_volume;
        out.col_upper[shape.incoming(h)] = hy.initial_volume;
    }
    out.row_lower.clear();
    out.row_upper.clear();
    out.row_lower.resize(nh, 0.0);
    out.row_upper.resize(nh, 0.0);
    out.row_lower.push(case.demand[t]);
    out.row_upper.push(case.demand[t]);
    out.n_state = nh;
    out.col_scale.clear();
    out.row_scale.clear();
}
