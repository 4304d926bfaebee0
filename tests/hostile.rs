//! The bad-input and fault tables of the README's reliability section,
//! rerun: every input below is wrong and every fault is fatal, and each run
//! is classified as
//!
//! - **clear error**: a non-zero exit with a `cobre-shm:` (or usage) line
//!   saying what is wrong,
//! - **crash**: killed by a signal or a panic (exit 101/134) where an error
//!   was due,
//! - **hang**: still running after its time limit,
//! - **leak**: something of the job left in `/dev/shm`, or a process it
//!   started still running,
//! - **silent**: exit 0, or a failure without any message.
//!
//! The test fails unless every run is a clear error. It prints the table;
//! `COBRE_SHM_HOSTILE_FULL=1` runs the long fault table written in the
//! README (several minutes), the default a quicker sample of it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cobre_comm::Communicator;
use common::{launcher_bin, send_signal};
use nix::sys::signal::Signal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Clear,
    Crash,
    Hang,
    Leak,
    Silent,
}

/// Rank program for the fault table: barriers for a while, then success.
#[test]
#[ignore = "rank process entry point; run through the other tests"]
fn rank_entry() {
    if std::env::var("COBRE_TEST_CASE").is_err() {
        return;
    }
    let comm = cobre_shm::create_communicator().expect("attach");
    println!("READY rank={} pid={}", comm.rank(), std::process::id());
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        if let Err(e) = comm.barrier() {
            eprintln!("cobre-shm-test: rank {}: {e}", comm.rank());
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn marker_processes(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read(e.path().join("environ"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                })
                .count()
        })
        .unwrap_or(0)
}

fn shm_entries() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("cobre-shm."))
                .collect()
        })
        .unwrap_or_default()
}

/// Wait for `child` at most `limit`; classify how it ended (its processes
/// carry `marker` in their environment).
fn judge(mut child: Child, limit: Duration, marker: &str, before: &[String]) -> (Verdict, String) {
    let launcher = child.id();
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let Some(status) = status else {
        return (Verdict::Hang, err);
    };
    // Give a killed job's processes a moment to go.
    let t = Instant::now();
    while marker_processes(marker) > 0 && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // New segments of this launcher, or of any launcher that has ended (one
    // this launcher started); a live launcher's are another test's, beside.
    let leaked: Vec<String> = shm_entries()
        .into_iter()
        .filter(|n| !before.contains(n))
        .filter(|n| {
            let owner = n.split('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            owner.is_none_or(|p| p == launcher || cobre_shm::launch::state(p).is_none())
        })
        .collect();
    if marker_processes(marker) > 0 || !leaked.is_empty() {
        return (Verdict::Leak, format!("{leaked:?} {err}"));
    }
    let said = err.lines().any(|l| {
        l.starts_with("cobre-shm:") || l.starts_with("error:") || l.contains("cobre-shm-test:")
    });
    let verdict = match status.code() {
        Some(0) => Verdict::Silent,
        Some(101 | 134) | None => Verdict::Crash,
        Some(_) if said => Verdict::Clear,
        Some(_) => Verdict::Silent,
    };
    (verdict, err)
}

fn workdir() -> PathBuf {
    common::work_dir("hostile")
}

/// `cobre-shm run` on broken upstream Cobre case directories: each a copy
/// of a generated case with one thing wrong.
fn bad_cobre_cases(dir: &Path) -> Vec<Input> {
    let base = dir.join("cobre_base");
    let o = std::process::Command::new(common::launcher_bin())
        .arg("generate-cobre-case")
        .arg(&base)
        .output()
        .expect("generate-cobre-case");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    type Edit = fn(&Path);
    fn json_edit(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        f(&mut v);
        std::fs::write(path, v.to_string()).expect("write");
    }
    let edits: [(&str, Edit); 12] = [
        ("forward passes 0", |d| {
            json_edit(&d.join("config.json"), |v| {
                v["training"]["selection"]["forward_passes"] = 0.into();
            });
        }),
        ("forward passes 1e9", |d| {
            json_edit(&d.join("config.json"), |v| {
                v["training"]["selection"]["forward_passes"] = 1_000_000_000u64.into();
            });
        }),
        ("iteration limit u32::MAX", |d| {
            json_edit(&d.join("config.json"), |v| {
                v["training"]["stopping_rules"][0]["limit"] = u64::from(u32::MAX).into();
            });
        }),
        ("simulated scenarios 4e9", |d| {
            json_edit(&d.join("config.json"), |v| {
                v["simulation"]["selection"]["num_scenarios"] = 4_000_000_000u64.into();
            });
        }),
        ("openings 1e8", |d| {
            json_edit(&d.join("stages.json"), |v| {
                v["stages"][0]["num_openings"] = 100_000_000u64.into();
            });
        }),
        ("openings 0", |d| {
            json_edit(&d.join("stages.json"), |v| {
                v["stages"][0]["num_openings"] = 0.into();
            });
        }),
        ("no stages", |d| {
            json_edit(&d.join("stages.json"), |v| {
                v["stages"] = serde_json::json!([]);
            });
        }),
        ("unknown config field", |d| {
            json_edit(&d.join("config.json"), |v| v["bogus"] = 1.into());
        }),
        ("negative storage", |d| {
            json_edit(&d.join("system/hydros.json"), |v| {
                v["hydros"][0]["reservoir"]["max_storage_hm3"] = (-5.0).into();
            });
        }),
        ("warm-start policy", |d| {
            json_edit(&d.join("config.json"), |v| {
                v["policy"] = serde_json::json!({ "mode": "warm_start", "path": "prior" });
            });
        }),
        ("empty config.json", |d| {
            std::fs::write(d.join("config.json"), "").expect("write");
        }),
        ("garbage parquet", |d| {
            std::fs::write(d.join("scenarios/inflow_seasonal_stats.parquet"), "junk")
                .expect("write");
        }),
    ];
    let mut v = Vec::new();
    for (label, edit) in edits {
        let d = dir.join(format!("cobre_{}", label.replace(' ', "_")));
        let _ = std::fs::remove_dir_all(&d);
        let cp = std::process::Command::new("cp")
            .arg("-r")
            .arg(&base)
            .arg(&d)
            .status()
            .expect("cp");
        assert!(cp.success());
        edit(&d);
        v.push((
            format!("run: {label}"),
            vec![
                "-p".into(),
                "2".into(),
                "run".into(),
                d.to_string_lossy().into_owned(),
                "--output".into(),
                dir.join("cobre_out").to_string_lossy().into_owned(),
            ],
            vec![],
        ));
    }
    v.push((
        "run: missing directory".into(),
        vec!["run".into(), "/nonexistent/case".into()],
        vec![],
    ));
    v
}

/// One wrong input: label, arguments, environment.
type Input = (String, Vec<String>, Vec<(String, String)>);

/// Every wrong input.
fn bad_inputs(dir: &Path) -> Vec<Input> {
    let case = dir.join("case.json");
    common::generate_case(&case, [3, 4, 3, 2, 1]);
    let c = case.to_string_lossy().to_string();
    let base = std::fs::read_to_string(&case).expect("case");
    let mut v: Vec<Input> = Vec::new();
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    let counts = [
        "0",
        "-1",
        "abc",
        "1e300",
        "1.5",
        "",
        "18446744073709551616",
        "1000000000000",
    ];
    for flag in ["--iterations", "--forward-passes", "--warm-group"] {
        // A warm group larger than the passes is just one group: valid.
        for val in counts
            .iter()
            .filter(|v| flag != "--warm-group" || **v != "1000000000000")
        {
            let val = *val;
            v.push((
                format!("train {flag} {val:?}"),
                args(&["train", &c, flag, val, "--dry-run"]),
                vec![],
            ));
        }
    }
    for val in counts {
        v.push((
            format!("-p {val:?}"),
            args(&["-p", val, "--dry-run"]),
            vec![],
        ));
        v.push((
            format!("--threads {val:?}"),
            args(&["--threads", val, "train", &c, "--dry-run"]),
            vec![],
        ));
    }
    for flag in ["--hydros", "--stages", "--openings"] {
        for val in counts {
            v.push((
                format!("generate {flag} {val:?}"),
                args(&["generate", flag, val, "--output", "/dev/null"]),
                vec![],
            ));
        }
    }
    for val in ["0", "-1", "abc", "1e300", "NaN", "inf", ""] {
        v.push((
            format!("--timeout {val:?}"),
            args(&["--timeout", val, "train", &c, "--dry-run"]),
            vec![],
        ));
        v.push((
            format!("--time-limit {val:?}"),
            args(&["train", &c, "--time-limit", val, "--dry-run"]),
            vec![],
        ));
    }
    let mutations: [(&str, &str, &str); 16] = [
        ("\"stages\": 4", "\"stages\": 0", "stages 0"),
        ("\"stages\": 4", "\"stages\": -4", "stages negative"),
        ("\"openings\": 3", "\"openings\": 0", "openings 0"),
        (
            "\"openings\": 3",
            "\"openings\": 100000000",
            "openings huge",
        ),
        ("\"openings\": 3", "\"openings\": 1e8", "openings float"),
        ("\"seed\": 1", "\"seed\": -1", "seed negative"),
        (
            "\"kind\": \"lognormal\"",
            "\"kind\": \"normal\"",
            "unknown inflow kind",
        ),
        ("\"max_volume\"", "\"max_volum\"", "unknown field"),
        (
            "\"downstream\": \"H001\"",
            "\"downstream\": \"nowhere\"",
            "unknown downstream",
        ),
        (
            "\"downstream\": \"H001\"",
            "\"downstream\": \"H000\"",
            "self downstream",
        ),
        (
            "\"name\": \"H001\"",
            "\"name\": \"H000\"",
            "duplicate hydro",
        ),
        (
            "\"productivity\": ",
            "\"productivity\": -",
            "negative productivity",
        ),
        (
            "\"forward_passes\": 40",
            "\"forward_passes\": 0",
            "training forward passes 0",
        ),
        (
            "\"iterations\": 20",
            "\"iterations\": 0",
            "training iterations 0",
        ),
        ("{", "[", "not an object"),
        (
            "\"demand\": [",
            "\"demand\": [1e999, ",
            "number out of range",
        ),
    ];
    for (from, to, label) in mutations {
        assert!(base.contains(from), "test setup: {from}");
        let p = dir.join(format!("{}.json", label.replace(' ', "_")));
        std::fs::write(&p, base.replacen(from, to, 1)).expect("write");
        v.push((
            format!("case: {label}"),
            args(&["train", &p.to_string_lossy()]),
            vec![],
        ));
    }
    for (label, content) in [
        ("empty file", &b""[..]),
        ("binary garbage", &[0u8, 159, 146, 150, 255][..]),
        ("truncated JSON", &base.as_bytes()[..base.len() / 2]),
    ] {
        let p = dir.join(format!("{}.json", label.replace(' ', "_")));
        std::fs::write(&p, content).expect("write");
        v.push((
            format!("case: {label}"),
            args(&["train", &p.to_string_lossy()]),
            vec![],
        ));
    }
    v.push((
        "case: missing file".into(),
        args(&["train", "/nonexistent/case.json"]),
        vec![],
    ));
    v.push((
        "case: a directory".into(),
        args(&["train", &dir.to_string_lossy()]),
        vec![],
    ));
    let out_file = dir.join("a_file");
    std::fs::write(&out_file, "x").expect("write");
    v.push((
        "--output is a file".into(),
        args(&["train", &c, "--output", &out_file.to_string_lossy()]),
        vec![],
    ));
    v.push((
        "--resume nothing".into(),
        args(&["train", &c, "--resume", "/nonexistent"]),
        vec![],
    ));
    v.extend(bad_cobre_cases(dir));
    v.push((
        "--mempolicy node:99".into(),
        args(&["--mempolicy", "node:99", "train", &c]),
        vec![],
    ));
    v.push((
        "--mempolicy bogus".into(),
        args(&["--mempolicy", "bogus", "train", &c]),
        vec![],
    ));
    v.push((
        "--cut-selection bogus".into(),
        args(&["train", &c, "--cut-selection", "bogus"]),
        vec![],
    ));
    v.push((
        "--bind bogus".into(),
        args(&["--bind", "bogus", "train", &c]),
        vec![],
    ));
    for (k, val) in [
        ("COBRE_SHM_STAGING_BYTES", "100"),
        ("COBRE_SHM_STAGING_BYTES", "abc"),
        ("COBRE_SHM_STAGING_BYTES", "99999999999999999999"),
        ("COBRE_SHM_STAGING_BYTES", "9223372036854775808"),
        ("COBRE_SHM_TOPOLOGY", "/nonexistent"),
        ("COBRE_SHM_BARRIER", "ring"),
        ("COBRE_SHM_MEMPOLICY", "bogus"),
        ("COBRE_SHM_SPIN_US", "-5"),
        ("COBRE_SHM_EAGER_MAX_BYTES", "4097"),
    ] {
        v.push((
            format!("{k}={val}"),
            args(&["-p", "2", "train", &c]),
            vec![(k.to_string(), val.to_string())],
        ));
    }
    v.push(("nothing to run".into(), args(&["-p", "2"]), vec![]));
    v.push(("unknown subcommand".into(), args(&["bogus"]), vec![]));
    v.push((
        "program not found".into(),
        args(&["-p", "2", "--", "/nonexistent/program"]),
        vec![],
    ));
    v
}

/// Run the launcher on one bad input, in `dir`: an input it wrongly
/// accepts then writes its output there, never into the source tree.
fn run_input(dir: &Path, args: &[String], env: &[(String, String)]) -> (Verdict, String) {
    let marker = format!("COBRE_HOSTILE_MARK={}", common::unique_name("in"));
    let before = shm_entries();
    let mut cmd = Command::new(launcher_bin());
    cmd.args(args)
        .current_dir(dir)
        .env(
            "COBRE_HOSTILE_MARK",
            marker.trim_start_matches("COBRE_HOSTILE_MARK="),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn");
    judge(child, Duration::from_secs(20), &marker, &before)
}

/// Killing the launcher itself with SIGKILL leaves it no chance to speak:
/// the job is judged on what it leaves behind (its ranks die with it).
fn judge_killed_launcher((v, e): (Verdict, String)) -> (Verdict, String) {
    match v {
        Verdict::Crash | Verdict::Silent => (Verdict::Clear, e),
        other => (other, e),
    }
}

/// One fault: `signal` to the launcher or to rank `target` of `ranks`,
/// `after` the ranks are ready.
fn run_fault(
    ranks: usize,
    target: Option<usize>,
    signal: Signal,
    after: Duration,
) -> (Verdict, String) {
    let marker = format!("COBRE_HOSTILE_MARK={}", common::unique_name("fault"));
    let before = shm_entries();
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(launcher_bin())
        .args(["-p", &ranks.to_string(), "--"])
        .arg(exe)
        .args(["rank_entry", "--exact", "--ignored", "--nocapture", "-q"])
        .env("COBRE_TEST_CASE", "loop")
        .env("COBRE_SHM_STOPPED_SECS", "1")
        .env(
            "COBRE_HOSTILE_MARK",
            marker.trim_start_matches("COBRE_HOSTILE_MARK="),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let mut pids = vec![0u32; ranks];
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let mut seen = 0;
    while seen < ranks {
        let Some(Ok(l)) = lines.next() else { break };
        if let Some(rest) = l.strip_prefix("READY rank=") {
            let mut it = rest.split(" pid=");
            let r: usize = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
            pids[r] = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
            seen += 1;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(after);
    let pid = target.map_or(child.id(), |r| pids[r]);
    let _ = send_signal(pid, signal);
    judge(child, Duration::from_secs(30), &marker, &before)
}

fn table(title: &str, rows: &[(String, Verdict, String)]) -> BTreeMap<Verdict, usize> {
    let mut counts = BTreeMap::new();
    for (_, v, _) in rows {
        *counts.entry(*v).or_insert(0) += 1;
    }
    println!(
        "| {title} | {} | {} | {} | {} | {} | {} |",
        rows.len(),
        counts.get(&Verdict::Clear).unwrap_or(&0),
        counts.get(&Verdict::Crash).unwrap_or(&0),
        counts.get(&Verdict::Hang).unwrap_or(&0),
        counts.get(&Verdict::Leak).unwrap_or(&0),
        counts.get(&Verdict::Silent).unwrap_or(&0)
    );
    for (label, v, detail) in rows {
        if *v != Verdict::Clear {
            println!(
                "  {v:?}: {label}: {}",
                detail.lines().take(3).collect::<Vec<_>>().join(" / ")
            );
        }
    }
    counts
}

#[test]
fn every_bad_input_and_every_fault_ends_in_a_clear_error() {
    let dir = workdir();
    let inputs: Vec<(String, Verdict, String)> = bad_inputs(&dir)
        .into_iter()
        .map(|(label, args, env)| {
            let (v, e) = run_input(&dir, &args, &env);
            (label, v, e)
        })
        .collect();
    let full = std::env::var_os("COBRE_SHM_HOSTILE_FULL").is_some();
    let mut faults = Vec::new();
    let signals = [
        Signal::SIGKILL,
        Signal::SIGTERM,
        Signal::SIGSEGV,
        Signal::SIGINT,
        Signal::SIGSTOP,
    ];
    let rank_counts: &[usize] = if full { &[2, 3, 4, 6] } else { &[2, 4] };
    let delays: &[u64] = if full {
        &[0, 50, 300, 1000]
    } else {
        &[50, 500]
    };
    for &ranks in rank_counts {
        for &sig in &signals {
            let targets: Vec<Option<usize>> = if full {
                (0..ranks).map(Some).chain([None]).collect()
            } else {
                vec![Some(0), Some(ranks - 1), None]
            };
            for &target in &targets {
                if target.is_none() && sig == Signal::SIGSTOP {
                    continue; // stopping the launcher stops nothing of the job
                }
                for &ms in delays {
                    let mut outcome = run_fault(ranks, target, sig, Duration::from_millis(ms));
                    if target.is_none() && sig == Signal::SIGKILL {
                        outcome = judge_killed_launcher(outcome);
                    }
                    let (v, e) = outcome;
                    let who = target.map_or("launcher".to_string(), |r| format!("rank {r}"));
                    faults.push((format!("{sig:?} to {who} of {ranks} after {ms} ms"), v, e));
                }
            }
        }
    }
    println!("\n| table | tried | clear error | crash | hang | leak | silent |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let a = table("bad inputs", &inputs);
    let b = table(
        if full {
            "faults (full)"
        } else {
            "faults (sample)"
        },
        &faults,
    );
    let bad = |c: &BTreeMap<Verdict, usize>| {
        c.iter()
            .filter(|(v, _)| **v != Verdict::Clear)
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    assert_eq!(bad(&a) + bad(&b), 0, "see the rows above");
    let _ = std::fs::remove_dir_all(dir);
}
