//! Test harness: run a test binary's ignored entry point as real rank
//! processes, with deadlines, and check `/dev/shm` afterwards.
#![allow(dead_code)]

use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Prefix of every segment name the tests create.
pub const TEST_PREFIX: &str = "cobre-shm-test";

/// A segment name no other test (or run) uses.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("/{TEST_PREFIX}.{tag}.{}.{n}.{nanos}", std::process::id())
}

/// Entries of `/dev/shm` that belong to the job named `name` (the name
/// itself, or `name.` followed by anything).
pub fn leftovers(name: &str) -> Vec<String> {
    let base = name.trim_start_matches('/');
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f == base || f.starts_with(&format!("{base}.")))
                .collect()
        })
        .unwrap_or_default()
}

/// Entries of `/dev/shm` named after the launcher with process id `pid`
/// (`cobre-shm.<pid>.<random>`): what that launcher's job created, and only
/// that, so tests running beside it cannot be mistaken for its leftovers.
pub fn launcher_leftovers(pid: u32) -> Vec<String> {
    leftovers(&format!("cobre-shm.{pid}"))
}

/// Assert that nothing of job `name` is left in `/dev/shm`.
pub fn assert_no_leftovers(name: &str) {
    let left = leftovers(name);
    assert!(left.is_empty(), "segments left in /dev/shm: {left:?}");
}

/// What one rank process did.
#[derive(Debug)]
pub struct RankOutcome {
    /// Rank index.
    pub rank: usize,
    /// Pid.
    pub pid: u32,
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
    /// When the process was reaped.
    pub ended: Instant,
}

impl RankOutcome {
    /// One line per stream, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "rank {} (pid {}) {}\n--- stdout\n{}--- stderr\n{}",
            self.rank, self.pid, self.status, self.stdout, self.stderr
        )
    }
}

/// A set of running rank processes.
pub struct Ranks {
    /// Pids by rank.
    pub pids: Vec<u32>,
    rx: mpsc::Receiver<RankOutcome>,
    /// When they were started.
    pub started: Instant,
}

/// Start `size` ranks of this test binary's ignored test `entry`, each with
/// `COBRE_SHM_RANK`/`COBRE_SHM_SIZE` and `env` (which sets the name, the
/// backend and the case). `per_rank_env` adds variables for single ranks.
pub fn spawn(
    entry: &str,
    size: usize,
    env: &[(&str, String)],
    per_rank_env: &[(usize, &str, String)],
) -> Ranks {
    let exe = std::env::current_exe().expect("test binary path");
    let (tx, rx) = mpsc::channel();
    let mut pids = Vec::new();
    for rank in 0..size {
        let mut cmd = Command::new(&exe);
        cmd.args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("COBRE_SHM_RANK", rank.to_string())
        .env("COBRE_SHM_SIZE", size.to_string())
        .env("COBRE_SHM_TIMEOUT_SECS", "10")
        .env("COBRE_SHM_ATTACH_TIMEOUT_SECS", "10")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        for (r, k, v) in per_rank_env {
            if *r == rank {
                cmd.env(k, v);
            }
        }
        let child = cmd.spawn().expect("spawn rank process");
        let pid = child.id();
        pids.push(pid);
        let tx = tx.clone();
        std::thread::spawn(move || {
            let out = child.wait_with_output().expect("wait for rank process");
            let _ = tx.send(RankOutcome {
                rank,
                pid,
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                ended: Instant::now(),
            });
        });
    }
    Ranks {
        pids,
        rx,
        started: Instant::now(),
    }
}

impl Ranks {
    /// Wait for every rank; kill them all and panic if `timeout` passes.
    pub fn wait(self, timeout: Duration) -> Vec<RankOutcome> {
        let deadline = self.started + timeout;
        let mut done: Vec<RankOutcome> = Vec::new();
        while done.len() < self.pids.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(o) => done.push(o),
                Err(_) => {
                    for &pid in &self.pids {
                        let _ = send_signal(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    let finished: Vec<String> = done.iter().map(RankOutcome::describe).collect();
                    panic!(
                        "ranks did not finish within {timeout:?}; killed them. Finished:\n{}",
                        finished.join("\n")
                    );
                }
            }
        }
        done.sort_by_key(|o| o.rank);
        done
    }
}

/// Run `case` on `size` ranks of `backend` through `entry`, require every
/// rank to exit 0, and require `/dev/shm` to be clean afterwards.
pub fn run_case(
    entry: &str,
    case: &str,
    size: usize,
    backend: &str,
    extra: &[(&str, String)],
) -> Vec<RankOutcome> {
    let name = unique_name(case);
    let mut env = vec![
        ("COBRE_SHM_NAME", name.clone()),
        ("COBRE_COMM_BACKEND", backend.to_string()),
        ("COBRE_TEST_CASE", case.to_string()),
    ];
    env.extend(extra.iter().cloned());
    let out = spawn(entry, size, &env, &[]).wait(Duration::from_secs(60));
    for o in &out {
        assert!(o.status.success(), "case {case} failed:\n{}", o.describe());
    }
    assert_no_leftovers(&name);
    out
}

/// Path of the `cobre-shm` launcher binary next to this test binary. `cargo
/// test` does not build it: run `cargo build --release --workspace` first
/// (`scripts/test.sh` does).
pub fn launcher_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target profile directory");
    let bin = dir.join("cobre-shm");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release --workspace` before the tests (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Whether a process is still running (not a zombie).
pub fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            != Some("Z")
    })
}

/// Write a synthetic case with `cobre-shm generate` (hydros, stages,
/// openings, thermals, seed).
pub fn generate_case(path: &std::path::Path, spec: [u32; 5]) {
    let [h, t, o, j, s] = spec.map(|v| v.to_string());
    let out = Command::new(launcher_bin())
        .args([
            "generate",
            "--hydros",
            &h,
            "--stages",
            &t,
            "--openings",
            &o,
            "--thermals",
            &j,
            "--seed",
            &s,
            "--output",
        ])
        .arg(path)
        .output()
        .expect("run cobre-shm generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `convergence.csv` of an output directory without its wall-clock column
/// (everything that must be bit-identical between layouts).
pub fn csv_without_clock(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("convergence.csv"))
        .expect("convergence.csv")
        .lines()
        .map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `summary.json` of an output directory.
pub fn summary(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary.json"))
        .expect("summary.json is JSON")
}

/// `cobre-shm ARGS run CASE --output OUT EXTRA…` to its end; asserts it
/// left nothing in `/dev/shm` (only its own segments are looked at: other
/// tests run beside this one).
pub fn launcher_run(
    args: &[&str],
    case: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let child = Command::new(launcher_bin())
        .args(args)
        .arg("run")
        .arg(case)
        .arg("--output")
        .arg(out)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cobre-shm run");
    let pid = child.id();
    let o = child.wait_with_output().expect("cobre-shm run");
    let left = launcher_leftovers(pid);
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    o
}

/// The JSON file at `path`.
pub fn json_file(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

/// A fresh, empty scratch directory `cobre-shm-<name>-<this pid>` in the
/// system's temporary directory.
pub fn work_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cobre-shm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("work dir");
    d
}

/// A finished command's stdout followed by its stderr, as text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Send `sig` to `pid` (through the syscall: no `kill` program needed).
pub fn send_signal(pid: u32, sig: nix::sys::signal::Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
}

/// Write raw bytes into segment `name` through its file in `/dev/shm`, as a
/// foreign or broken program would (no mapping of ours involved).
pub fn write_segment_bytes(name: &str, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{name}"))
        .expect("open the segment file");
    f.write_all_at(bytes, offset as u64)
        .expect("write the segment file");
}

/// Read `out.len()` bytes at `offset` of segment `name` through its file in
/// `/dev/shm`.
pub fn read_segment_bytes(name: &str, offset: usize, out: &mut [u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/dev/shm{name}")).expect("open the segment file");
    f.read_exact_at(out, offset as u64)
        .expect("read the segment file");
}
