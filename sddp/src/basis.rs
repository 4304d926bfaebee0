//! The basis cache: the final simplex basis of each (stage, warm group),
//! kept so that a group's next visit to a stage warm-starts after a reload.
//!
//! Cut rows are keyed by pool slot, not by position, because the active set
//! changes between visits. Only non-basic cut rows are stored (a basis has
//! at most as many non-basic rows as the LP has columns); a cut that is new
//! since the entry was taken enters basic, so the number of basic variables
//! still equals the number of rows. A cut that was non-basic and is no
//! longer loaded leaves one basic too many; the newest basic cut rows are
//! then made non-basic at their bound until the count is right again.
#![forbid(unsafe_code)]

use cobre_solver::{Basis, BasisStatus};

/// One stored basis.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    /// Status of every column.
    pub cols: Vec<BasisStatus>,
    /// Status of every structural row.
    pub rows: Vec<BasisStatus>,
    /// `(slot, status)` of every non-basic cut row, by ascending slot.
    pub cuts: Vec<(u32, BasisStatus)>,
}

impl Entry {
    /// Take the entry from a basis of an LP whose rows are `structural`
    /// structural rows followed by the cut rows of `slots`.
    pub fn capture(&mut self, basis: &Basis, structural: usize, slots: &[u32]) {
        self.cols.clear();
        self.cols.extend_from_slice(&basis.col_status);
        self.rows.clear();
        self.rows.extend_from_slice(&basis.row_status[..structural]);
        self.cuts.clear();
        for (&slot, &st) in slots.iter().zip(&basis.row_status[structural..]) {
            if st != BasisStatus::Basic {
                self.cuts.push((slot, st));
            }
        }
    }

    /// Whether nothing was captured yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// Bytes held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.cols.capacity() + self.rows.capacity() + self.cuts.capacity() * 8
    }

    /// Write into `out` the basis for an LP with the same columns and
    /// structural rows and the cut rows of `slots` (ascending). Returns
    /// `false` when no consistent basis can be made (then solve cold).
    pub fn restore(&self, slots: &[u32], out: &mut Basis) -> bool {
        if self.is_empty() {
            return false;
        }
        out.col_status.clear();
        out.col_status.extend_from_slice(&self.cols);
        out.row_status.clear();
        out.row_status.extend_from_slice(&self.rows);
        let mut stored = self.cuts.iter().peekable();
        for &slot in slots {
            while stored.peek().is_some_and(|(s, _)| *s < slot) {
                stored.next();
            }
            let st = match stored.peek() {
                Some(&&(s, st)) if s == slot => st,
                _ => BasisStatus::Basic,
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
        let first_cut = self.rows.len();
        for st in out.row_status[first_cut..].iter_mut().rev() {
            if excess == 0 {
                break;
            }
            if *st == BasisStatus::Basic {
                *st = BasisStatus::Lower;
                excess -= 1;
            }
        }
        excess == 0
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
        assert_eq!(e.cuts, vec![(7, L)]);
        // Slot 4 dropped, slot 12 new: same count, 7 keeps its status.
        let mut out = Basis::new(0, 0);
        assert!(e.restore(&[7, 9, 12], &mut out));
        assert_eq!(out.row_status, vec![B, L, B, B]);
        assert_eq!(out.col_status, vec![B, L, U]);
    }

    #[test]
    fn dropping_a_binding_cut_demotes_the_newest_basic_cut() {
        let b = basis(&[B, L, U], &[B, B, L, B]);
        let mut e = Entry::default();
        e.capture(&b, 1, &[4, 7, 9]);
        let mut out = Basis::new(0, 0);
        // Slot 7 (non-basic) is gone: one basic too many.
        assert!(e.restore(&[4, 9, 12], &mut out));
        assert_eq!(out.row_status, vec![B, B, B, L]);
        let basic = out
            .col_status
            .iter()
            .chain(&out.row_status)
            .filter(|&&s| s == B)
            .count();
        assert_eq!(basic, out.row_status.len());
        // Nothing to demote: give up (solve cold).
        assert!(!e.restore(&[], &mut out));
    }
}
