//! The communicator crate links no solver, so a program can link it next to
//! upstream Cobre's own HiGHS (cobre-solver 0.18 bundles HiGHS 1.13.1).
//!
//! When `cobre-shm` depended on `highs-sys` 1.15, a binary that also linked
//! cobre-solver ended up with cobre-solver calling HiGHS 1.15 and failing
//! its first LP ("HiGHS configuration failed: simplex_initial_condition_check").
//! These tests catch that coming back: the dependency tree of `cobre-shm`
//! holds no solver crate, and this binary — which links both `cobre-shm` and
//! cobre-solver — solves an LP through cobre-solver on every rank of a
//! 2-rank shm job, reports the HiGHS that cobre-solver was built with, and
//! agrees on the objective through the shm communicator.

mod common;

use cobre_comm::{Communicator, ReduceOp};
use cobre_solver::{HighsSolver, SolverInterface, StageTemplate};

/// HiGHS version bundled by cobre-solver 0.18 (its `vendor/HiGHS/Version.txt`).
const COBRE_SOLVER_HIGHS: &str = "1.13.1";

/// Crate names that would bring a solver (and its C++ symbols) along.
const SOLVER_CRATES: [&str; 4] = ["highs-sys", "highs", "cobre-solver", "coin_cbc"];

#[test]
fn communicator_crate_depends_on_no_solver() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "cobre-shm",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .args([
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"),
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("cobre-comm"), "unexpected tree:\n{tree}");
    let solvers: Vec<&str> = tree
        .lines()
        .filter(|l| {
            let name = l.split_whitespace().next().unwrap_or("");
            SOLVER_CRATES.contains(&name)
        })
        .collect();
    assert!(
        solvers.is_empty(),
        "cobre-shm (the communicator) must not depend on a solver: {solvers:?}"
    );
}

/// min x + 2y  s.t.  x + y >= 4, x <= 3, x, y >= 0  (optimum 5), as a CSC
/// template scaled by `k` (so ranks solve different LPs).
fn lp(k: f64) -> StageTemplate {
    StageTemplate {
        num_cols: 2,
        num_rows: 1,
        num_nz: 2,
        col_starts: vec![0, 1, 2],
        row_indices: vec![0, 0],
        values: vec![1.0, 1.0],
        col_lower: vec![0.0, 0.0],
        col_upper: vec![3.0, f64::INFINITY],
        objective: vec![k, 2.0 * k],
        row_lower: vec![4.0],
        row_upper: vec![f64::INFINITY],
        n_state: 0,
        col_scale: Vec::new(),
        row_scale: Vec::new(),
    }
}

#[test]
#[ignore = "rank process entry point; run through the other tests"]
fn rank_entry() {
    if std::env::var("COBRE_TEST_CASE").is_err() {
        return;
    }
    let comm = cobre_shm::create_communicator().expect("shm communicator");
    assert_eq!(comm.backend_name(), "shm");
    assert_eq!(cobre_solver::highs_version(), COBRE_SOLVER_HIGHS);
    let mut solver = HighsSolver::new().expect("cobre-solver's HiGHS must initialise");
    assert_eq!(
        solver.solver_name_version(),
        format!("HiGHS {COBRE_SOLVER_HIGHS}")
    );
    let k = (comm.rank() + 1) as f64;
    solver.load_model(&lp(k));
    let objective = solver.solve(None).expect("optimal").objective;
    assert!((objective - 5.0 * k).abs() < 1e-9, "objective {objective}");
    let mut total = [0.0];
    comm.allreduce(&[objective], &mut total, ReduceOp::Sum)
        .expect("allreduce");
    let n = comm.size() as f64;
    assert!((total[0] - 5.0 * n * (n + 1.0) / 2.0).abs() < 1e-9);
    println!(
        "rank {} solved with HiGHS {}",
        comm.rank(),
        cobre_solver::highs_version()
    );
}

#[test]
fn cobre_solver_solves_next_to_cobre_shm_at_two_ranks() {
    let out = common::run_case("rank_entry", "highs", 2, "shm", &[]);
    for o in &out {
        assert!(
            o.stdout
                .contains(&format!("solved with HiGHS {COBRE_SOLVER_HIGHS}")),
            "{}",
            o.describe()
        );
    }
}
