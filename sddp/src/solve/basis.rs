//! Stored bases: the simplex basis a trajectory left at a stage, kept so
//! that its next solve of that stage starts from it after a fresh load.
//!
//! Cut rows are keyed by pool slot, not by position, because the active set
//! changes between solves. Restoring copies the columns and the structural
//! rows, gives every cut row now loaded the status its slot had (a cut that
//! is new enters basic), and then, when that leaves more basic variables
//! than rows, makes the basic rows nearest the end non-basic at their lower
//! bound until the count is right. With fewer basic variables than rows the
//! basis is unusable and the solve starts cold.
#![forbid(unsafe_code)]

use cobre_solver::{Basis, BasisStatus};

/// One stored basis.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    /// Status of every column of the LP it was taken from.
    pub cols: Vec<BasisStatus>,
    /// Status of every row of that LP.
    pub rows: Vec<BasisStatus>,
    /// Structural rows of that LP (the cut rows follow them).
    pub structural: usize,
    /// Pool slot of every cut row, in row order.
    pub slots: Vec<u32>,
}

impl Entry {
    /// Take the entry from `basis`, of an LP whose rows are `structural`
    /// structural rows followed by the cut rows of `slots`.
    pub fn capture(&mut self, basis: &Basis, structural: usize, slots: &[u32]) {
        self.cols.clone_from(&basis.col_status);
        self.rows.clone_from(&basis.row_status);
        self.structural = structural;
        self.slots.clear();
        self.slots.extend_from_slice(slots);
    }

    /// Forget the basis (the next solve starts cold).
    pub fn clear(&mut self) {
        self.cols.clear();
        self.rows.clear();
        self.slots.clear();
    }

    /// Whether nothing was captured yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// Bytes held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        (self.cols.capacity() + self.rows.capacity()) * size_of::<BasisStatus>()
            + self.slots.capacity() * 4
    }

    /// Write into `out` the basis for an LP of `cols` columns, `structural`
    /// structural rows and the cut rows of `slots` (in row order); `lookup`
    /// is scratch. Returns `false` when no consistent basis can be made
    /// (nothing stored, or too few basic variables): then solve cold.
    pub fn restore(
        &self,
        cols: usize,
        structural: usize,
        slots: &[u32],
        lookup: &mut Vec<u32>,
        out: &mut Basis,
    ) -> bool {
        if self.is_empty() {
            return false;
        }
        out.col_status.clear();
        out.col_status.extend_from_slice(&self.cols);
        out.col_status.resize(cols, BasisStatus::Basic);
        out.row_status.clear();
        let stored_rows = &self.rows;
        out.row_status
            .extend_from_slice(&stored_rows[..structural.min(stored_rows.len())]);
        out.row_status.resize(structural, BasisStatus::Basic);
        // Position of each stored slot among the stored cut rows.
        const NONE: u32 = u32::MAX;
        let top = self
            .slots
            .iter()
            .chain(slots)
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1);
        lookup.clear();
        lookup.resize(top, NONE);
        for (pos, &slot) in self.slots.iter().enumerate() {
            lookup[slot as usize] = pos as u32;
        }
        for &slot in slots {
            let st = match lookup[slot as usize] {
                NONE => BasisStatus::Basic,
                pos => stored_rows
                    .get(self.structural + pos as usize)
                    .copied()
                    .unwrap_or(BasisStatus::Basic),
            };
            out.row_status.push(st);
        }
        let basic = |v: &[BasisStatus]| v.iter().filter(|&&s| s == BasisStatus::Basic).count();
        let rows = out.row_status.len();
        let have = basic(&out.col_status) + basic(&out.row_status);
        if have < rows {
            return false;
        }
        let mut excess = have - rows;
        for st in out.row_status.iter_mut().rev() {
            if excess == 0 {
                break;
            }
            if *st == BasisStatus::Basic {
                *st = BasisStatus::Lower;
                excess -= 1;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BasisStatus::{Basic as B, Lower as L, Upper as U};

    fn basis(cols: &[BasisStatus], rows: &[BasisStatus]) -> Basis {
        Basis {
            col_status: cols.to_vec(),
            row_status: rows.to_vec(),
        }
    }

    #[test]
    fn cut_rows_follow_their_slots() {
        // 3 columns, 1 structural row, cuts at slots 4, 7, 9; slot 7 binding.
        let b = basis(&[B, L, U], &[B, B, L, B]);
        let mut e = Entry::default();
        e.capture(&b, 1, &[4, 7, 9]);
        // Slot 4 dropped, slot 12 new: same count, 7 keeps its status.
        let (mut out, mut lookup) = (Basis::new(0, 0), Vec::new());
        assert!(e.restore(3, 1, &[7, 9, 12], &mut lookup, &mut out));
        assert_eq!(out.row_status, vec![B, L, B, B]);
        assert_eq!(out.col_status, vec![B, L, U]);
    }

    #[test]
    fn excess_basic_rows_are_demoted_from_the_end() {
        let b = basis(&[B, L, U], &[B, B, L, B]);
        let mut e = Entry::default();
        e.capture(&b, 1, &[4, 7, 9]);
        let (mut out, mut lookup) = (Basis::new(0, 0), Vec::new());
        // Slot 7 (non-basic) is gone: one basic too many.
        assert!(e.restore(3, 1, &[4, 9, 12], &mut lookup, &mut out));
        assert_eq!(out.row_status, vec![B, B, B, L]);
        let basic = out
            .col_status
            .iter()
            .chain(&out.row_status)
            .filter(|&&s| s == B)
            .count();
        assert_eq!(basic, out.row_status.len());
        // Too few basic variables: unusable.
        let mut e = Entry::default();
        e.capture(&basis(&[L, L, U], &[L, B]), 1, &[3]);
        assert!(!e.restore(3, 1, &[3, 5], &mut lookup, &mut out));
        assert!(!Entry::default().restore(3, 1, &[], &mut lookup, &mut out));
    }
}
