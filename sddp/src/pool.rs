//! The cut pool and the trial points, once per node.
//!
//! Cuts of `θ_c` (the future cost after stage `c`) form lane `c` of the pool:
//! records `[α, iteration, trajectory, β_1 … β_H]`, appended one window per
//! iteration, slot `s` of the lane being the `s`-th cut published. Each rank
//! writes the records of its own trajectories straight into its block of the
//! window, so the slot of a cut depends only on (iteration, trajectory),
//! never on the number of ranks or threads. The pool *is* the row data of
//! the cuts: a workspace builds its cut rows from these records.
//!
//! Trial points (the end volumes of every forward trajectory at every stage
//! but the last) are appended the same way, one window per iteration, in
//! trajectory-major order; the trial point behind pool slot `s` of lane `c`
//! is state `s` of lane `c`, which cut selection evaluates cuts at.
#![forbid(unsafe_code)]

use std::ops::Range;

use cobre_comm::CommError;

use crate::engine::EngineComm;
use crate::store::Lanes;

/// Fields of a cut record before `β`.
pub const HEAD: usize = 3;

/// One cut as stored in the pool.
#[derive(Clone, Copy, Debug)]
pub struct CutRef<'a> {
    /// `α`.
    pub intercept: f64,
    /// Iteration that produced it (1-based).
    pub iteration: usize,
    /// Global trajectory whose trial point produced it.
    pub trajectory: usize,
    /// `β`, one per hydro.
    pub coefficients: &'a [f64],
}

impl<'a> CutRef<'a> {
    /// The cut a record `[α, iteration, trajectory, β…]` holds.
    #[must_use]
    pub fn from_record(r: &'a [f64]) -> Self {
        Self {
            intercept: r[0],
            iteration: r[1] as usize,
            trajectory: r[2] as usize,
            coefficients: &r[HEAD..],
        }
    }
}

/// Cut records and trial points of every stage.
pub struct CutPool<C: EngineComm> {
    cuts: Lanes<f64, C>,
    states: Lanes<f64, C>,
    hydros: usize,
    lanes: usize,
}

impl<C: EngineComm> CutPool<C> {
    /// Collective: room for `capacity` cuts in each of `lanes` lanes.
    ///
    /// # Errors
    /// When a region cannot be created (sizes are checked).
    pub fn new(
        comm: &C,
        lanes: usize,
        capacity: usize,
        hydros: usize,
        replicate: bool,
    ) -> Result<Self, CommError> {
        let overflow = |what: &str| CommError::AllocationFailed {
            requested_bytes: usize::MAX,
            message: format!("the {what} of {lanes} stages x {capacity} cuts overflows"),
        };
        let stride = HEAD + hydros;
        let cut_lane = capacity
            .checked_mul(stride)
            .ok_or_else(|| overflow("cut pool"))?;
        let state_len = capacity
            .checked_mul(lanes)
            .and_then(|v| v.checked_mul(hydros))
            .ok_or_else(|| overflow("trial points"))?;
        Ok(Self {
            cuts: Lanes::new(comm, lanes.max(1), cut_lane, replicate, "cut pool")?,
            states: Lanes::new(comm, 1, state_len, replicate, "trial points")?,
            hydros,
            lanes,
        })
    }

    /// Values per cut record.
    #[must_use]
    pub fn stride(&self) -> usize {
        HEAD + self.hydros
    }

    /// Number of lanes (stages with a future cost).
    #[must_use]
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Cuts published in lane `c`.
    #[must_use]
    pub fn len(&self, c: usize) -> usize {
        self.cuts.lane(c).len() / self.stride()
    }

    /// Trial points published per lane.
    #[must_use]
    pub fn states(&self) -> usize {
        self.states.lane(0).len() / (self.hydros * self.lanes.max(1))
    }

    /// Cut `slot` of lane `c`.
    #[must_use]
    pub fn cut(&self, c: usize, slot: usize) -> CutRef<'_> {
        let s = self.stride();
        CutRef::from_record(&self.cuts.lane(c)[slot * s..(slot + 1) * s])
    }

    /// Trial point `s` of lane `c` (the end volumes of stage `c`).
    #[must_use]
    pub fn state(&self, c: usize, s: usize) -> &[f64] {
        let at = (s * self.lanes + c) * self.hydros;
        &self.states.lane(0)[at..at + self.hydros]
    }

    /// Collective: append this iteration's cuts of lane `c`, rank `r`
    /// contributing `counts[r]` records (`mine`, record-major); returns the
    /// slots of the new cuts.
    ///
    /// # Errors
    /// When the pool is full or the exchange fails.
    pub fn append_cuts(
        &mut self,
        comm: &C,
        c: usize,
        counts: &[usize],
        mine: &[f64],
    ) -> Result<Range<usize>, CommError> {
        let s = self.stride();
        let counts: Vec<usize> = counts.iter().map(|n| n * s).collect();
        let w = self.cuts.append(comm, c, &counts, mine)?;
        Ok(w.start / s..w.end / s)
    }

    /// Collective: append this iteration's trial points of every lane, rank
    /// `r` contributing `counts[r]` trajectories (`mine`, trajectory-major,
    /// then lane, then hydro); returns the new state indices.
    ///
    /// # Errors
    /// When the pool is full or the exchange fails.
    pub fn append_states(
        &mut self,
        comm: &C,
        counts: &[usize],
        mine: &[f64],
    ) -> Result<Range<usize>, CommError> {
        let per = self.lanes * self.hydros;
        let counts: Vec<usize> = counts.iter().map(|n| n * per).collect();
        let w = self.states.append(comm, 0, &counts, mine)?;
        Ok(w.start / per.max(1)..w.end / per.max(1))
    }

    /// Every published record of lane `c`, back to back.
    #[must_use]
    pub fn cut_records(&self, c: usize) -> &[f64] {
        self.cuts.lane(c)
    }

    /// Every published trial-point value.
    #[must_use]
    pub fn state_values(&self) -> &[f64] {
        self.states.lane(0)
    }

    /// The two stores, for reports: cut records and trial points.
    pub(crate) fn parts(&self) -> (&Lanes<f64, C>, &Lanes<f64, C>) {
        (&self.cuts, &self.states)
    }
}
