//! Solver failures lose nothing: every failed solve climbs the recovery
//! ladder (reload into a fresh HiGHS instance, then other strategies), each
//! recovery is counted in `summary.json`, results stay identical for any
//! ranks × threads, and a solve that fails on every rung stops the job with
//! the policy and iterations so far written and a message naming the stage,
//! the state and the inflows. Failures are injected with the launcher's
//! hidden `--inject-solver-fault` option (the first R rungs of every solve
//! of stage S in iteration I fail).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workdir(tag: &str) -> PathBuf {
    common::work_dir(&format!("rec-{tag}"))
}

fn train(layout: &[&str], case: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(common::launcher_bin())
        .args(layout)
        .arg("train")
        .arg(case)
        .args([
            "--iterations",
            "4",
            "--forward-passes",
            "8",
            "--quiet",
            "--output",
        ])
        .arg(out)
        .args(extra)
        .output()
        .expect("run cobre-shm")
}

#[test]
fn every_rung_of_the_ladder_recovers_and_is_counted() {
    let dir = workdir("ladder");
    let case = dir.join("case.json");
    common::generate_case(&case, [4, 6, 3, 2, 3]);
    let names = ["reload", "reload_presolve", "reload_safe"];
    for (rungs, name) in (1..=3).zip(names) {
        let fault = format!("stage=3,iteration=2,rungs={rungs}");
        let mut seen = None;
        for layout in [["-p", "1", "--threads", "1"], ["-p", "2", "--threads", "1"]] {
            let out = dir.join(format!("r{rungs}-{}", layout[1]));
            let o = train(&layout, &case, &out, &["--inject-solver-fault", &fault]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let s = common::summary(&out);
            let rec = &s["solver"]["recoveries"];
            assert!(rec[name].as_u64().unwrap_or(0) > 0, "{fault}: {rec}");
            for other in names.iter().filter(|n| **n != name) {
                assert_eq!(rec[*other], 0, "{fault}: {rec}");
            }
            assert_eq!(s["stop_reason"], "iteration_limit");
            let got = (
                common::csv_without_clock(&out),
                std::fs::read_to_string(out.join("policy.json")).expect("policy"),
            );
            match &seen {
                None => seen = Some(got),
                Some(first) => assert!(*first == got, "{fault}: results depend on the layout"),
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_solve_that_fails_every_rung_stops_with_the_work_so_far() {
    let dir = workdir("fatal");
    let case = dir.join("case.json");
    common::generate_case(&case, [4, 6, 3, 2, 3]);
    let out = dir.join("out");
    let o = train(
        &["-p", "2"],
        &case,
        &out,
        &["--inject-solver-fault", "stage=3,iteration=2,rungs=9"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("stage 3 LP could not be solved"), "{err}");
    assert!(
        err.contains("incoming volumes [") && err.contains("inflows ["),
        "{err}"
    );
    assert!(err.contains("after every recovery"), "{err}");
    // The completed iteration and its cuts are on disk.
    let csv = std::fs::read_to_string(out.join("convergence.csv")).expect("convergence.csv");
    assert_eq!(csv.lines().count(), 2, "header and iteration 1:\n{csv}");
    let s = common::summary(&out);
    assert_eq!(s["stop_reason"], "lp_failure");
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("policy.json")).expect("policy"))
            .expect("policy.json is JSON");
    let cuts: usize = policy["policy"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|st| st["cuts"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(cuts >= 5 * 8, "the cuts of iteration 1 are kept: {cuts}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `generate --hydros 6 --stages 12 --openings 5 --thermals 3 --seed 1`,
/// 60 iterations x 16 passes: the engine on highs-sys 1.15 ended training
/// with "Highs_run failed with status -1" near iteration 37.
#[test]
fn the_case_that_ended_training_on_a_solver_error_completes() {
    let dir = workdir("h6");
    let case = dir.join("case.json");
    common::generate_case(&case, [6, 12, 5, 3, 1]);
    let out = dir.join("out");
    let o = Command::new(common::launcher_bin())
        .args(["-p", "1", "train"])
        .arg(&case)
        .args([
            "--iterations",
            "60",
            "--forward-passes",
            "16",
            "--quiet",
            "--output",
        ])
        .arg(&out)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = common::summary(&out);
    assert_eq!(s["iterations"], 60);
    assert_eq!(s["stop_reason"], "iteration_limit");
    let _ = std::fs::remove_dir_all(dir);
}
