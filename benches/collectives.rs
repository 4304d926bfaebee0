//! Collective latency/bandwidth at 2, 4 and 8 ranks (real processes), with
//! the same generic body over the shm backend and — in a build with
//! `--features mpi` — over MPI through cobre-comm's ferrompi backend, and in
//! the same run native `MPI_Barrier`/`MPI_Allreduce`/`MPI_Allgatherv`/
//! `MPI_Bcast` of every MPI installed (`benches/mpi_collectives.c`, built
//! here with that MPI's `mpicc`), next to the hardware floor: the round trip
//! of one cache line between two processes spinning on it, and `memcpy`.
//!
//! Run: `cargo bench --bench collectives` (shm and native MPI), or
//! `cargo build --release --workspace --features mpi &&
//!  cargo bench --features mpi --bench collectives` (adds cobre-comm's MPI
//! backend). Add `-- --quick` for fewer repetitions.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cobre_comm::{Communicator, ReduceOp};
use cobre_shm::os::segment::Segment;

const ROLE: &str = "COBRE_BENCH_ROLE";
const OPS: [&str; 6] = [
    "barrier",
    "allreduce 4 x f64",
    "allreduce 4096 x f64",
    "allgatherv 64 KiB",
    "allgatherv 16 MiB",
    "broadcast 1 MiB",
];

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if set.set(cpu % cpus).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick") || std::env::var("COBRE_BENCH_QUICK").is_ok()
}

/// Median over batches of the mean time per call in a batch, in µs. Rank 0
/// sizes the batches (~20 ms each, 3–30 of them) from a 3-call calibration
/// and broadcasts the plan — the same method as `mpi_collectives.c`.
fn measure<C: Communicator>(c: &C, mut op: impl FnMut()) -> f64 {
    c.barrier().expect("barrier");
    let t = Instant::now();
    for _ in 0..3 {
        op();
    }
    let per_call = (t.elapsed().as_secs_f64() / 3.0).max(1e-9);
    let mut plan = [0u64; 2];
    if c.rank() == 0 {
        let batch = ((0.02 / per_call) as u64).clamp(1, 1000);
        let mut batches = ((0.5 / (batch as f64 * per_call)) as u64).clamp(3, 30);
        if quick() {
            batches = batches.min(6);
        }
        plan = [batch, batches];
    }
    c.broadcast(&mut plan, 0).expect("broadcast");
    let mut per = Vec::with_capacity(plan[1] as usize);
    for _ in 0..plan[1] {
        c.barrier().expect("barrier");
        let t = Instant::now();
        for _ in 0..plan[0] {
            op();
        }
        per.push(t.elapsed().as_secs_f64() * 1e6 / plan[0] as f64);
    }
    median(per)
}

/// The benchmark body, identical for every backend.
fn body<C: Communicator>(c: &C) -> Vec<(&'static str, f64)> {
    let (r, n) = (c.rank(), c.size());
    let mut out = Vec::new();
    out.push((OPS[0], measure(c, || c.barrier().expect("barrier"))));
    let send = [1.0f64, 2.0, 3.0, 4.0];
    let mut recv = [0.0f64; 4];
    out.push((
        OPS[1],
        measure(c, || {
            c.allreduce(&send, &mut recv, ReduceOp::Sum)
                .expect("allreduce")
        }),
    ));
    let send = vec![1.0f64; 4096];
    let mut recv = vec![0.0f64; 4096];
    out.push((
        OPS[2],
        measure(c, || {
            c.allreduce(&send, &mut recv, ReduceOp::Sum)
                .expect("allreduce")
        }),
    ));
    for (label, total) in [(OPS[3], 64usize << 10), (OPS[4], 16 << 20)] {
        let per = total / 8 / n;
        let counts = vec![per; n];
        let displs = cobre_comm::prefix_displs(&counts);
        let send = vec![r as f64; per];
        let mut recv = vec![0.0f64; per * n];
        out.push((
            label,
            measure(c, || {
                c.allgatherv(&send, &mut recv, &counts, &displs)
                    .expect("allgatherv")
            }),
        ));
    }
    let mut buf = vec![1.5f64; (1 << 20) / 8];
    out.push((
        OPS[5],
        measure(c, || c.broadcast(&mut buf, 0).expect("broadcast")),
    ));
    out
}

fn rank_main() {
    let comm = cobre_shm::create_communicator().expect("create communicator");
    let results = body(&comm);
    if comm.rank() == 0 {
        for (op, us) in results {
            println!("RESULT\t{}\t{op}\t{us:.3}", comm.size());
        }
    }
}

/// One side of the raw cache-line ping-pong.
fn pingpong_main(ping: bool) {
    let name = std::env::var("COBRE_BENCH_SEGMENT").expect("segment name");
    let iters: u64 = std::env::var("COBRE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    pin(usize::from(!ping));
    let seg = loop {
        if let Ok(cobre_shm::os::segment::Opened::Ready(s)) = Segment::open(&name, 4096) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let (a, b) = (seg.atomic_u64(0), seg.atomic_u64(128));
    let ready = seg.atomic_u64(256);
    ready.fetch_add(1, Ordering::SeqCst);
    while ready.load(Ordering::SeqCst) < 2 {
        std::hint::spin_loop();
    }
    let t = Instant::now();
    for i in 1..=iters {
        if ping {
            a.store(i, Ordering::Release);
            while b.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
        } else {
            while a.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            b.store(i, Ordering::Release);
        }
    }
    if ping {
        println!(
            "PINGPONG\t{:.4}",
            t.elapsed().as_secs_f64() * 1e6 / iters as f64
        );
    }
}

/// Measurements of one run: (operation, µs).
type Results = Vec<(String, f64)>;

/// The `RESULT\t<ranks>\t<operation>\t<µs>` lines of a run's output.
fn parse_results(stdout: &[u8]) -> Option<Results> {
    let res: Results = String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4 && f[0] == "RESULT")
                .then(|| (f[2].to_string(), f[3].parse().unwrap_or(f64::NAN)))
        })
        .collect();
    (!res.is_empty()).then_some(res)
}

/// Run `cmd` and collect its results.
fn results_of(mut cmd: Command) -> Option<Results> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if quick() {
        cmd.env("COBRE_BENCH_QUICK", "1");
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("benchmark run failed: {}", err.lines().last().unwrap_or(""));
        return None;
    }
    parse_results(&out.stdout)
}

fn self_cmd() -> Command {
    let mut c = Command::new(std::env::current_exe().expect("bench binary"));
    c.env(ROLE, "rank");
    c
}

fn run_shm(n: usize) -> Option<Results> {
    let name = format!("/cobre-shm-bench.{}.{n}", std::process::id());
    let kids: Vec<_> = (0..n)
        .map(|r| {
            let mut c = self_cmd();
            c.env("COBRE_COMM_BACKEND", "shm")
                .env("COBRE_SHM_NAME", &name)
                .env("COBRE_SHM_RANK", r.to_string())
                .env("COBRE_SHM_SIZE", n.to_string())
                .stdout(Stdio::piped());
            if quick() {
                c.env("COBRE_BENCH_QUICK", "1");
            }
            c.spawn().expect("spawn rank")
        })
        .collect();
    let mut res = None;
    for k in kids {
        let out = k.wait_with_output().expect("rank");
        res = res.or(parse_results(&out.stdout));
    }
    res
}

/// An installed MPI: label, `mpiexec`, its arguments, `mpicc`.
struct Mpi {
    label: &'static str,
    mpiexec: &'static str,
    args: Vec<&'static str>,
    mpicc: &'static str,
}

fn installed_mpis() -> Vec<Mpi> {
    let have = |p: &str| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let mut v = Vec::new();
    if have("mpiexec.mpich") && have("mpicc.mpich") {
        v.push(Mpi {
            label: "MPICH",
            mpiexec: "mpiexec.mpich",
            args: vec![],
            mpicc: "mpicc.mpich",
        });
    }
    if have("mpiexec.openmpi") && have("mpicc.openmpi") {
        v.push(Mpi {
            label: "Open MPI",
            mpiexec: "mpiexec.openmpi",
            args: vec![
                "--allow-run-as-root",
                "--oversubscribe",
                "--bind-to",
                "none",
                "--mca",
                "btl",
                "self,vader",
            ],
            mpicc: "mpicc.openmpi",
        });
    }
    v
}

fn build_c(mpi: &Mpi, dir: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/mpi_collectives.c");
    let exe = dir.join(format!("mpi_collectives_{}", mpi.label.replace(' ', "_")));
    let ok = Command::new(mpi.mpicc)
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(src)
        .status()
        .ok()?
        .success();
    ok.then_some(exe)
}

fn mpiexec(mpi: &Mpi, n: usize, program: Command) -> Command {
    let mut c = Command::new(mpi.mpiexec);
    c.args(&mpi.args)
        .args(["-n", &n.to_string()])
        .arg(program.get_program())
        .args(program.get_args());
    for (k, v) in program.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

fn raw_round_trip_us() -> f64 {
    let name = format!("/cobre-shm-bench.pingpong.{}", std::process::id());
    let seg = Segment::create_exclusive(&name, 4096).expect("segment");
    let iters = if quick() { 200_000 } else { 2_000_000 };
    let kids: Vec<_> = ["ping", "pong"]
        .iter()
        .map(|role| {
            Command::new(std::env::current_exe().expect("bench binary"))
                .env(ROLE, role)
                .env("COBRE_BENCH_SEGMENT", &name)
                .env("COBRE_BENCH_ITERS", iters.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut us = f64::NAN;
    for k in kids {
        let out = k.wait_with_output().expect("ping-pong process");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(v) = line.strip_prefix("PINGPONG\t") {
                us = v.parse().unwrap_or(f64::NAN);
            }
        }
    }
    drop(seg);
    let _ = Segment::unlink(&name);
    us
}

fn memcpy_gbps(bytes: usize, reps: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        runs.push((bytes * reps) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    median(runs)
}

fn value(res: &Option<Results>, op: &str) -> Option<f64> {
    res.as_ref()?.iter().find(|(o, _)| o == op).map(|x| x.1)
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("rank") => return rank_main(),
        Ok("ping") => return pingpong_main(true),
        Ok("pong") => return pingpong_main(false),
        _ => {}
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = std::env::temp_dir().join(format!("cobre-shm-bench-coll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    println!("# collectives: shm vs MPI ({cpus} CPUs; ranks not pinned)\n");
    let rt = raw_round_trip_us();
    let beyond = memcpy_gbps(64 << 20, 10);
    println!("raw cache-line round trip between two processes (pinned to two cores): {rt:.3} µs");
    println!(
        "memcpy: {:.1} GB/s (256 KiB, in cache), {beyond:.1} GB/s (64 MiB)\n",
        memcpy_gbps(256 << 10, 2000)
    );
    let mpis = installed_mpis();
    let natives: Vec<(&Mpi, PathBuf)> = mpis
        .iter()
        .filter_map(|m| build_c(m, &dir).map(|p| (m, p)))
        .collect();
    let via_comm = cfg!(feature = "mpi")
        .then(|| mpis.iter().find(|m| m.label == "MPICH"))
        .flatten();
    if mpis.is_empty() {
        println!("no MPI installed: MPI columns skipped (scripts/install-mpi.sh installs Open MPI and MPICH)\n");
    }
    if !cfg!(feature = "mpi") {
        println!("built without the `mpi` feature: the cobre-comm MPI backend column is skipped\n");
    }
    for n in [2usize, 4, 8] {
        let shm = run_shm(n);
        let comm_mpi = via_comm.and_then(|m| results_of(mpiexec(m, n, self_cmd())));
        let native: Vec<(&str, Option<Results>)> = natives
            .iter()
            .map(|(m, exe)| (m.label, results_of(mpiexec(m, n, Command::new(exe)))))
            .collect();
        print!("### {n} ranks\n\n| operation | shm |");
        if via_comm.is_some() {
            print!(" MPICH via cobre-comm |");
        }
        for (label, _) in &native {
            print!(" {label} (C) | {label} / shm |");
        }
        print!("\n|---|---:|");
        if via_comm.is_some() {
            print!("---:|");
        }
        println!("{}", "---:|---:|".repeat(native.len()));
        for op in OPS {
            let s = value(&shm, op);
            let fmt = |v: Option<f64>| v.map_or("failed".to_string(), |x| format!("{x:.2} µs"));
            print!("| {op} | {} |", fmt(s));
            if via_comm.is_some() {
                print!(" {} |", fmt(value(&comm_mpi, op)));
            }
            for (_, res) in &native {
                let m = value(res, op);
                let ratio = match (m, s) {
                    (Some(m), Some(s)) => format!("{:.1}x", m / s),
                    _ => "-".into(),
                };
                print!(" {} | {ratio} |", fmt(m));
            }
            println!();
        }
        if n == 2 {
            if let Some(b) = value(&shm, "barrier") {
                println!("\nshm barrier at 2 ranks / raw round trip: {:.2}x", b / rt);
            }
        }
        if let Some(us) = value(&shm, "allgatherv 16 MiB") {
            // Each rank copies (1 + 1/R) of the payload; summed over ranks.
            let gbps = (16u64 << 20) as f64 * (n as f64 + 1.0) / (us * 1e-6) / 1e9;
            println!(
                "shm allgatherv 16 MiB: {gbps:.1} GB/s copied over all ranks = {:.0}% of memcpy on {} core(s)",
                100.0 * gbps / (beyond * n.min(cpus) as f64),
                n.min(cpus)
            );
        }
        println!();
    }
    let _ = std::fs::remove_dir_all(dir);
}
