//! Upstream Cobre studies on the shared engine, held against upstream
//! itself. The coverage set: cobre-cli 0.18's `1dtoy` template, every case
//! directory of cobre-sddp 0.18's `tests/fixtures`, and what
//! `generate-cobre-case` writes (also with each cut-selection rule and with
//! CVaR). On every case, `cobre-shm run` on the shared engine at 1 and 2
//! ranks gives the lower bound of every iteration and the simulated costs of
//! upstream's own training (`--engine upstream`, the same upstream code in
//! this binary) within 1e-6 relative; it is bit for bit wherever the LPs are
//! not degenerate in a way HiGHS resolves differently, and the test prints
//! the largest difference seen. With stock cobre-cli 0.18 installed
//! (`scripts/install-cobre-cli.sh`, or `COBRE_CLI`), the same against stock
//! `cobre run`, and stock `cobre run` loads and simulates the policy the
//! shared engine wrote; without it those parts skip with a notice. A study
//! the shared engine does not model falls back to upstream's, saying which
//! field.
//!
//! The registry cases are read from cargo's sources of cobre-sddp and
//! cobre-cli 0.18 (`scripts/fetch-upstream-cases.sh` fetches them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::launcher_bin;

fn workdir(tag: &str) -> PathBuf {
    common::work_dir(&format!("up-{tag}"))
}

/// The source directory of registry crate `krate` (`name-version`).
fn registry_crate(krate: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let src = home.join("registry/src");
    std::fs::read_dir(&src)
        .into_iter()
        .flatten()
        .flatten()
        .map(|index| index.path().join(krate))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "{krate} is not under {}: run scripts/fetch-upstream-cases.sh (the coverage \
                 cases live there)",
                src.display()
            )
        })
}

/// Copy directory `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

/// Edit `config.json` of case `dir`.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("config")).expect("JSON");
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).expect("JSON")).expect("write");
}

/// The coverage set, copied under `dir`: `(name, case directory)`.
fn coverage(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut cases = Vec::new();
    let toy = dir.join("1dtoy");
    copy_dir(
        &registry_crate("cobre-cli-0.18.0").join("templates/1dtoy"),
        &toy,
    );
    // 128 iterations of one forward pass: keep the run short.
    edit_config(&toy, |c| {
        c["training"]["stopping_rules"] =
            serde_json::json!([{"type": "iteration_limit", "limit": 24}]);
    });
    cases.push(("1dtoy".to_string(), toy));
    let fixtures = registry_crate("cobre-sddp-0.18.0").join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .flatten()
        .filter(|e| e.path().join("config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        let d = dir.join(&n);
        copy_dir(&fixtures.join(&n), &d);
        cases.push((n, d));
    }
    let generated = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let d = dir.join(name);
        let o = Command::new(launcher_bin())
            .arg("generate-cobre-case")
            .arg(&d)
            .args(["--iterations", "10", "--scenarios", "8"])
            .output()
            .expect("generate-cobre-case");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        edit_config(&d, edit);
        (name.to_string(), d)
    };
    cases.push(generated("generated", &|_| {}));
    for (name, method) in [
        (
            "generated_level1",
            serde_json::json!({"method": "level1", "check_frequency": 3}),
        ),
        (
            "generated_lml1",
            serde_json::json!({"method": "lml1", "check_frequency": 2}),
        ),
        (
            "generated_domination",
            serde_json::json!({"method": "domination", "domination_tolerance": 1e-8, "check_frequency": 3}),
        ),
    ] {
        cases.push(generated(name, &|c| {
            c["training"]["cut_selection"] = serde_json::json!({ "selection": method.clone() });
        }));
    }
    cases
}

/// Run the launcher to its end; it must succeed and leave nothing in
/// `/dev/shm`.
fn run(args: &[&str], case: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = common::launcher_run(args, case, out, extra);
    assert!(
        o.status.success(),
        "{args:?} run {}: {}",
        case.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json(path: &Path) -> serde_json::Value {
    common::json_file(path)
}

/// The lower bound of every iteration in `out`'s `training/convergence.parquet`.
fn lower_bounds(out: &Path) -> Vec<f64> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(out.join("training/convergence.parquet")).expect("parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut lbs = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let col = batch
            .column_by_name("lower_bound")
            .expect("lower_bound column");
        let values = col
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .expect("f64 lower bounds");
        lbs.extend(values.iter().map(|v| v.unwrap_or(f64::NAN)));
    }
    lbs
}

/// LP solves per (iteration, phase) in `out`'s
/// `training/solver/iterations.parquet`, summed over stages and ranks.
fn solves_by_phase(out: &Path) -> std::collections::BTreeMap<(i32, String), u64> {
    use arrow::array::{Array, Int32Array, StringArray, UInt32Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let path = out.join("training/solver/iterations.parquet");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut sums = std::collections::BTreeMap::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let col = |name: &str| batch.column_by_name(name).expect(name).clone();
        let (it, ph, n) = (col("iteration"), col("phase"), col("lp_solves"));
        let it = it.as_any().downcast_ref::<Int32Array>().expect("iteration");
        let ph = ph.as_any().downcast_ref::<StringArray>().expect("phase");
        let n = n.as_any().downcast_ref::<UInt32Array>().expect("lp_solves");
        for i in 0..batch.num_rows() {
            if it.is_valid(i) {
                *sums
                    .entry((it.value(i), ph.value(i).to_string()))
                    .or_insert(0) += u64::from(n.value(i));
            }
        }
    }
    sums
}

/// Largest relative difference between two traces of the same length.
fn largest_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "iterations: {a:?} vs {b:?}");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1.0))
        .fold(0.0, f64::max)
}

/// The simulated mean cost in `out` (NaN for a study without simulation).
fn mean_cost(out: &Path) -> f64 {
    let path = out.join("simulation/metadata.json");
    if !path.is_file() {
        return f64::NAN;
    }
    json(&path)["cost"]["mean_cost"]
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// Stock cobre-cli, when installed (`COBRE_CLI`, else the place
/// `scripts/install-cobre-cli.sh` puts it).
fn stock_cobre() -> Option<PathBuf> {
    let cli = std::env::var_os("COBRE_CLI")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/cobre-shm/cobre-cli/bin/cobre"))
        })?;
    if cli.is_file() {
        Some(cli)
    } else {
        eprintln!(
            "NOTICE: stock cobre-cli 0.18 not installed ({}): the comparisons with `cobre run` \
             are skipped (scripts/install-cobre-cli.sh installs it)",
            cli.display()
        );
        None
    }
}

#[test]
fn every_coverage_case_trains_like_upstream_on_one_and_two_ranks() {
    let dir = workdir("coverage");
    let stock = stock_cobre();
    let mut worst: f64 = 0.0;
    for (name, case) in coverage(&dir) {
        let reference = dir.join(format!("{name}.upstream"));
        run(
            &["-q", "-p", "1", "--threads", "1"],
            &case,
            &reference,
            &["--engine", "upstream"],
        );
        assert_eq!(
            json(&reference.join("training/metadata.json"))["engine"],
            "upstream",
            "{name}"
        );
        let want = lower_bounds(&reference);
        assert!(!want.is_empty(), "{name}: no iteration");
        for ranks in ["1", "2"] {
            let out = dir.join(format!("{name}.shared{ranks}"));
            let o = run(&["-p", ranks, "--threads", "1"], &case, &out, &[]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("does not model"), "{name}: fell back: {err}");
            assert_eq!(
                json(&out.join("training/metadata.json"))["engine"],
                "shared",
                "{name}"
            );
            let got = lower_bounds(&out);
            let d = largest_difference(&want, &got);
            assert!(
                d <= 1e-6,
                "{name} at {ranks} rank(s): lower bounds differ by {d:e}: {want:?} vs {got:?}"
            );
            worst = worst.max(d);
            let training = json(&out.join("training/metadata.json"));
            let trained = &training["cobre_shm"]["training_memory"]["node_peak_pss_bytes"];
            assert!(
                trained.as_u64() > Some(0),
                "{name}: training memory {trained}"
            );
            let sim = out.join("simulation/metadata.json");
            if sim.is_file() && json(&sim)["scenarios"]["completed"].as_u64() > Some(0) {
                let v = &json(&sim)["cobre_shm"]["simulation_memory"]["node_pss_bytes"];
                assert!(v.as_u64() > Some(0), "{name}: simulation memory {v}");
            }
            assert_eq!(
                solves_by_phase(&reference),
                solves_by_phase(&out),
                "{name} at {ranks} rank(s): LP solves per iteration and phase"
            );
            let (a, b) = (mean_cost(&reference), mean_cost(&out));
            if a.is_finite() || b.is_finite() {
                let rel = (a - b).abs() / a.abs().max(1.0);
                assert!(
                    rel <= 1e-6,
                    "{name} at {ranks} rank(s): simulated mean {b} vs {a}"
                );
            }
        }
        if let Some(cli) = &stock {
            let theirs = dir.join(format!("{name}.stock"));
            let o = Command::new(cli)
                .arg("run")
                .arg(&case)
                .args(["--quiet", "--threads", "1", "--output"])
                .arg(&theirs)
                .output()
                .expect("cobre run");
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let d = largest_difference(
                &lower_bounds(&theirs),
                &lower_bounds(&dir.join(format!("{name}.shared2"))),
            );
            assert!(
                d <= 1e-6,
                "{name}: stock cobre run's lower bounds differ by {d:e}"
            );
            worst = worst.max(d);
        }
        println!(
            "{name}: {} iterations, lower bounds within {worst:e}",
            want.len()
        );
    }
    println!("largest relative difference of any lower bound: {worst:e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stock_cobre_loads_and_simulates_the_policy_the_shared_engine_wrote() {
    let Some(cli) = stock_cobre() else {
        return;
    };
    let dir = workdir("policy");
    let case = dir.join("case");
    let o = Command::new(launcher_bin())
        .arg("generate-cobre-case")
        .arg(&case)
        .args(["--iterations", "6", "--scenarios", "12"])
        .output()
        .expect("generate");
    assert!(o.status.success());
    let ours = dir.join("ours");
    run(&["-q", "-p", "2", "--threads", "1"], &case, &ours, &[]);
    // Simulation only, from the policy directory the shared engine wrote.
    edit_config(&case, |c| {
        c["training"]["enabled"] = serde_json::json!(false);
    });
    let o = Command::new(&cli)
        .arg("run")
        .arg(&case)
        .args(["--quiet", "--threads", "1", "--output"])
        .arg(&ours)
        .output()
        .expect("cobre run");
    assert!(
        o.status.success(),
        "stock cobre run refused the policy: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let sim = json(&ours.join("simulation/metadata.json"));
    assert_eq!(sim["scenarios"]["completed"].as_u64(), Some(12), "{sim}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_study_the_shared_engine_does_not_model_falls_back_saying_which_field() {
    let dir = workdir("fallback");
    let case = dir.join("case");
    let o = Command::new(launcher_bin())
        .arg("generate-cobre-case")
        .arg(&case)
        .args(["--iterations", "4", "--scenarios", "0"])
        .output()
        .expect("generate");
    assert!(o.status.success());
    edit_config(&case, |c| {
        c["training"]["cut_selection"] = serde_json::json!({"selection": {"method": "dynamic"}});
    });
    let out = dir.join("out");
    let o = run(&["-p", "1"], &case, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not model training.cut_selection")
            && err.contains("a copy of the opening tree, cut pool and stage LPs in every rank"),
        "{err}"
    );
    assert_eq!(
        json(&out.join("training/metadata.json"))["engine"],
        "upstream"
    );
    let _ = std::fs::remove_dir_all(dir);
}
