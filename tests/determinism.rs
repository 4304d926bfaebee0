//! Bit-identical training for (ranks × threads) = 1×1, 1×2, 2×1, 4×1, 2×2,
//! with real rank processes started by the launcher, plus the same run with
//! private copies (`--replicate`) and in-process (`--backend local`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn workdir(tag: &str) -> PathBuf {
    common::work_dir(&format!("det-{tag}"))
}

fn run(args: &[&str], case: &Path, out: &Path) {
    let o = Command::new(common::launcher_bin())
        .args(args)
        .arg(case)
        .args([
            "--iterations",
            "6",
            "--forward-passes",
            "10",
            "--seed",
            "5",
            "--quiet",
            "--output",
        ])
        .arg(out)
        .output()
        .expect("run cobre-shm");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Everything that must be bit-identical: convergence.csv without the
/// wall-clock column, policy.json, and the final bounds.
fn fingerprint(out: &Path) -> (String, String, String) {
    let policy = std::fs::read_to_string(out.join("policy.json")).expect("policy.json");
    (
        common::csv_without_clock(out),
        policy,
        common::summary(out)["final"].to_string(),
    )
}

#[test]
fn results_are_bit_identical_for_any_ranks_and_threads() {
    let dir = workdir("matrix");
    let case = dir.join("case.json");
    common::generate_case(&case, [3, 5, 4, 2, 8]);
    let reference_dir = dir.join("1x1");
    run(
        &["-p", "1", "--threads", "1", "train"],
        &case,
        &reference_dir,
    );
    let reference = fingerprint(&reference_dir);
    assert!(reference.1.len() > 1000, "the policy has cuts");
    // Cut selection is on and really leaves cuts out of the stage LPs.
    let sel = &common::summary(&reference_dir)["cut_selection"];
    assert_eq!(sel["rule"], "level1");
    let (active, pool) = (
        sel["active_cuts_total"].as_u64().expect("active"),
        sel["pool_cuts_total"].as_u64().expect("pool"),
    );
    assert!(active > 0 && active < pool, "active {active} of {pool}");
    for (ranks, threads) in [(1, 2), (2, 1), (4, 1), (2, 2)] {
        let out = dir.join(format!("{ranks}x{threads}"));
        run(
            &[
                "-p",
                &ranks.to_string(),
                "--threads",
                &threads.to_string(),
                "train",
            ],
            &case,
            &out,
        );
        let got = fingerprint(&out);
        assert_eq!(
            got.0, reference.0,
            "convergence.csv differs at {ranks}x{threads}"
        );
        assert!(
            got.1 == reference.1,
            "policy.json differs at {ranks}x{threads}"
        );
        assert_eq!(
            got.2, reference.2,
            "final bounds differ at {ranks}x{threads}"
        );
        let s = common::summary(&out);
        assert_eq!(
            (s["ranks"].as_u64(), s["threads"].as_u64()),
            (Some(ranks), Some(threads))
        );
        for r in s["shared_regions"].as_array().expect("regions") {
            assert_eq!(r["one_copy_per_node"], true, "{r}");
        }
    }
    // Private copies compute the same thing.
    let out = dir.join("replicate");
    run(&["-p", "2", "train", "--replicate"], &case, &out);
    assert_eq!(fingerprint(&out), reference, "--replicate changes results");
    for r in common::summary(&out)["shared_regions"]
        .as_array()
        .expect("regions")
    {
        assert_eq!(r["one_copy_per_node"], false, "{r}");
    }
    // One process, no launcher.
    let out = dir.join("local");
    run(
        &["--threads", "2", "train", "--backend", "local"],
        &case,
        &out,
    );
    assert_eq!(
        fingerprint(&out),
        reference,
        "--backend local changes results"
    );
    let _ = std::fs::remove_dir_all(dir);
}
