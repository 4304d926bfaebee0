//! `cobre-shm run CASE_DIR`: an upstream Cobre case directory (written here
//! by `cobre-shm generate-cobre-case`) trained and simulated by upstream
//! cobre-sddp on 1 and 2 shm ranks gives the same bounds, cuts and costs;
//! `metadata.json` records the shm backend and the HiGHS this binary was
//! built with; bad case directories end in one clear line and leave nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::launcher_bin;

fn workdir(tag: &str) -> PathBuf {
    common::work_dir(&format!("run-{tag}"))
}

fn write_case(dir: &Path, extra: &[&str]) {
    let o = Command::new(launcher_bin())
        .arg("generate-cobre-case")
        .arg(dir)
        .args(extra)
        .output()
        .expect("generate-cobre-case");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn run(args: &[&str], case: &Path, out: &Path) -> Output {
    common::launcher_run(args, case, out, &[])
}

fn json(path: &Path) -> serde_json::Value {
    common::json_file(path)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `a/sub` exists under `b/sub` with the same bytes (and
/// there is at least one); `context` ends each failure message.
fn assert_same_files(a: &Path, b: &Path, sub: &str, context: &str) {
    let files = files_under(&a.join(sub));
    assert!(!files.is_empty(), "{sub}");
    for f in files {
        let rel = f.strip_prefix(a).expect("prefix");
        assert_eq!(
            std::fs::read(&f).expect("read"),
            std::fs::read(b.join(rel)).expect("read"),
            "{} differs{context}",
            rel.display()
        );
    }
}

#[test]
fn every_split_of_ranks_and_threads_gives_the_same_study() {
    let dir = workdir("same");
    let case = dir.join("case");
    write_case(
        &case,
        &["--hydros", "3", "--stages", "5", "--iterations", "6"],
    );
    let mut results = Vec::new();
    // 4 × 1 outnumbers this machine's CPUs: it must still give the same study.
    let splits = [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2"), ("4", "1")];
    for (ranks, threads) in splits {
        let out = dir.join(format!("out-{ranks}x{threads}"));
        let o = run(&["-q", "-p", ranks, "--threads", threads], &case, &out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            o.stdout.is_empty() && o.stderr.is_empty(),
            "-q printed: {o:?}"
        );
        for marker in ["training/_SUCCESS", "simulation/_SUCCESS"] {
            assert!(out.join(marker).exists(), "{marker} missing");
        }
        let meta = json(&out.join("training/metadata.json"));
        assert_eq!(meta["distribution"]["backend"], "shm", "{meta}");
        assert_eq!(
            meta["distribution"]["world_size"].as_u64(),
            Some(ranks.parse().expect("n"))
        );
        assert_eq!(meta["iterations"]["completed"].as_u64(), Some(6));
        // The HiGHS that solved is the one this program links (cobre-solver's).
        assert_eq!(meta["solver"], "highs");
        assert_eq!(
            meta["solver_version"].as_str(),
            Some(cobre_solver::active_solver_version().as_str())
        );
        let sim = json(&out.join("simulation/metadata.json"));
        results.push((meta["bounds"].clone(), sim["cost"].clone(), out));
    }
    let lb = results[0].0["final_lower_bound"].as_f64().expect("bound");
    assert!(lb.is_finite() && lb > 0.0, "{lb}");
    for (r, (ranks, threads)) in results.iter().zip(splits).skip(1) {
        let at = format!(" at {ranks} x {threads}");
        assert_eq!(results[0].0, r.0, "bounds differ{at}");
        assert_eq!(results[0].1, r.1, "simulated costs differ{at}");
        // The cuts themselves, byte for byte.
        assert_same_files(&results[0].2, &r.2, "policy/cuts", &at);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn progress_goes_to_stderr_without_escape_bytes() {
    let dir = workdir("log");
    let case = dir.join("case");
    write_case(&case, &["--iterations", "2", "--scenarios", "0"]);
    let o = run(&["-p", "2"], &case, &dir.join("out"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("iteration 2: lower bound"), "{err}");
    assert!(err.contains("shm backend"), "{err}");
    assert!(!o.stderr.contains(&0x1b) && !o.stdout.contains(&0x1b));
    // Simulation disabled: none written, none claimed.
    assert!(!dir.join("out/simulation/_SUCCESS").exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// One line naming the problem, a failing exit code, no segment left.
fn assert_clear_failure(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "succeeded: {err}");
    assert!(o.status.code().is_some(), "ended by a signal: {o:?}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_case_directories_end_in_a_clear_error() {
    let dir = workdir("bad");
    let out = dir.join("out");
    let o = run(&["-p", "2"], &dir.join("missing"), &out);
    assert_clear_failure(&o, "no config.json");

    // Invalid JSON in config.json: rank 0 fails loading, rank 1 follows.
    let case = dir.join("broken");
    write_case(&case, &[]);
    std::fs::write(case.join("config.json"), "{ not json").expect("write");
    let o = run(&["-p", "2"], &case, &out);
    assert_clear_failure(&o, "cannot load the case");
    assert!(
        String::from_utf8_lossy(&o.stderr).lines().count() <= 3,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A feature of `cobre run` this runner does not carry: refused by name.
    let case = dir.join("warm");
    write_case(&case, &[]);
    let mut config = json(&case.join("config.json"));
    config["policy"] = serde_json::json!({ "mode": "warm_start", "path": "prior" });
    std::fs::write(case.join("config.json"), config.to_string()).expect("write");
    let o = run(&["-p", "2"], &case, &out);
    assert_clear_failure(&o, "policy.mode");

    // Absurd sizes: refused before upstream allocates (it would abort).
    let case = dir.join("huge");
    write_case(&case, &[]);
    let base = json(&case.join("config.json"));
    let mut config = base.clone();
    config["training"]["selection"]["forward_passes"] = serde_json::json!(1_000_000_000u64);
    std::fs::write(case.join("config.json"), config.to_string()).expect("write");
    let o = run(&["-p", "2"], &case, &out);
    assert_clear_failure(&o, "the study needs at least");
    let mut config = base.clone();
    config["training"]["stopping_rules"][0]["limit"] = serde_json::json!(4_294_967_295u64);
    std::fs::write(case.join("config.json"), config.to_string()).expect("write");
    let o = run(&["-p", "2"], &case, &out);
    assert_clear_failure(&o, "iteration_limit");
    std::fs::write(case.join("config.json"), base.to_string()).expect("write");
    let mut stages = json(&case.join("stages.json"));
    stages["stages"][0]["num_openings"] = serde_json::json!(100_000_000u64);
    std::fs::write(case.join("stages.json"), stages.to_string()).expect("write");
    let o = run(&["-p", "2"], &case, &out);
    assert_clear_failure(&o, "opening pairs");

    // A missing system file.
    let case = dir.join("nosystem");
    write_case(&case, &[]);
    std::fs::remove_file(case.join("system/hydros.json")).expect("rm");
    let o = run(&["-p", "2"], &case, &out);
    assert_clear_failure(&o, "hydros");
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGTERM to the launcher during training (a scheduler's time limit):
/// training stops at the next iteration boundary with its outputs written,
/// simulation is skipped and recorded as such, and nothing is left behind.
#[test]
fn sigterm_during_training_keeps_the_completed_iterations() {
    use std::io::{BufRead, BufReader};
    let dir = workdir("sigterm");
    let case = dir.join("case");
    write_case(
        &case,
        &[
            "--hydros",
            "12",
            "--stages",
            "24",
            "--iterations",
            "500",
            "--scenarios",
            "4",
        ],
    );
    let out = dir.join("out");
    let mut child = Command::new(launcher_bin())
        .args(["-p", "2", "--threads", "1", "run"])
        .arg(&case)
        .arg("--output")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        let started = line.starts_with("iteration 2:");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.starts_with("iteration 2:")),
        "{seen:?}"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(143), "{seen:?} {rest:?}");
    let meta = json(&out.join("training/metadata.json"));
    assert_eq!(
        meta["convergence"]["termination_reason"], "graceful_shutdown",
        "{meta}"
    );
    let done = meta["iterations"]["completed"]
        .as_u64()
        .expect("iterations");
    assert!((2..500).contains(&done), "{done}");
    assert!(out.join("training/_SUCCESS").exists());
    assert!(!files_under(&out.join("policy/cuts")).is_empty());
    let sim = json(&out.join("simulation/metadata.json"));
    assert_eq!(sim["scenarios"]["completed"].as_u64(), Some(0), "{sim}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Against stock cobre-cli 0.18 (`COBRE_CLI=/path/to/cobre`; skipped with a
/// notice without it: installing it takes minutes): the same case gives the
/// same bounds, simulated costs and policy cuts and bases, byte for byte.
#[test]
fn matches_cobre_run_when_cobre_cli_is_given() {
    let Some(cli) = std::env::var_os("COBRE_CLI") else {
        eprintln!(
            "NOTICE: COBRE_CLI not set: skipping the comparison with cobre-cli's `cobre run` \
             (cargo install cobre-cli --version 0.18.0 --locked)"
        );
        return;
    };
    let dir = workdir("cli");
    let case = dir.join("case");
    write_case(&case, &[]);
    let theirs = dir.join("theirs");
    let o = Command::new(&cli)
        .arg("run")
        .arg(&case)
        .args(["--quiet", "--threads", "2", "--output"])
        .arg(&theirs)
        .output()
        .expect("cobre run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (ranks, threads) in [("1", "2"), ("2", "1")] {
        let ours = dir.join(format!("ours-{ranks}"));
        let o = run(&["-q", "-p", ranks, "--threads", threads], &case, &ours);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for f in ["training/metadata.json", "simulation/metadata.json"] {
            let (a, b) = (json(&theirs.join(f)), json(&ours.join(f)));
            assert_eq!(a["bounds"], b["bounds"], "{f}");
            assert_eq!(a["cost"], b["cost"], "{f}");
        }
        for sub in ["policy/cuts", "policy/basis"] {
            assert_same_files(&theirs, &ours, sub, &format!(" at {ranks} rank(s)"));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
