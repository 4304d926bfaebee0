//! The engine's HiGHS wrapper before it moved to cobre-solver (commit
//! 8f38506, `src/solver.rs`), extended with `reload` (pass a new model into
//! the same instance) so it can serve as a per-thread workspace.
#![allow(dead_code, clippy::all)]

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;

use highs_sys as hs;

/// An error reported by HiGHS.
#[derive(Debug, thiserror::Error)]
pub enum LpError {
    /// A HiGHS call returned an error status.
    #[error("HiGHS call {call} failed with status {status}")]
    Call {
        /// Which call.
        call: &'static str,
        /// `kHighsStatus*` value.
        status: i32,
    },
    /// Sizes do not fit HiGHS's integer type or the arrays disagree.
    #[error("invalid LP data: {0}")]
    Data(String),
}

/// How a solve ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LpStatus {
    /// Optimal solution found.
    Optimal,
    /// The LP has no feasible point.
    Infeasible,
    /// The objective is unbounded below.
    Unbounded,
    /// Anything else (`kHighsModelStatus*` value).
    Other(i32),
}

/// LP algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Dual simplex (the default; warm starts after RHS changes).
    DualSimplex,
    /// Primal simplex.
    PrimalSimplex,
    /// Interior point with crossover.
    InteriorPoint,
}

/// Rows in compressed sparse row form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    /// Lower bound of each row.
    pub lower: Vec<f64>,
    /// Upper bound of each row.
    pub upper: Vec<f64>,
    /// Start of each row in `index`/`value`.
    pub starts: Vec<i32>,
    /// Column of each nonzero.
    pub index: Vec<i32>,
    /// Value of each nonzero.
    pub value: Vec<f64>,
}

impl Rows {
    /// Append a row `lower <= Σ value·x[index] <= upper`.
    pub fn push(
        &mut self,
        lower: f64,
        upper: f64,
        entries: impl IntoIterator<Item = (usize, f64)>,
    ) {
        self.starts.push(self.index.len() as i32);
        for (c, v) in entries {
            self.index.push(c as i32);
            self.value.push(v);
        }
        self.lower.push(lower);
        self.upper.push(upper);
    }

    /// Number of rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lower.len()
    }

    /// Whether there is no row.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lower.is_empty()
    }
}

/// A HiGHS instance holding one minimisation LP.
pub struct Lp {
    highs: NonNull<c_void>,
    cols: usize,
    rows: usize,
}

// SAFETY: a HiGHS instance has no thread affinity; `Lp` gives access only
// through `&mut self` (or `&self` for reads of finished results), so it is
// never used by two threads at once.
unsafe impl Send for Lp {}

fn check(call: &'static str, status: hs::HighsInt) -> Result<(), LpError> {
    if status == hs::kHighsStatusError {
        Err(LpError::Call { call, status })
    } else {
        Ok(())
    }
}

fn int(n: usize, what: &str) -> Result<hs::HighsInt, LpError> {
    hs::HighsInt::try_from(n)
        .map_err(|_| LpError::Data(format!("{what} = {n} exceeds HiGHS's index range")))
}

/// Value HiGHS uses for an infinite bound.
pub const INF: f64 = f64::INFINITY;

impl Lp {
    /// Create an instance holding `min cost·x` subject to `rows` and the
    /// column bounds; quiet, serial, dual simplex, no presolve.
    ///
    /// # Errors
    /// When HiGHS rejects the data.
    pub fn new(
        cost: &[f64],
        col_lower: &[f64],
        col_upper: &[f64],
        rows: &Rows,
    ) -> Result<Self, LpError> {
        let n = cost.len();
        if col_lower.len() != n
            || col_upper.len() != n
            || rows.upper.len() != rows.len()
            || rows.starts.len() != rows.len()
        {
            return Err(LpError::Data(
                "column or row arrays of different lengths".into(),
            ));
        }
        // SAFETY: Highs_create has no preconditions; a null result is handled.
        let highs = NonNull::new(unsafe { hs::Highs_create() })
            .ok_or_else(|| LpError::Data("Highs_create returned null".into()))?;
        let mut lp = Self {
            highs,
            cols: n,
            rows: 0,
        };
        lp.set_bool("output_flag", false)?;
        lp.set_string("parallel", c"off")?;
        lp.set_string("presolve", c"off")?;
        lp.set_string("solver", c"simplex")?;
        lp.set_int("simplex_strategy", 1)?;
        lp.set_int("threads", 1)?;
        let starts: Vec<hs::HighsInt> = vec![0; 0];
        // SAFETY: the instance is live; every array has the length HiGHS
        // reads (n columns, zero rows, zero nonzeros).
        let status = unsafe {
            hs::Highs_passLp(
                lp.highs.as_ptr(),
                int(n, "columns")?,
                0,
                0,
                hs::kHighsMatrixFormatRowwise,
                hs::kHighsObjSenseMinimize,
                0.0,
                cost.as_ptr(),
                col_lower.as_ptr(),
                col_upper.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                starts.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        check("Highs_passLp", status)?;
        lp.add_rows(rows)?;
        Ok(lp)
    }

    fn set_bool(&mut self, name: &str, v: bool) -> Result<(), LpError> {
        let c = std::ffi::CString::new(name).map_err(|_| LpError::Data(name.into()))?;
        // SAFETY: live instance, NUL-terminated option name.
        check("Highs_setBoolOptionValue", unsafe {
            hs::Highs_setBoolOptionValue(self.highs.as_ptr(), c.as_ptr(), hs::HighsInt::from(v))
        })
    }

    fn set_int(&mut self, name: &str, v: i32) -> Result<(), LpError> {
        let c = std::ffi::CString::new(name).map_err(|_| LpError::Data(name.into()))?;
        // SAFETY: live instance, NUL-terminated option name.
        check("Highs_setIntOptionValue", unsafe {
            hs::Highs_setIntOptionValue(self.highs.as_ptr(), c.as_ptr(), v)
        })
    }

    fn set_string(&mut self, name: &str, v: &CStr) -> Result<(), LpError> {
        let c = std::ffi::CString::new(name).map_err(|_| LpError::Data(name.into()))?;
        // SAFETY: live instance, NUL-terminated name and value.
        check("Highs_setStringOptionValue", unsafe {
            hs::Highs_setStringOptionValue(self.highs.as_ptr(), c.as_ptr(), v.as_ptr())
        })
    }

    /// Replace the model in this instance (the workspace's stage change).
    ///
    /// # Errors
    /// When HiGHS rejects the data.
    pub fn reload(
        &mut self,
        cost: &[f64],
        col_lower: &[f64],
        col_upper: &[f64],
        rows: &Rows,
    ) -> Result<(), LpError> {
        let n = cost.len();
        let starts: Vec<hs::HighsInt> = Vec::new();
        // SAFETY: live instance; n columns, zero rows, zero nonzeros.
        let status = unsafe {
            hs::Highs_passLp(
                self.highs.as_ptr(),
                int(n, "columns")?,
                0,
                0,
                hs::kHighsMatrixFormatRowwise,
                hs::kHighsObjSenseMinimize,
                0.0,
                cost.as_ptr(),
                col_lower.as_ptr(),
                col_upper.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                starts.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        check("Highs_passLp", status)?;
        self.cols = n;
        self.rows = 0;
        self.add_rows(rows)
    }

    /// The current basis: column and row status codes.
    pub fn basis(&self, cols: &mut Vec<hs::HighsInt>, rows: &mut Vec<hs::HighsInt>) {
        cols.resize(self.cols, 0);
        rows.resize(self.rows, 0);
        // SAFETY: live instance; the arrays hold num_cols and num_rows codes.
        unsafe { hs::Highs_getBasis(self.highs.as_ptr(), cols.as_mut_ptr(), rows.as_mut_ptr()) };
    }

    /// Install a basis (status codes as `basis` returns them).
    ///
    /// # Errors
    /// When HiGHS rejects it.
    pub fn set_basis(&mut self, cols: &[hs::HighsInt], rows: &[hs::HighsInt]) -> Result<(), LpError> {
        // SAFETY: live instance; the arrays hold num_cols and num_rows codes.
        check("Highs_setBasis", unsafe {
            hs::Highs_setBasis(self.highs.as_ptr(), cols.as_ptr(), rows.as_ptr())
        })
    }

    /// Number of columns.
    #[must_use]
    pub fn num_cols(&self) -> usize {
        self.cols
    }

    /// Number of rows.
    #[must_use]
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// Append rows. The current basis stays valid (new rows enter basic).
    ///
    /// # Errors
    /// When HiGHS rejects them (e.g. a column index out of range).
    pub fn add_rows(&mut self, rows: &Rows) -> Result<(), LpError> {
        if rows.is_empty() {
            return Ok(());
        }
        if rows.index.iter().any(|&c| c < 0 || c as usize >= self.cols)
            || rows.index.len() != rows.value.len()
        {
            return Err(LpError::Data("row entry refers to a missing column".into()));
        }
        // SAFETY: live instance; `lower`, `upper`, `starts` have one entry
        // per new row and `index`/`value` one per nonzero (checked above and
        // by construction in `Rows::push`).
        let status = unsafe {
            hs::Highs_addRows(
                self.highs.as_ptr(),
                int(rows.len(), "rows")?,
                rows.lower.as_ptr(),
                rows.upper.as_ptr(),
                int(rows.index.len(), "nonzeros")?,
                rows.starts.as_ptr(),
                rows.index.as_ptr(),
                rows.value.as_ptr(),
            )
        };
        check("Highs_addRows", status)?;
        self.rows += rows.len();
        Ok(())
    }

    /// Set the bounds of the given rows (the right-hand sides).
    ///
    /// # Errors
    /// When an index is out of range.
    pub fn set_row_bounds(
        &mut self,
        index: &[i32],
        lower: &[f64],
        upper: &[f64],
    ) -> Result<(), LpError> {
        if lower.len() != index.len()
            || upper.len() != index.len()
            || index.iter().any(|&r| r < 0 || r as usize >= self.rows)
        {
            return Err(LpError::Data("row bound change out of range".into()));
        }
        // SAFETY: live instance; the three arrays have `index.len()` entries.
        let status = unsafe {
            hs::Highs_changeRowsBoundsBySet(
                self.highs.as_ptr(),
                int(index.len(), "rows")?,
                index.as_ptr(),
                lower.as_ptr(),
                upper.as_ptr(),
            )
        };
        check("Highs_changeRowsBoundsBySet", status)
    }

    /// Set the bounds of one column.
    ///
    /// # Errors
    /// When the index is out of range.
    pub fn set_col_bounds(&mut self, col: usize, lower: f64, upper: f64) -> Result<(), LpError> {
        if col >= self.cols {
            return Err(LpError::Data(format!("column {col} out of range")));
        }
        // SAFETY: live instance, index in range.
        check("Highs_changeColBounds", unsafe {
            hs::Highs_changeColBounds(self.highs.as_ptr(), col as hs::HighsInt, lower, upper)
        })
    }

    /// Forget the basis and factorisation: the next solve starts cold, so
    /// its result depends on the LP alone, not on earlier solves.
    ///
    /// # Errors
    /// When HiGHS fails.
    pub fn cold_start(&mut self) -> Result<(), LpError> {
        // SAFETY: live instance.
        check("Highs_clearSolver", unsafe {
            hs::Highs_clearSolver(self.highs.as_ptr())
        })
    }

    /// Solve (warm from the current basis if there is one).
    ///
    /// # Errors
    /// When HiGHS reports an error status.
    pub fn solve(&mut self) -> Result<LpStatus, LpError> {
        // SAFETY: live instance.
        check("Highs_run", unsafe { hs::Highs_run(self.highs.as_ptr()) })?;
        // SAFETY: live instance.
        let status = unsafe { hs::Highs_getModelStatus(self.highs.as_ptr()) };
        Ok(match status {
            hs::kHighsModelStatusOptimal => LpStatus::Optimal,
            hs::kHighsModelStatusInfeasible => LpStatus::Infeasible,
            hs::kHighsModelStatusUnbounded | hs::kHighsModelStatusUnboundedOrInfeasible => {
                LpStatus::Unbounded
            }
            other => LpStatus::Other(other),
        })
    }

    /// Choose the algorithm of the next solves.
    ///
    /// # Errors
    /// When HiGHS rejects the option.
    pub fn set_algorithm(&mut self, algorithm: Algorithm) -> Result<(), LpError> {
        match algorithm {
            Algorithm::DualSimplex => {
                self.set_string("solver", c"simplex")?;
                self.set_int("simplex_strategy", 1)
            }
            Algorithm::PrimalSimplex => {
                self.set_string("solver", c"simplex")?;
                self.set_int("simplex_strategy", 4)
            }
            Algorithm::InteriorPoint => self.set_string("solver", c"ipm"),
        }
    }

    /// Objective value of the last solve.
    #[must_use]
    pub fn objective(&self) -> f64 {
        // SAFETY: live instance; a read-only query.
        unsafe { hs::Highs_getObjectiveValue(self.highs.as_ptr()) }
    }

    /// Simplex iterations of the last solve.
    #[must_use]
    pub fn iterations(&self) -> i64 {
        // SAFETY: live instance; a read-only query.
        i64::from(unsafe { hs::Highs_getSimplexIterationCount(self.highs.as_ptr()) })
    }

    /// Primal column values and row duals of the last solve into the given
    /// buffers, resized to the LP's size.
    pub fn solution(&self, cols: &mut Vec<f64>, row_duals: &mut Vec<f64>) {
        cols.resize(self.cols, 0.0);
        row_duals.resize(self.rows, 0.0);
        // SAFETY: live instance; `cols` holds num_cols and `row_duals`
        // num_rows values, exactly what HiGHS writes for the arrays it is
        // given (it skips the null ones).
        unsafe {
            hs::Highs_getSolution(
                self.highs.as_ptr(),
                cols.as_mut_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                row_duals.as_mut_ptr(),
            );
        }
    }
}

impl Drop for Lp {
    fn drop(&mut self) {
        // SAFETY: the instance was created by Highs_create and is destroyed
        // exactly once.
        unsafe { hs::Highs_destroy(self.highs.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// min x + 2y  s.t.  x + y >= b,  x <= 3,  x, y >= 0.
    fn small() -> Lp {
        let mut rows = Rows::default();
        rows.push(4.0, INF, [(0, 1.0), (1, 1.0)]);
        Lp::new(&[1.0, 2.0], &[0.0, 0.0], &[3.0, INF], &rows).expect("lp")
    }

    #[test]
    fn solves_and_reports_duals() {
        let mut lp = small();
        assert_eq!(lp.solve().expect("solve"), LpStatus::Optimal);
        assert!((lp.objective() - 5.0).abs() < 1e-9);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        lp.solution(&mut x, &mut y);
        assert!((x[0] - 3.0).abs() < 1e-9 && (x[1] - 1.0).abs() < 1e-9);
        // d objective / d rhs = 2 (y is the marginal source).
        assert!((y[0] - 2.0).abs() < 1e-9, "dual {}", y[0]);
    }

    #[test]
    fn rhs_change_added_rows_and_cold_start() {
        let mut lp = small();
        lp.solve().expect("solve");
        lp.set_row_bounds(&[0], &[2.0], &[INF]).expect("rhs");
        lp.solve().expect("solve");
        assert!((lp.objective() - 2.0).abs() < 1e-9);
        let mut rows = Rows::default();
        rows.push(1.5, INF, [(1, 1.0)]);
        lp.add_rows(&rows).expect("add");
        assert_eq!(lp.num_rows(), 2);
        lp.solve().expect("solve");
        assert!((lp.objective() - 3.5).abs() < 1e-9);
        lp.cold_start().expect("cold");
        lp.solve().expect("solve");
        assert!((lp.objective() - 3.5).abs() < 1e-9);
        lp.set_row_bounds(&[0], &[-1.0], &[-1.0]).expect("rhs");
        assert_eq!(lp.solve().expect("solve"), LpStatus::Infeasible);
    }

    #[test]
    fn bad_indices_are_errors() {
        let mut lp = small();
        assert!(lp.set_row_bounds(&[5], &[0.0], &[1.0]).is_err());
        let mut rows = Rows::default();
        rows.push(0.0, 1.0, [(9, 1.0)]);
        assert!(lp.add_rows(&rows).is_err());
    }
}
