//! The stage-LP cache: the structural LP of every stage, kept once per node
//! (a shared region under shm; one copy per rank under MPI or `--replicate`).
//! Cut rows are not stored here: the cut pool is their row data, and a
//! workspace builds the active ones from it.
//!
//! Per stage, `f64` data `[values(nnz), col_lower(n), col_upper(n),
//! objective(n), row_lower(m), row_upper(m), col_scale(n or 0),
//! row_scale(m or 0)]` and `i32` data `[col_starts(n+1), row_indices(nnz)]`,
//! stage after stage. Ranks copy contiguous blocks of stages from the model
//! and publish them in one collective per array; the offsets come from the
//! model's shapes, which every rank knows.
#![forbid(unsafe_code)]

use cobre_comm::{per_rank_counts, CommError};
use cobre_solver::StageTemplate;

use super::store::Lanes;
use crate::comm::EngineComm;
use crate::model::{Model, StageShape};

/// Where one stage lives in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extent {
    cols: usize,
    rows: usize,
    nonzeros: usize,
    n_state: usize,
    col_scaled: bool,
    row_scaled: bool,
    real_at: usize,
    int_at: usize,
}

impl Extent {
    fn of(s: StageShape) -> Self {
        Self {
            cols: s.cols,
            rows: s.rows,
            nonzeros: s.nonzeros,
            n_state: s.n_state,
            col_scaled: s.col_scaled,
            row_scaled: s.row_scaled,
            real_at: 0,
            int_at: 0,
        }
    }

    fn reals(&self) -> usize {
        self.nonzeros
            + 3 * self.cols
            + 2 * self.rows
            + if self.col_scaled { self.cols } else { 0 }
            + if self.row_scaled { self.rows } else { 0 }
    }

    fn ints(&self) -> usize {
        self.cols + 1 + self.nonzeros
    }
}

/// The structural LPs of all stages.
pub struct StageCache<C: EngineComm> {
    reals: Lanes<f64, C>,
    ints: Lanes<i32, C>,
    stages: Vec<Extent>,
}

/// A size that does not fit, as an allocation error.
fn too_big(what: &str) -> CommError {
    CommError::AllocationFailed {
        requested_bytes: usize::MAX,
        message: format!("the stage-LP cache overflows: {what}"),
    }
}

impl<C: EngineComm> StageCache<C> {
    /// Collective: copy every stage LP of `model` into the cache; each rank
    /// copies its block of stages.
    ///
    /// # Errors
    /// When a size overflows or a region cannot be created or published.
    pub fn build<M: Model>(comm: &C, model: &M, replicate: bool) -> Result<Self, CommError> {
        let mut stages = Vec::with_capacity(model.stages());
        let (mut reals_len, mut ints_len) = (0usize, 0usize);
        for t in 0..model.stages() {
            let mut e = Extent::of(model.stage_shape(t));
            e.real_at = reals_len;
            e.int_at = ints_len;
            reals_len = reals_len
                .checked_add(e.reals())
                .ok_or_else(|| too_big("reals"))?;
            ints_len = ints_len
                .checked_add(e.ints())
                .ok_or_else(|| too_big("indices"))?;
            stages.push(e);
        }
        let mut reals = Lanes::new(comm, 1, reals_len, replicate, "stage-LP cache")?;
        let mut ints = Lanes::new(comm, 1, ints_len, replicate, "stage-LP cache")?;
        let counts = per_rank_counts(stages.len(), comm.size());
        let first: usize = counts[..comm.rank()].iter().sum();
        let mine = first..first + counts[comm.rank()];
        let block = |r: usize, f: fn(&Extent) -> usize| -> usize {
            let a: usize = counts[..r].iter().sum();
            stages[a..a + counts[r]].iter().map(f).sum()
        };
        let mut my_reals = Vec::with_capacity(block(comm.rank(), Extent::reals));
        let mut my_ints = Vec::with_capacity(block(comm.rank(), Extent::ints));
        for t in mine {
            let lp = model.stage_lp(t);
            for part in template_reals(lp) {
                my_reals.extend_from_slice(part);
            }
            my_ints.extend_from_slice(&lp.col_starts);
            my_ints.extend_from_slice(&lp.row_indices);
        }
        let real_counts: Vec<usize> = (0..comm.size()).map(|r| block(r, Extent::reals)).collect();
        let int_counts: Vec<usize> = (0..comm.size()).map(|r| block(r, Extent::ints)).collect();
        reals.append(comm, 0, &real_counts, &my_reals)?;
        ints.append(comm, 0, &int_counts, &my_ints)?;
        Ok(Self {
            reals,
            ints,
            stages,
        })
    }

    /// Number of stages.
    #[must_use]
    pub fn stages(&self) -> usize {
        self.stages.len()
    }

    /// Columns of stage `t`'s LP.
    #[must_use]
    pub fn cols(&self, t: usize) -> usize {
        self.stages[t].cols
    }

    /// Structural rows of stage `t`'s LP.
    #[must_use]
    pub fn rows(&self, t: usize) -> usize {
        self.stages[t].rows
    }

    /// The column scale of stage `t` (empty when unscaled).
    #[must_use]
    pub fn col_scale(&self, t: usize) -> &[f64] {
        let e = &self.stages[t];
        if !e.col_scaled {
            return &[];
        }
        let at = e.real_at + e.nonzeros + 3 * e.cols + 2 * e.rows;
        &self.reals.lane(0)[at..at + e.cols]
    }

    /// Copy stage `t`'s structural LP into `out` (reusing its buffers); the
    /// reals come back in [`template_reals`]'s order.
    pub fn fill(&self, t: usize, out: &mut StageTemplate) {
        let e = self.stages[t];
        let (n, m, nz) = (e.cols, e.rows, e.nonzeros);
        let r = &self.reals.lane(0)[e.real_at..e.real_at + e.reals()];
        let i = &self.ints.lane(0)[e.int_at..e.int_at + e.ints()];
        let (values, r) = r.split_at(nz);
        let (col_lower, r) = r.split_at(n);
        let (col_upper, r) = r.split_at(n);
        let (objective, r) = r.split_at(n);
        let (row_lower, r) = r.split_at(m);
        let (row_upper, r) = r.split_at(m);
        let (col_scale, row_scale) = r.split_at(if e.col_scaled { n } else { 0 });
        let (col_starts, row_indices) = i.split_at(n + 1);
        out.num_cols = n;
        out.num_rows = m;
        out.num_nz = nz;
        out.n_state = e.n_state;
        refill(&mut out.col_starts, col_starts);
        refill(&mut out.row_indices, row_indices);
        refill(&mut out.values, values);
        refill(&mut out.col_lower, col_lower);
        refill(&mut out.col_upper, col_upper);
        refill(&mut out.objective, objective);
        refill(&mut out.row_lower, row_lower);
        refill(&mut out.row_upper, row_upper);
        refill(&mut out.col_scale, col_scale);
        refill(&mut out.row_scale, row_scale);
    }

    /// Bytes of the cache.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.reals.bytes() + self.ints.bytes()
    }

    /// The two arrays, for reports.
    pub(crate) fn parts(&self) -> (&Lanes<f64, C>, &Lanes<i32, C>) {
        (&self.reals, &self.ints)
    }
}

/// Replace `dst`'s contents with `src`, keeping its allocation.
fn refill<T: Copy>(dst: &mut Vec<T>, src: &[T]) {
    dst.clear();
    dst.extend_from_slice(src);
}

/// The real arrays of a stage template, in the order the cache stores them
/// (and a model's fingerprint hashes them).
#[must_use]
pub fn template_reals(lp: &StageTemplate) -> [&[f64]; 8] {
    [
        &lp.values,
        &lp.col_lower,
        &lp.col_upper,
        &lp.objective,
        &lp.row_lower,
        &lp.row_upper,
        &lp.col_scale,
        &lp.row_scale,
    ]
}
