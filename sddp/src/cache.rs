//! The stage-LP cache: the structural LP of every stage, built once and kept
//! once per node (a shared region under shm; one copy per rank under MPI or
//! `--replicate`). Cut rows are not stored here: the cut pool is their row
//! data, and a workspace loads the active ones from it.
//!
//! Per stage, `f64` data `[values(nnz), col_lower(n), col_upper(n),
//! objective(n), row_lower(m), row_upper(m)]` and `i32` data
//! `[col_starts(n+1), row_indices(nnz)]`, stage after stage. Every stage has
//! the same shape ([`Shape`]), so offsets are `t ×` a stride. Ranks build
//! contiguous blocks of stages and publish them in one collective per array.
#![forbid(unsafe_code)]

use cobre_comm::{per_rank_counts, CommError};
use cobre_solver::StageTemplate;

use crate::case::Case;
use crate::engine::EngineComm;
use crate::lp::{build_stage, Shape};
use crate::store::Lanes;

/// The structural LPs of all stages.
pub struct StageCache<C: EngineComm> {
    reals: Lanes<f64, C>,
    ints: Lanes<i32, C>,
    real_stride: usize,
    int_stride: usize,
    shape: Shape,
    stages: usize,
}

impl<C: EngineComm> StageCache<C> {
    /// Collective: build and publish the cache for `case`; each rank builds
    /// its block of stages.
    ///
    /// # Errors
    /// When a region cannot be created or published.
    pub fn build(comm: &C, case: &Case, replicate: bool) -> Result<Self, CommError> {
        let shape = Shape::of(case);
        let (n, m, nz) = (shape.cols, shape.rows, shape.nonzeros);
        let real_stride = nz + 3 * n + 2 * m;
        let int_stride = n + 1 + nz;
        let stages = case.stages;
        let mut reals = Lanes::new(comm, 1, stages * real_stride, replicate, "stage-LP cache")?;
        let mut ints = Lanes::new(comm, 1, stages * int_stride, replicate, "stage-LP cache")?;
        let counts = per_rank_counts(stages, comm.size());
        let first: usize = counts[..comm.rank()].iter().sum();
        let mine = first..first + counts[comm.rank()];
        let mut my_reals = Vec::with_capacity(mine.len() * real_stride);
        let mut my_ints = Vec::with_capacity(mine.len() * int_stride);
        let mut lp = StageTemplate::empty();
        for t in mine {
            build_stage(case, &shape, t, &mut lp);
            for part in [
                &lp.values,
                &lp.col_lower,
                &lp.col_upper,
                &lp.objective,
                &lp.row_lower,
                &lp.row_upper,
            ] {
                my_reals.extend_from_slice(part);
            }
            my_ints.extend_from_slice(&lp.col_starts);
            my_ints.extend_from_slice(&lp.row_indices);
        }
        let scaled = |s: usize| counts.iter().map(|c| c * s).collect::<Vec<_>>();
        reals.append(comm, 0, &scaled(real_stride), &my_reals)?;
        ints.append(comm, 0, &scaled(int_stride), &my_ints)?;
        Ok(Self {
            reals,
            ints,
            real_stride,
            int_stride,
            shape,
            stages,
        })
    }

    /// The column and row layout shared by every stage.
    #[must_use]
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Number of stages.
    #[must_use]
    pub fn stages(&self) -> usize {
        self.stages
    }

    /// Copy stage `t`'s structural LP into `out` (reusing its buffers).
    pub fn fill(&self, t: usize, out: &mut StageTemplate) {
        let (n, m, nz) = (self.shape.cols, self.shape.rows, self.shape.nonzeros);
        let r = &self.reals.lane(0)[t * self.real_stride..(t + 1) * self.real_stride];
        let i = &self.ints.lane(0)[t * self.int_stride..(t + 1) * self.int_stride];
        let (values, r) = r.split_at(nz);
        let (col_lower, r) = r.split_at(n);
        let (col_upper, r) = r.split_at(n);
        let (objective, r) = r.split_at(n);
        let (row_lower, row_upper) = r.split_at(m);
        let (col_starts, row_indices) = i.split_at(n + 1);
        let copy = |dst: &mut Vec<f64>, src: &[f64]| {
            dst.clear();
            dst.extend_from_slice(src);
        };
        out.num_cols = n;
        out.num_rows = m;
        out.num_nz = nz;
        out.col_starts.clear();
        out.col_starts.extend_from_slice(col_starts);
        out.row_indices.clear();
        out.row_indices.extend_from_slice(row_indices);
        copy(&mut out.values, values);
        copy(&mut out.col_lower, col_lower);
        copy(&mut out.col_upper, col_upper);
        copy(&mut out.objective, objective);
        copy(&mut out.row_lower, row_lower);
        copy(&mut out.row_upper, row_upper);
        out.n_state = self.shape.hydros;
        out.col_scale.clear();
        out.row_scale.clear();
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
