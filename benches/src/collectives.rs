//! Collective latency and bandwidth against message size.
//!
//! The same measuring body runs on every rank of a `cobre-shm -p R` job (the
//! hidden `bench-rank` subcommand), of an `mpiexec` job of this binary when it
//! was built with the `mpi` feature (cobre-comm's MPI backend), and — as the C
//! program `mpi_collectives.c`, built here with each installed MPI's `mpicc`
//! — of native MPI. Method (all three): per operation and size, rank 0 times
//! three calls, sizes batches of a few milliseconds, broadcasts the plan,
//! and reports the median over batches of the mean time per call.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use cobre_comm::{CommError, Communicator, ReduceOp};
use cobre_shm::config::BarrierShape;

use super::mpi::Mpi;

/// The operations, in report order.
pub const OPS: [&str; 4] = ["barrier", "allreduce", "allgatherv", "broadcast"];

/// One measured point: `bytes` is the payload (allreduce: the vector of
/// `f64`; allgatherv: the gathered total; broadcast: the buffer; barrier: 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Operation.
    pub op: String,
    /// Payload in bytes.
    pub bytes: u64,
    /// Median time per call, µs.
    pub us: f64,
}

/// The `RESULT\t<op>\t<bytes>\t<µs>` lines of a run.
#[must_use]
pub fn parse(stdout: &str) -> Vec<Point> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 4 || f[0] != "RESULT" {
                return None;
            }
            Some(Point {
                op: f[1].to_string(),
                bytes: f[2].parse().ok()?,
                us: f[3].parse().ok()?,
            })
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median over batches of the mean time per call of `op`, in µs: each
/// batch starts and ends with a barrier, timed on rank 0 (the broadcast
/// root) up to the end of the closing one.
fn measure<C: Communicator>(
    c: &C,
    quick: bool,
    mut op: impl FnMut() -> Result<(), CommError>,
) -> Result<f64, CommError> {
    c.barrier()?;
    let t = Instant::now();
    for _ in 0..3 {
        op()?;
    }
    let per_call = (t.elapsed().as_secs_f64() / 3.0).max(1e-9);
    let (target, total, most) = if quick {
        (0.005, 0.05, 5)
    } else {
        (0.02, 0.4, 25)
    };
    let mut plan = [0u64; 2];
    if c.rank() == 0 {
        let batch = ((target / per_call) as u64).clamp(1, 1000);
        let batches = ((total / (batch as f64 * per_call)) as u64).clamp(3, most);
        plan = [batch, batches];
    }
    c.broadcast(&mut plan, 0)?;
    let mut per = Vec::new();
    for _ in 0..plan[1] {
        c.barrier()?;
        let t = Instant::now();
        for _ in 0..plan[0] {
            op()?;
        }
        // Until every rank is done: a root that returns early (an eager
        // broadcast here, MPI's eager protocol in the C program) is charged
        // for the calls its receivers still have to finish.
        c.barrier()?;
        per.push(t.elapsed().as_secs_f64() * 1e6 / plan[0] as f64);
    }
    Ok(median(per))
}

/// How the measuring kernels run; passed to them (the Rust rank and the C
/// program alike) as environment variables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    /// Fewer, shorter batches (`COBRE_BENCH_QUICK`).
    pub quick: bool,
    /// Every sender rewrites its buffer before every call, as an
    /// application sends data it just produced (`COBRE_BENCH_FRESH`);
    /// otherwise buffers are reused unchanged, as OSU and IMB do.
    pub fresh: bool,
}

impl Kernel {
    /// The variables' meaning in a kernel process.
    #[must_use]
    pub fn from_env() -> Self {
        Self {
            quick: std::env::var_os(ENV_QUICK).is_some(),
            fresh: std::env::var_os(ENV_FRESH).is_some(),
        }
    }
}

const ENV_QUICK: &str = "COBRE_BENCH_QUICK";
const ENV_FRESH: &str = "COBRE_BENCH_FRESH";

/// Every operation at every size, on `c` (collective).
///
/// # Errors
/// The first failing collective.
pub fn measure_all<C: Communicator>(
    c: &C,
    sizes: &[u64],
    k: Kernel,
) -> Result<Vec<Point>, CommError> {
    let n = c.size();
    let quick = k.quick;
    let point = |op: &str, bytes: u64, us: f64| Point {
        op: op.to_string(),
        bytes,
        us,
    };
    // A new value per call when buffers are fresh: the writes cannot be
    // skipped and every call moves data the sender just wrote.
    let mut stamp = 0.0f64;
    let mut rewrite = move |buf: &mut [f64], sender: bool| {
        if k.fresh && sender {
            stamp += 1.0;
            buf.fill(stamp);
        }
    };
    let mut out = vec![point("barrier", 0, measure(c, quick, || c.barrier())?)];
    for &bytes in sizes {
        let elems = usize::try_from(bytes / 8).unwrap_or(usize::MAX).max(1);
        // Every buffer is written before it is measured (no zero-value
        // `vec!`, which maps untouched zero pages that reads find in cache).
        let mut send = vec![1.0 + c.rank() as f64; elems];
        let mut recv = vec![0.5f64; elems];
        let us = measure(c, quick, || {
            rewrite(&mut send, true);
            c.allreduce(&send, &mut recv, ReduceOp::Sum)
        })?;
        out.push(point("allreduce", bytes, us));
        let per = (elems / n).max(1);
        let counts = vec![per; n];
        let displs = cobre_comm::prefix_displs(&counts);
        let mut mine = vec![1.0 + c.rank() as f64; per];
        let mut all = vec![0.5f64; per * n];
        let us = measure(c, quick, || {
            rewrite(&mut mine, true);
            c.allgatherv(&mine, &mut all, &counts, &displs)
        })?;
        out.push(point("allgatherv", bytes, us));
        let mut buf = vec![0.5f64; elems];
        let root = c.rank() == 0;
        let us = measure(c, quick, || {
            rewrite(&mut buf, root);
            c.broadcast(&mut buf, 0)
        })?;
        out.push(point("broadcast", bytes, us));
    }
    Ok(out)
}

/// How `bench-rank`'s rank 0 reports the barrier shape of an shm job.
const BARRIER_LINE: &str = "# barrier: ";

/// The hidden `bench-rank` subcommand: one rank of a measuring job; rank 0
/// prints the points.
///
/// # Errors
/// When the communicator cannot be created or a collective fails.
pub fn rank_main(sizes: &[u64], k: Kernel) -> Result<i32, String> {
    let comm = cobre_shm::create_communicator().map_err(|e| e.to_string())?;
    let points = measure_all(&comm, sizes, k).map_err(|e| e.to_string())?;
    if comm.rank() == 0 {
        if let cobre_shm::Comm::Shm(shm) = &comm {
            println!("{BARRIER_LINE}{}", shm.barrier_choice());
        }
        for p in points {
            println!("RESULT\t{}\t{}\t{:.4}", p.op, p.bytes, p.us);
        }
    }
    Ok(0)
}

/// Who ran a sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// This launcher's shared-memory ranks.
    Shm,
    /// The same with cross-memory reads off (every byte through the
    /// staging buffers), to show what single-copy reads gain.
    ShmStaged,
    /// The same with the barrier forced to one shape
    /// (`COBRE_SHM_BARRIER=flat|tree`), to show what `auto`'s choice gains.
    ShmBarrier(&'static str),
    /// This binary under `mpiexec`, through cobre-comm's MPI backend.
    CobreCommMpi(String),
    /// The C program on an installed MPI.
    Native(String),
}

impl Backend {
    /// Label in tables and legends.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Self::Shm => "shm".into(),
            Self::ShmStaged => "shm staged".into(),
            Self::ShmBarrier(shape) => format!("shm {shape} barrier"),
            Self::CobreCommMpi(m) => format!("{m} via cobre-comm"),
            Self::Native(m) => format!("{m} (C)"),
        }
    }
}

/// One sweep: a backend at a rank count.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// Backend.
    pub backend: Backend,
    /// Ranks.
    pub ranks: usize,
    /// The exact command.
    pub command: String,
    /// Points (empty when the run failed).
    pub points: Vec<Point>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The barrier shape each run's rank 0 reported (shm runs: the shape
    /// and, when `auto` measured both, the start-up timings).
    pub barrier: Vec<String>,
}

impl Sweep {
    /// The time of `op` at `bytes`.
    #[must_use]
    pub fn at(&self, op: &str, bytes: u64) -> Option<f64> {
        self.points
            .iter()
            .find(|p| p.op == op && p.bytes == bytes)
            .map(|p| p.us)
    }
}

/// A command line as a reader would type it.
#[must_use]
pub fn shell_line(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// How a finished command failed: its status and last non-empty stderr line.
#[must_use]
pub fn failure(o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    format!("{}: {last}", o.status)
}

/// Run `cmd` for its `RESULT` lines.
fn sweep(backend: Backend, ranks: usize, mut cmd: Command, k: Kernel) -> Sweep {
    if k.quick {
        cmd.env(ENV_QUICK, "1");
    }
    if k.fresh {
        cmd.env(ENV_FRESH, "1");
    }
    let command = shell_line(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut barrier = Vec::new();
    let (points, error) = match cmd.output() {
        Ok(o) if o.status.success() => {
            let out = String::from_utf8_lossy(&o.stdout);
            barrier.extend(
                out.lines()
                    .filter_map(|l| l.strip_prefix(BARRIER_LINE))
                    .map(str::to_string),
            );
            let points = parse(&out);
            let error = points
                .is_empty()
                .then(|| "the run printed no result".to_string());
            (points, error)
        }
        Ok(o) => (Vec::new(), Some(failure(&o))),
        Err(e) => (Vec::new(), Some(format!("cannot start: {e}"))),
    };
    Sweep {
        backend,
        ranks,
        command,
        points,
        error,
        barrier,
    }
}

fn sizes_arg(sizes: &[u64]) -> String {
    sizes
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// This launcher running `ranks` shm ranks of the measuring body.
fn shm_command(exe: &Path, ranks: usize, sizes: &[u64]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(["-q", "-p", &ranks.to_string(), "--", &exe.to_string_lossy()])
        .args(["bench-rank", "--sizes", &sizes_arg(sizes)]);
    cmd
}

/// The shm sweep at `ranks`.
#[must_use]
pub fn shm(exe: &Path, ranks: usize, sizes: &[u64], k: Kernel) -> Sweep {
    sweep(Backend::Shm, ranks, shm_command(exe, ranks, sizes), k)
}

/// The shm sweep at `ranks` with every message through the staging buffers
/// (`COBRE_SHM_CMA_MIN_BYTES=0`).
#[must_use]
pub fn shm_staged(exe: &Path, ranks: usize, sizes: &[u64], k: Kernel) -> Sweep {
    let mut cmd = shm_command(exe, ranks, sizes);
    cmd.env(cobre_shm::config::ENV_CMA_MIN, "0");
    sweep(Backend::ShmStaged, ranks, cmd, k)
}

/// The barrier shapes to sweep besides `auto` at `ranks` on `cpus` CPUs:
/// the one `auto` does not use, or both when `auto` measures them at
/// start-up (so the report shows what the measurement chose between).
#[must_use]
pub fn other_barrier_shapes(ranks: usize, cpus: usize) -> Vec<&'static str> {
    match BarrierShape::Auto.resolve(ranks, cpus) {
        BarrierShape::Tree => vec!["flat"],
        BarrierShape::Measure => vec!["flat", "tree"],
        BarrierShape::Auto | BarrierShape::Flat => vec!["tree"],
    }
}

/// The shm sweep at `ranks` with the barrier forced to `shape`
/// (`COBRE_SHM_BARRIER=flat|tree`).
#[must_use]
pub fn shm_barrier(
    exe: &Path,
    shape: &'static str,
    ranks: usize,
    sizes: &[u64],
    k: Kernel,
) -> Sweep {
    let mut cmd = shm_command(exe, ranks, sizes);
    cmd.env(cobre_shm::config::ENV_BARRIER, shape);
    sweep(Backend::ShmBarrier(shape), ranks, cmd, k)
}

/// This binary under `mpi`'s `mpiexec` (cobre-comm's MPI backend).
#[must_use]
pub fn cobre_comm_mpi(exe: &Path, mpi: &Mpi, ranks: usize, sizes: &[u64], k: Kernel) -> Sweep {
    let mut cmd = mpi.mpiexec(ranks);
    cmd.arg(exe)
        .args(["bench-rank", "--sizes", &sizes_arg(sizes)]);
    sweep(Backend::CobreCommMpi(mpi.label.to_string()), ranks, cmd, k)
}

/// Merge rounds of sweeps (each round the same backends in the same
/// order) into one sweep per backend whose points are the medians over
/// the rounds that measured them; a failed round is named in `error`.
#[must_use]
pub fn merge_rounds(rounds: Vec<Vec<Sweep>>) -> Vec<Sweep> {
    let total = rounds.len();
    let mut merged: Vec<(Sweep, Vec<Vec<Point>>)> = Vec::new();
    for (i, round) in rounds.into_iter().enumerate() {
        for (k, w) in round.into_iter().enumerate() {
            if k == merged.len() {
                merged.push((
                    Sweep {
                        backend: w.backend.clone(),
                        ranks: w.ranks,
                        command: w.command.clone(),
                        points: Vec::new(),
                        error: None,
                        barrier: Vec::new(),
                    },
                    Vec::new(),
                ));
            }
            let (into, points) = &mut merged[k];
            into.barrier.extend(w.barrier);
            if let Some(e) = w.error {
                let note = if total > 1 {
                    format!("round {} of {total}: {e}", i + 1)
                } else {
                    e
                };
                into.error.get_or_insert(note);
            }
            if !w.points.is_empty() {
                points.push(w.points);
            }
        }
    }
    merged
        .into_iter()
        .map(|(mut w, runs)| {
            if let Some(first) = runs.first() {
                w.points = first
                    .iter()
                    .map(|p| Point {
                        op: p.op.clone(),
                        bytes: p.bytes,
                        us: median(
                            runs.iter()
                                .filter_map(|r| {
                                    r.iter().find(|q| q.op == p.op && q.bytes == p.bytes)
                                })
                                .map(|q| q.us)
                                .collect(),
                        ),
                    })
                    .collect();
            }
            w
        })
        .collect()
}

/// Write out the C program and build it with `mpi`'s `mpicc` in `dir`.
///
/// # Errors
/// When the compiler is missing or fails.
pub fn build_native(mpi: &Mpi, dir: &Path) -> Result<PathBuf, String> {
    let src = dir.join("mpi_collectives.c");
    std::fs::write(&src, include_str!("mpi_collectives.c"))
        .map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    let exe = dir.join(format!("mpi_collectives_{}", mpi.label.replace(' ', "_")));
    let out = Command::new(mpi.mpicc)
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .map_err(|e| format!("{}: {e}", mpi.mpicc))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            mpi.mpicc,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(exe)
}

/// The C program on `mpi`.
#[must_use]
pub fn native(program: &Path, mpi: &Mpi, ranks: usize, sizes: &[u64], k: Kernel) -> Sweep {
    let mut cmd = mpi.mpiexec(ranks);
    cmd.arg(program).args(sizes.iter().map(u64::to_string));
    sweep(Backend::Native(mpi.label.to_string()), ranks, cmd, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_backend_measures_every_point() {
        let points = measure_all(
            &cobre_comm::LocalBackend,
            &[8, 4096],
            Kernel {
                quick: true,
                fresh: true,
            },
        )
        .expect("measure");
        let ops: Vec<(&str, u64)> = points.iter().map(|p| (p.op.as_str(), p.bytes)).collect();
        assert_eq!(
            ops,
            [
                ("barrier", 0),
                ("allreduce", 8),
                ("allgatherv", 8),
                ("broadcast", 8),
                ("allreduce", 4096),
                ("allgatherv", 4096),
                ("broadcast", 4096)
            ]
        );
        assert!(points.iter().all(|p| p.us.is_finite() && p.us >= 0.0));
        let text: String = points
            .iter()
            .map(|p| format!("RESULT\t{}\t{}\t{:.4}\n", p.op, p.bytes, p.us))
            .collect();
        let back = parse(&(text + "noise\nRESULT\tbad\n"));
        assert_eq!(back.len(), points.len());
    }

    fn sweep(us: &[f64], error: Option<&str>) -> Sweep {
        Sweep {
            backend: Backend::Shm,
            ranks: 2,
            command: "cmd".into(),
            points: us
                .iter()
                .enumerate()
                .map(|(i, &us)| Point {
                    op: "broadcast".into(),
                    bytes: 8 << i,
                    us,
                })
                .collect(),
            error: error.map(str::to_string),
            barrier: vec![format!("flat {}", us.len())],
        }
    }

    #[test]
    fn rounds_merge_into_medians_and_name_a_failed_round() {
        let rounds = vec![
            vec![sweep(&[1.0, 10.0], None), sweep(&[5.0], None)],
            vec![sweep(&[3.0, 30.0], None), sweep(&[], Some("died"))],
            vec![sweep(&[2.0, 90.0], None), sweep(&[7.0], None)],
        ];
        let merged = merge_rounds(rounds);
        assert_eq!(merged.len(), 2);
        let us: Vec<f64> = merged[0].points.iter().map(|p| p.us).collect();
        assert_eq!(us, [2.0, 30.0]);
        assert_eq!(merged[0].error, None);
        assert_eq!(merged[1].points.len(), 1);
        // Upper median of the two rounds that measured it.
        assert!((merged[1].points[0].us - 7.0).abs() < 1e-12);
        assert_eq!(merged[1].error.as_deref(), Some("round 2 of 3: died"));
        assert_eq!(merged[0].barrier, ["flat 2"; 3]);
        assert_eq!(merged[1].barrier, ["flat 1", "flat 0", "flat 1"]);
    }
}
