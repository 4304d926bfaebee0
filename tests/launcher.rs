//! The `cobre-shm` launcher with real processes: environment of the ranks,
//! failure propagation (exit code, SIGKILL, SIGINT), cleanup of `/dev/shm`,
//! `clean`, `--dry-run` on a fake topology.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cobre_comm::Communicator;
use cobre_shm::launch::Segment;
use cobre_shm_layout as layout;
use common::{launcher_bin, process_running};

/// Entry point of rank processes started by the launcher.
#[test]
#[ignore = "rank process entry point; run through the other tests"]
fn rank_entry() {
    let Ok(case) = std::env::var("COBRE_TEST_CASE") else {
        return;
    };
    let comm = cobre_shm::create_communicator().expect("attach");
    let r = comm.rank();
    println!(
        "READY rank={r} pid={} name={}",
        std::process::id(),
        std::env::var("COBRE_SHM_NAME").unwrap_or_default()
    );
    match case.as_str() {
        "exit_rank2" => {
            comm.barrier().expect("first barrier");
            if r == 2 {
                std::thread::sleep(Duration::from_millis(300));
                std::process::exit(3);
            }
            loop {
                if comm.barrier().is_err() {
                    std::process::exit(1);
                }
            }
        }
        "sit_in_barrier" => {
            comm.barrier().expect("first barrier");
            if r == 1 {
                std::thread::sleep(Duration::from_secs(60));
            }
            let _ = comm.barrier();
            std::process::exit(1);
        }
        "barrier_twice" => {
            comm.barrier().expect("barrier");
            comm.barrier().expect("barrier");
        }
        other => panic!("unknown case {other}"),
    }
}

/// A running launcher whose stdout lines arrive on a channel.
struct Job {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    started: Instant,
}

fn start(args: &[&str], case: &str) -> Job {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(launcher_bin());
    cmd.args(args)
        .arg("--")
        .arg(exe)
        .args(["rank_entry", "--exact", "--ignored", "--nocapture", "-q"])
        .env("COBRE_TEST_CASE", case)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start cobre-shm");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Job {
        child,
        lines: rx,
        seen: Vec::new(),
        started: Instant::now(),
    }
}

impl Job {
    /// Wait until `n` ranks printed READY; returns (pids by rank, job name).
    fn ready(&mut self, n: usize) -> (Vec<u32>, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut pids = vec![0u32; n];
        let mut name = String::new();
        let mut count = 0;
        while count < n {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("ranks did not all start; seen {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(rest) = line.strip_prefix("READY ") {
                let field = |k: &str| {
                    rest.split(' ')
                        .find_map(|f| f.strip_prefix(k))
                        .unwrap_or("")
                        .to_string()
                };
                let r: usize = field("rank=").parse().expect("rank");
                pids[r] = field("pid=").parse().expect("pid");
                name = field("name=");
                count += 1;
            }
        }
        (pids, name)
    }

    /// Wait for the launcher (bounded); returns (exit code, stderr, elapsed since start).
    fn finish(mut self, limit: Duration) -> (Option<i32>, String, Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return (status.code(), err, self.started.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("cobre-shm did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn assert_all_gone(pids: &[u32], name: &str) {
    for &p in pids {
        assert!(!process_running(p), "rank pid {p} survived");
    }
    common::assert_no_leftovers(name);
}

/// A bad `COBRE_SHM_*` setting is refused once by the launcher, before any
/// rank starts, with the variable named — not once per rank after the
/// fork. `--timeout` replaces the environment's timeout, so a bad one there
/// is not held against it.
#[test]
fn bad_rank_settings_are_refused_before_any_rank_starts() {
    for (k, v) in [
        ("COBRE_SHM_BARRIER", "ring"),
        ("COBRE_SHM_STAGING_BYTES", "100"),
        ("COBRE_SHM_MEMPOLICY", "bogus"),
        ("COBRE_SHM_TIMEOUT_SECS", "-1"),
        ("COBRE_SHM_SPIN_US", "lots"),
        ("COBRE_SHM_CMA_MIN_BYTES", "1e6"),
        ("COBRE_SHM_EAGER_MAX_BYTES", "5000"),
    ] {
        let out = Command::new(launcher_bin())
            .args(["-p", "3", "--", "sh", "-c", "echo started"])
            .env(k, v)
            .output()
            .expect("run cobre-shm");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{k}={v}: {err}");
        assert!(out.stdout.is_empty(), "{k}={v}: a rank started");
        assert_eq!(err.lines().count(), 1, "{k}={v}: {err}");
        assert!(
            err.contains(k) && err.contains("fix or unset it"),
            "{k}={v}: {err}"
        );
        let dry = Command::new(launcher_bin())
            .args(["-p", "3", "--dry-run", "--", "true"])
            .env(k, v)
            .output()
            .expect("run cobre-shm --dry-run");
        assert_eq!(dry.status.code(), Some(2), "{k}={v}: --dry-run accepted it");
    }
    let out = Command::new(launcher_bin())
        .args([
            "-p",
            "2",
            "--timeout",
            "30",
            "--",
            "sh",
            "-c",
            "echo started",
        ])
        .env("COBRE_SHM_TIMEOUT_SECS", "-1")
        .output()
        .expect("run cobre-shm");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn ranks_see_their_environment() {
    let out = Command::new(launcher_bin())
        .args([
            "-p",
            "4",
            "--",
            "sh",
            "-c",
            "echo $COBRE_SHM_RANK $COBRE_SHM_SIZE $COBRE_COMM_BACKEND",
        ])
        .output()
        .expect("run cobre-shm");
    assert!(out.status.success(), "{out:?}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, ["0 4 shm", "1 4 shm", "2 4 shm", "3 4 shm"]);
}

#[test]
fn placement_variables_and_thread_defaults_are_exported() {
    let out = Command::new(launcher_bin())
        .args(["-p", "2", "--threads", "3", "--", "sh", "-c", "echo $COBRE_SHM_RANK $COBRE_SHM_NODE $RAYON_NUM_THREADS $HIGHS_PARALLEL $OMP_NUM_THREADS $MKL_NUM_THREADS; grep Cpus_allowed_list /proc/self/status"])
        .env("MKL_NUM_THREADS", "5")
        .output()
        .expect("run cobre-shm");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 0 3 false 1 5"),
        "user's MKL_NUM_THREADS kept:\n{text}"
    );
    assert!(text.contains("1 0 3 false 1 5"), "{text}");
    // Bound: each rank is allowed a single CPU of this 2-CPU machine.
    let allowed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Cpus_allowed_list"))
        .collect();
    assert_eq!(allowed.len(), 2);
    assert!(
        allowed.iter().all(|l| !l.contains('-') && !l.contains(',')),
        "{allowed:?}"
    );
}

#[test]
fn failing_rank_code_is_the_launchers_and_stops_everyone() {
    let mut job = start(&["-p", "4"], "exit_rank2");
    let (pids, name) = job.ready(4);
    let t = Instant::now();
    let (code, err, _) = job.finish(Duration::from_secs(20));
    assert_eq!(code, Some(3), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // How many ranks were still running to be stopped depends on how soon
    // the others noticed rank 2's death; the culprit and its code do not.
    assert!(
        err.contains(&format!("rank 2 (pid {}) exited with code 3", pids[2]))
            && (err.contains("stopped 3 other ranks") || err.contains("were stopped")),
        "{err}"
    );
    assert_all_gone(&pids, &name);
}

/// When the launcher reaps late (here: stopped while it happens), the rank
/// that failed first and the ranks that then saw it die are reaped
/// together; the job still ends with the first one's code and names it.
#[test]
fn the_first_failure_is_named_when_ranks_are_reaped_together() {
    let mut job = start(&["-p", "4"], "exit_rank2");
    let (pids, name) = job.ready(4);
    let launcher = job.child.id();
    common::send_signal(launcher, nix::sys::signal::Signal::SIGSTOP).expect("sigstop");
    // Rank 2 exits after 300 ms; the others fail their next barrier at once.
    let all_ended = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| process_running(p)) && Instant::now() < all_ended {
        std::thread::sleep(Duration::from_millis(20));
    }
    common::send_signal(launcher, nix::sys::signal::Signal::SIGCONT).expect("sigcont");
    let (code, err, _) = job.finish(Duration::from_secs(20));
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!("rank 2 (pid {}) exited with code 3", pids[2])),
        "{err}"
    );
    assert_all_gone(&pids, &name);
}

#[test]
fn rank_killed_from_outside_stops_the_job() {
    let mut job = start(&["-p", "4"], "sit_in_barrier");
    let (pids, name) = job.ready(4);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    common::send_signal(pids[1], nix::sys::signal::Signal::SIGKILL).expect("sigkill");
    let (code, err, _) = job.finish(Duration::from_secs(20));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(code, Some(128 + 9), "{err}");
    // Either the launcher reaped rank 1 first ("stopped 3 other ranks") or a
    // peer saw it die first and the launcher names it from the abort record.
    assert!(
        err.contains(&format!(
            "rank 1 (pid {}) was killed by SIGKILL; stopped 3 other ranks",
            pids[1]
        )) || (err.contains(&format!("rank 1 (pid {}) was killed by SIGKILL", pids[1]))
            && err.contains("were stopped")),
        "{err}"
    );
    assert_all_gone(&pids, &name);
}

#[test]
fn sigint_to_the_launcher_stops_everything() {
    let mut job = start(&["-p", "3"], "sit_in_barrier");
    let (pids, name) = job.ready(3);
    std::thread::sleep(Duration::from_millis(100));
    let launcher = job.child.id();
    common::send_signal(launcher, nix::sys::signal::Signal::SIGINT).expect("sigint");
    let (code, err, _) = job.finish(Duration::from_secs(20));
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("SIGINT"), "{err}");
    assert_all_gone(&pids, &name);
}

/// The bundled example the README's demo runs, under the launcher: every
/// rank sees the sum, every pid and the region the leader filled.
#[test]
fn hello_collectives_example_runs_on_three_ranks() {
    let example = launcher_bin()
        .with_file_name("examples")
        .join("hello_collectives");
    assert!(
        example.exists(),
        "{} is missing: cargo build --release --workspace --examples",
        example.display()
    );
    let o = Command::new(launcher_bin())
        .args(["-p", "3", "--"])
        .arg(&example)
        .output()
        .expect("run the example");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for r in 0..3 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("rank {r} of 3 (shm)")))
            .unwrap_or_else(|| panic!("no line of rank {r}: {text}"));
        assert!(line.contains("sum of 1..=3 = 6"), "{line}");
        assert!(line.ends_with("shared region [100, 200, 300]"), "{line}");
    }
}

#[test]
fn clean_run_exits_zero_and_leaves_nothing() {
    let job = start(&["-p", "3", "--tag-output"], "barrier_twice");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = Vec::new();
    while ready.len() < 3 && Instant::now() < deadline {
        if let Ok(line) = job.lines.recv_timeout(Duration::from_secs(5)) {
            ready.push(line);
        }
    }
    assert_eq!(ready.len(), 3, "one line per rank: {ready:?}");
    assert!(
        ready.iter().all(|l| l.starts_with("[rank ")),
        "tagged output: {ready:?}"
    );
    let (code, err, _) = job.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    let name = ready[0].split("name=").nth(1).unwrap_or("").to_string();
    common::assert_no_leftovers(&name);
}

#[test]
fn dry_run_on_a_fake_eight_node_machine() {
    let dir = std::env::temp_dir().join(format!("cobre-shm-topo-{}", std::process::id()));
    let text: String = (0..8)
        .map(|i| format!("node {i} cpus={}-{}\n", i * 16, i * 16 + 15))
        .collect();
    std::fs::write(&dir, text).expect("write topology");
    let out = Command::new(launcher_bin())
        .args(["-p", "16", "--dry-run"])
        .env("COBRE_SHM_TOPOLOGY", &dir)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("8 node(s), 128 CPU(s)"), "{text}");
    assert!(
        text.contains("16 rank(s) on 8 NUMA node(s), bind=numa"),
        "{text}"
    );
    assert!(text.contains("     1      0        8  8-15"), "{text}");
    // A fake topology never drives a real launch.
    let out = Command::new(launcher_bin())
        .args(["-p", "2", "--", "true"])
        .env("COBRE_SHM_TOPOLOGY", &dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only used by --dry-run"));
    let _ = std::fs::remove_file(dir);
}

fn fake_segment(name: &str) -> Segment {
    let seg = Segment::create_exclusive(name, 8192).expect("create");
    assert!(seg.try_lock_byte(layout::CREATOR_LOCK_BYTE).expect("lock"));
    seg.write_header(&layout::SegmentHeader {
        magic: layout::MAGIC,
        layout_version: layout::LAYOUT_VERSION,
        kind: layout::SegmentKind::Control as u32,
        fingerprint: layout::FINGERPRINT,
        total_bytes: 8192,
        data_offset: 4096,
        world_size: 1,
        creator_pid: std::process::id(),
        created_unix_ns: 0,
        state: layout::STATE_READY,
        abort: 0,
    });
    seg.atomic_u32(layout::HEADER_STATE_OFFSET)
        .store(layout::STATE_READY, std::sync::atomic::Ordering::Release);
    seg
}

#[test]
fn clean_removes_dead_jobs_only() {
    // Outside the launcher's own start-up sweep (`cobre-shm.` names), which
    // other tests running in parallel would otherwise apply to `dead` first.
    let dead = format!("/{}.clean-dead.{}", common::TEST_PREFIX, std::process::id());
    let live = format!("/{}.clean-live.{}", common::TEST_PREFIX, std::process::id());
    drop(fake_segment(&dead)); // creator lock released: dead
    let keep = fake_segment(&live); // we hold the lock: alive
    let out = Command::new(launcher_bin())
        .arg("clean")
        .output()
        .expect("run clean");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&dead) && text.contains("stale: removed"),
        "{text}"
    );
    assert!(text.contains(&live) && text.contains("kept"), "{text}");
    assert!(common::leftovers(&dead).is_empty());
    assert_eq!(common::leftovers(&live).len(), 1);
    drop(keep);
    Segment::unlink(&live).expect("unlink");
}

#[test]
fn mempolicy_reaches_the_shared_regions() {
    let dir = std::env::temp_dir().join(format!("cobre-shm-mempolicy-{}", std::process::id()));
    for policy in ["node:0", "interleave", "first-touch"] {
        let out = dir.join(policy.replace(':', "_"));
        let o = Command::new(launcher_bin())
            .args([
                "-p",
                "2",
                "--mempolicy",
                policy,
                "train",
                "--iterations",
                "2",
                "--quiet",
                "--output",
            ])
            .arg(&out)
            .output()
            .expect("run");
        assert!(
            o.status.success(),
            "{policy}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let s = common::summary(&out);
        for r in s["shared_regions"].as_array().expect("regions") {
            let pages = r["pages_by_numa_node"].as_array().expect("pages");
            assert!(!pages.is_empty(), "{policy}: {r}");
            // This machine has one node: every page is on node 0.
            assert!(pages.iter().all(|p| p["node"] == 0), "{policy}: {r}");
        }
    }
    let o = Command::new(launcher_bin())
        .args(["-p", "2", "--mempolicy", "node:7", "train"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("node:7: no such NUMA node"));
    let _ = std::fs::remove_dir_all(dir);
}
