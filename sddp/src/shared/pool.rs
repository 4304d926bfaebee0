//! The cut pool and the trial points, once per node.
//!
//! Cuts of `θ_c` (the future cost after stage `c`) form lane `c` of the pool:
//! records `[α, iteration, trajectory, π_1 … π_n]` (`n` the lane's cut
//! width), appended one window per iteration, so that slot
//! `(iteration − 1) × M + trajectory` holds the cut of that trajectory (`M`
//! forward passes). Each rank writes the records of its own trajectories
//! straight into its block of the window: the slot of a cut depends only on
//! (iteration, trajectory), never on the number of ranks or threads. The
//! pool *is* the row data of the cuts: a workspace builds its cut rows from
//! these records.
//!
//! Trial points (the states leaving every stage but the last, of every
//! forward trajectory) are appended the same way when cut selection needs
//! them: state `s` of lane `c` is the trial point behind slot `s`.
//!
//! Which cuts are active (loaded into the stage LPs) is kept by every rank:
//! one bit per slot, the same on every rank because selection results are
//! exchanged.
#![forbid(unsafe_code)]

use std::ops::Range;

use cobre_comm::CommError;

use super::store::Lanes;
use crate::comm::EngineComm;

/// Fields of a cut record before its coefficients.
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
    /// `π`, one per coefficient of the lane's cut layout.
    pub coefficients: &'a [f64],
}

impl<'a> CutRef<'a> {
    /// The cut a record `[α, iteration, trajectory, π…]` holds.
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

/// Cut records, trial points and active flags of every stage.
pub struct CutPool<C: EngineComm> {
    cuts: Lanes<f64, C>,
    states: Option<Lanes<f64, C>>,
    widths: Vec<usize>,
    state_len: usize,
    active: Vec<Vec<u64>>,
}

/// A size that does not fit, as an allocation error.
fn overflow(what: &str, lanes: usize, capacity: usize) -> CommError {
    CommError::AllocationFailed {
        requested_bytes: usize::MAX,
        message: format!("the {what} of {lanes} stages x {capacity} cuts overflows"),
    }
}

impl<C: EngineComm> CutPool<C> {
    /// Collective: room for `capacity` cuts in each lane, lane `c` holding
    /// cuts of `widths[c]` coefficients; trial points of `state_len` values
    /// are kept when `keep_states`.
    ///
    /// # Errors
    /// When a size overflows or a region cannot be created.
    pub fn new(
        comm: &C,
        widths: Vec<usize>,
        capacity: usize,
        state_len: usize,
        keep_states: bool,
        replicate: bool,
    ) -> Result<Self, CommError> {
        let lanes = widths.len();
        let stride = HEAD + widths.iter().copied().max().unwrap_or(0);
        let cut_lane = capacity
            .checked_mul(stride)
            .ok_or_else(|| overflow("cut pool", lanes, capacity))?;
        let states = if keep_states {
            let len = capacity
                .checked_mul(lanes)
                .and_then(|v| v.checked_mul(state_len))
                .ok_or_else(|| overflow("trial points", lanes, capacity))?;
            Some(Lanes::new(comm, 1, len, replicate, "trial points")?)
        } else {
            None
        };
        Ok(Self {
            cuts: Lanes::new(comm, lanes.max(1), cut_lane, replicate, "cut pool")?,
            states,
            active: vec![vec![0; capacity.div_ceil(64)]; lanes],
            widths,
            state_len,
        })
    }

    /// Values per cut record of lane `c`.
    #[must_use]
    pub fn stride(&self, c: usize) -> usize {
        HEAD + self.widths[c]
    }

    /// Number of lanes (stages with a future cost).
    #[must_use]
    pub fn lanes(&self) -> usize {
        self.widths.len()
    }

    /// Cuts published in lane `c`.
    #[must_use]
    pub fn len(&self, c: usize) -> usize {
        self.cuts.lane(c).len() / self.stride(c)
    }

    /// Cut `slot` of lane `c`.
    #[must_use]
    pub fn cut(&self, c: usize, slot: usize) -> CutRef<'_> {
        let s = self.stride(c);
        CutRef::from_record(&self.cuts.lane(c)[slot * s..(slot + 1) * s])
    }

    /// Whether trial points are kept.
    #[must_use]
    pub fn keeps_states(&self) -> bool {
        self.states.is_some()
    }

    /// Trial points published per lane.
    #[must_use]
    pub fn states(&self) -> usize {
        let per = self.state_len * self.lanes();
        self.states
            .as_ref()
            .map_or(0, |s| s.lane(0).len() / per.max(1))
    }

    /// Trial point `s` of lane `c` (the state leaving stage `c`), when kept.
    #[must_use]
    pub fn state(&self, c: usize, s: usize) -> &[f64] {
        let at = (s * self.lanes() + c) * self.state_len;
        self.states
            .as_ref()
            .map_or(&[][..], |st| &st.lane(0)[at..at + self.state_len])
    }

    /// Is cut `slot` of lane `c` active?
    #[must_use]
    pub fn is_active(&self, c: usize, slot: usize) -> bool {
        self.active[c][slot / 64] >> (slot % 64) & 1 == 1
    }

    /// Make cut `slot` of lane `c` active or not (on this rank).
    pub fn set_active(&mut self, c: usize, slot: usize, on: bool) {
        let (w, b) = (slot / 64, slot % 64);
        if on {
            self.active[c][w] |= 1 << b;
        } else {
            self.active[c][w] &= !(1 << b);
        }
    }

    /// The active flags of lane `c`, one bit per slot.
    #[must_use]
    pub fn active_words(&self, c: usize) -> &[u64] {
        &self.active[c]
    }

    /// Replace the active flags of lane `c`.
    pub fn set_active_words(&mut self, c: usize, words: &[u64]) {
        self.active[c].copy_from_slice(words);
    }

    /// Active slots of lane `c`, ascending (the order of cut rows).
    pub fn active(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.len(c)).filter(move |&s| self.is_active(c, s))
    }

    /// Active cuts of lane `c`.
    #[must_use]
    pub fn active_count(&self, c: usize) -> usize {
        self.active(c).count()
    }

    /// Collective: append this iteration's cuts of lane `c`, rank `r`
    /// contributing `counts[r]` records (`mine`, record-major); the new cuts
    /// are active. Returns their slots.
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
        let s = self.stride(c);
        let counts: Vec<usize> = counts.iter().map(|n| n * s).collect();
        let w = self.cuts.append(comm, c, &counts, mine)?;
        let slots = w.start / s..w.end / s;
        for slot in slots.clone() {
            self.set_active(c, slot, true);
        }
        Ok(slots)
    }

    /// Collective: append this iteration's trial points of every lane, rank
    /// `r` contributing `counts[r]` trajectories (`mine`, trajectory-major,
    /// then lane, then state coordinate). Nothing happens when trial points
    /// are not kept.
    ///
    /// # Errors
    /// When the pool is full or the exchange fails.
    pub fn append_states(
        &mut self,
        comm: &C,
        counts: &[usize],
        mine: &[f64],
    ) -> Result<(), CommError> {
        let per = self.lanes() * self.state_len;
        if let Some(states) = &mut self.states {
            let counts: Vec<usize> = counts.iter().map(|n| n * per).collect();
            states.append(comm, 0, &counts, mine)?;
        }
        Ok(())
    }

    /// Every published record of lane `c`, back to back.
    #[must_use]
    pub fn cut_records(&self, c: usize) -> &[f64] {
        self.cuts.lane(c)
    }

    /// Every published trial-point value.
    #[must_use]
    pub fn state_values(&self) -> &[f64] {
        self.states.as_ref().map_or(&[][..], |s| s.lane(0))
    }

    /// The stores, for reports: cut records and trial points (when kept).
    pub(crate) fn parts(&self) -> (&Lanes<f64, C>, Option<&Lanes<f64, C>>) {
        (&self.cuts, self.states.as_ref())
    }

    /// Bytes of the active flags held by this rank.
    #[must_use]
    pub fn flag_bytes(&self) -> usize {
        self.active.iter().map(|w| w.len() * 8).sum()
    }
}
