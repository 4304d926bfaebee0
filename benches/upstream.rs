//! `cobre-shm run` (shared engine) against cobre-cli's own `cobre run` on
//! the same upstream Cobre case directory, same seeds, same threads:
//!
//! 1. **Speed**: rounds interleaved (stock, `-p 1`, `-p 2`, stock, …); per
//!    variant the best round's seconds per training iteration
//!    (`training/metadata.json` duration over completed iterations) and LP
//!    solves per second (`solve_stats.total_lp_solves` over that duration).
//! 2. **Memory**: node PSS (the sum of `/proc/<pid>/smaps_rollup` Pss over
//!    the whole process tree, sampled every 50 ms) at its peak, for three
//!    cut-pool sizes (the iteration limit doubled twice); a least-squares
//!    line through the three gives the memory per 1,000 cuts per stage.
//! 3. **Projection** of that per-cut cost to upstream's production
//!    dimensions beside upstream's own plan (`memory-architecture.md`).
//!
//! Needs cobre-cli 0.18 (`scripts/install-cobre-cli.sh`, or `cargo install
//! cobre-cli --version 0.18.0 --locked`); give its binary with
//! `COBRE_CLI=/path/to/cobre` or have `cobre` on PATH; without it the bench
//! prints a notice and measures nothing.
//!
//! Run: `cargo build --release --workspace && cargo bench -p cobre-shm-bench
//! --bench upstream` (about 45 minutes on 2 cores: 40 hydros, 24 stages, 10
//! openings, 32 forward passes, 16/32/64 iterations). `-- --quick`: a
//! 4-hydro case in about a minute; `-- --speed-only`: the speed rounds alone
//! (about 7 minutes).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cobre_shm_sddp::shared::pool::HEAD;
use serde_json::Value;

/// What one run measured.
#[derive(Clone, Debug)]
struct Measured {
    /// Seconds per completed training iteration.
    per_iteration: f64,
    /// LP solves per second of training.
    solves_per_sec: f64,
    /// Highest node PSS seen while the run lived, bytes.
    peak_pss: f64,
    /// Final lower bound, bit for bit.
    lower_bound: f64,
    /// Coefficients per cut record of the shared pool (shared engine only).
    state_len: Option<f64>,
}

/// Pss of one process in bytes (0 once it is gone).
fn pss(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    cobre_shm_sddp::report::read_kib(&text, "Pss:") as f64
}

/// Run `cmd` to the end, sampling its tree's node PSS; the peak in bytes.
fn run_sampled(mut cmd: Command, label: &str) -> f64 {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot start: {e}"));
    let mut peak = 0.0_f64;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        let node: f64 = cobre_shm::launch::descendants(child.id())
            .into_iter()
            .map(pss)
            .sum();
        peak = peak.max(node);
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("{label} failed ({status}): {err}");
    }
    peak
}

fn number(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for p in path {
        at = &at[*p];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("metadata.json has no number at {path:?}"))
}

/// Read back what a finished run wrote into `out`.
fn read_run(out: &Path, peak_pss: f64, cuts_per_stage: f64, stages: f64) -> Measured {
    let text = std::fs::read_to_string(out.join("training/metadata.json")).expect("metadata.json");
    let meta: Value = serde_json::from_str(&text).expect("metadata.json is JSON");
    let secs = number(&meta, &["duration_seconds"]);
    let iterations = number(&meta, &["iterations", "completed"]).max(1.0);
    let solves = number(&meta, &["solve_stats", "total_lp_solves"]);
    let state_len = meta["cobre_shm"]["training_memory"]["shared_regions"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["name"] == "cut_pool"))
        .and_then(|p| p["bytes"].as_f64())
        .map(|b| b / (cuts_per_stage * (stages - 1.0)) / 8.0 - HEAD as f64);
    Measured {
        per_iteration: secs / iterations,
        solves_per_sec: solves / secs.max(1e-9),
        peak_pss,
        lower_bound: number(&meta, &["bounds", "final_lower_bound"]),
        state_len,
    }
}

fn cobre_cli() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COBRE_CLI") {
        return Some(PathBuf::from(p));
    }
    Command::new("cobre")
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("cobre"))
}

/// The case sizes of one bench run.
struct Shape {
    hydros: usize,
    stages: usize,
    passes: usize,
    /// Iteration limits, smallest first (the speed rounds use the first).
    iterations: [usize; 3],
    rounds: usize,
}

/// The command line of a run of a case (first path) into an output directory.
type CommandFor = Box<dyn Fn(&Path, &Path) -> Command>;

/// One way of running a case: its label and its command line.
struct Variant {
    label: String,
    shared_engine: bool,
    command: CommandFor,
}

fn variants(cli: &Path, bin: &Path, cpus: usize) -> Vec<Variant> {
    let mut v = Vec::new();
    let (cli, t) = (cli.to_path_buf(), cpus.to_string());
    v.push(Variant {
        label: format!("cobre run --threads {t}"),
        shared_engine: false,
        command: Box::new(move |case, out| {
            let mut c = Command::new(&cli);
            c.arg("run")
                .arg(case)
                .args(["--quiet", "--threads", &t, "--output"])
                .arg(out);
            c
        }),
    });
    let splits = [(1, cpus), (2, (cpus / 2).max(1))];
    for (ranks, threads) in splits {
        let bin = bin.to_path_buf();
        v.push(Variant {
            label: format!("cobre-shm -p {ranks} --threads {threads} run"),
            shared_engine: true,
            command: Box::new(move |case, out| {
                let mut c = Command::new(&bin);
                c.args(["-q", "-p", &ranks.to_string(), "--threads"])
                    .arg(threads.to_string())
                    .arg("run")
                    .arg(case)
                    .arg("--output")
                    .arg(out);
                c
            }),
        });
    }
    v
}

fn generate(bin: &Path, dir: &Path, shape: &Shape, iterations: usize) -> (PathBuf, String) {
    let case = dir.join(format!("case-{iterations}"));
    let args = format!(
        "--hydros {} --stages {} --openings 10 --forward-passes {} --iterations {iterations} \
         --scenarios 0",
        shape.hydros, shape.stages, shape.passes
    );
    let o = Command::new(bin)
        .arg("generate-cobre-case")
        .arg(&case)
        .args(args.split(' '))
        .output()
        .expect("start cobre-shm");
    assert!(
        o.status.success(),
        "generate-cobre-case: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (case, args)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let speed_only = std::env::args().any(|a| a == "--speed-only");
    let Some(cli) = cobre_cli() else {
        println!(
            "NOTICE: cobre-cli 0.18 not found (scripts/install-cobre-cli.sh, then \
             COBRE_CLI=~/.cache/cobre-shm/cobre-cli/bin/cobre): nothing measured"
        );
        return;
    };
    let shape = if quick {
        Shape {
            hydros: 4,
            stages: 12,
            passes: 8,
            iterations: [8, 16, 32],
            rounds: 2,
        }
    } else {
        Shape {
            hydros: 40,
            stages: 24,
            passes: 32,
            iterations: [16, 32, 64],
            rounds: 3,
        }
    };
    let bin = common::launcher();
    let dir = std::env::temp_dir().join(format!("cobre-shm-bench-upstream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let vs = variants(&cli, &bin, cpus);
    println!("# cobre-shm run (shared engine) vs cobre run (cobre-cli 0.18), {cpus} CPUs\n");
    // results[size][variant]: every round's measurements.
    let mut results: Vec<Vec<Vec<Measured>>> = Vec::new();
    let sizes = if speed_only {
        1
    } else {
        shape.iterations.len()
    };
    for (k, &iterations) in shape.iterations.iter().enumerate().take(sizes) {
        let (case, args) = generate(&bin, &dir, &shape, iterations);
        println!("$ cobre-shm generate-cobre-case CASE {args}");
        let cuts = (iterations * shape.passes) as f64;
        let rounds = if k == 0 { shape.rounds } else { 1 };
        let mut per_variant = vec![Vec::new(); vs.len()];
        for round in 0..rounds {
            for (i, v) in vs.iter().enumerate() {
                let out = dir.join(format!("out-{k}-{i}-{round}"));
                let started = Instant::now();
                let peak = run_sampled((v.command)(&case, &out), &v.label);
                let m = read_run(&out, peak, cuts, shape.stages as f64);
                eprintln!(
                    "  {iterations} iterations, round {round}: {} {:.1} s, peak {:.1} MB",
                    v.label,
                    started.elapsed().as_secs_f64(),
                    common::mb(peak)
                );
                per_variant[i].push(m);
                let _ = std::fs::remove_dir_all(&out);
            }
        }
        results.push(per_variant);
    }
    println!();
    speed_table(&vs, &results[0], shape.iterations[0]);
    if !speed_only {
        memory_tables(&vs, &results, &shape);
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn speed_table(vs: &[Variant], rounds: &[Vec<Measured>], iterations: usize) {
    println!(
        "## Speed ({iterations} iterations, {} interleaved rounds, best round per row)\n",
        rounds[0].len()
    );
    println!("| run | s / iteration | × stock | LP solves / s | final lower bound |");
    println!("|---|---:|---:|---:|---:|");
    let best = |ms: &[Measured]| {
        ms.iter()
            .min_by(|a, b| a.per_iteration.total_cmp(&b.per_iteration))
            .cloned()
            .expect("a round")
    };
    let base = best(&rounds[0]).per_iteration;
    for (v, ms) in vs.iter().zip(rounds) {
        let b = best(ms);
        println!(
            "| `{}` | {:.4} | {:.3} | {:.0} | {:.6} |",
            v.label,
            b.per_iteration,
            b.per_iteration / base,
            b.solves_per_sec,
            b.lower_bound
        );
    }
    let lbs: Vec<u64> = rounds
        .iter()
        .flatten()
        .map(|m| m.lower_bound.to_bits())
        .collect();
    if lbs.iter().all(|b| *b == lbs[0]) {
        println!("\nSame final lower bound, bit for bit, in every run.\n");
    } else {
        println!("\nWARNING: the final lower bounds differ between runs.\n");
    }
}

fn memory_tables(vs: &[Variant], results: &[Vec<Vec<Measured>>], shape: &Shape) {
    let cuts: Vec<usize> = shape.iterations.iter().map(|i| i * shape.passes).collect();
    println!("## Memory: peak node PSS (MB) by cuts per stage\n");
    print!("| run |");
    for c in &cuts {
        print!(" {c} cuts |");
    }
    println!(" MB per 1,000 cuts per stage (fit) |");
    println!("|---|{}---:|", "---:|".repeat(cuts.len()));
    // Peak of a size: the median over its rounds (one round past the first size).
    let peak = |ms: &[Measured]| {
        let mut p: Vec<f64> = ms.iter().map(|m| m.peak_pss).collect();
        p.sort_by(f64::total_cmp);
        p[p.len() / 2]
    };
    let mut slopes = Vec::new();
    for (i, v) in vs.iter().enumerate() {
        let points: Vec<(f64, f64)> = cuts
            .iter()
            .zip(results)
            .map(|(&c, r)| (c as f64, peak(&r[i])))
            .collect();
        let (_, slope) = common::fit(&points);
        slopes.push(slope);
        print!("| `{}` |", v.label);
        for (_, y) in &points {
            print!(" {:.1} |", common::mb(*y));
        }
        println!(" {:.1} |", common::mb(slope * 1000.0));
    }
    let last = results.last().expect("three sizes");
    let (stock, p1, p2) = (peak(&last[0]), peak(&last[1]), peak(&last[2]));
    println!(
        "\nAt {} cuts per stage: `{}` / `{}` = {:.3}; `{}` / stock = {:.3}. \
         Per 1,000 cuts per stage, shared engine (`{}`) / stock = {:.3}.\n",
        cuts[cuts.len() - 1],
        vs[2].label,
        vs[1].label,
        p2 / p1,
        vs[1].label,
        p1 / stock,
        vs[1].label,
        slopes[1] / slopes[0]
    );
    let state = vs
        .iter()
        .zip(last)
        .find(|(v, _)| v.shared_engine)
        .and_then(|(_, ms)| ms[0].state_len)
        .unwrap_or(f64::NAN);
    projection(slopes[0], slopes[1], state, shape.stages);
}

/// Upstream's production dimensions (`production-scale-reference.md`):
/// state dimension, cuts per stage, stages; its planned node total
/// (`memory-architecture.md`, 4 ranks per node, HiGHS).
const PRODUCTION: (f64, f64, f64) = (2080.0, 15_000.0, 60.0);
const UPSTREAM_PLAN_GB: f64 = 27.7;
const PLAN_RANKS: f64 = 4.0;

fn projection(stock_slope: f64, shared_slope: f64, state: f64, stages: usize) {
    let (d, cuts, t) = PRODUCTION;
    // Bytes per cut coefficient (one cut in every stage adds `stages - 1`
    // records of `state` coefficients).
    let per_coef = |slope: f64| slope / ((stages as f64 - 1.0) * state);
    let cut_bytes = d * cuts * t;
    let ours = per_coef(shared_slope) * cut_bytes;
    let stock = per_coef(stock_slope) * cut_bytes * PLAN_RANKS;
    println!(
        "## Production projection (cut-dependent memory only)\n\n\
         Measured bytes per cut coefficient (state dimension of the case {state:.0}): stock \
         {:.1}, shared engine {:.1}. Linear in coefficients, at {d:.0} state variables × \
         {cuts:.0} cuts × {t:.0} stages with {PLAN_RANKS:.0} ranks per node: stock {:.1} GB \
         per node (a copy per rank), shared engine {:.1} GB per node (one copy); upstream's \
         own plan for the node: {UPSTREAM_PLAN_GB} GB. The shared cut pool alone holds \
         {:.1} GB at those dimensions ({HEAD} + {d:.0} numbers of 8 bytes per cut and stage). \
         A small case's per-coefficient cost carries each cut's fixed overhead (LP row, \
         basis entry), so the projection from it is an upper bound.\n",
        per_coef(stock_slope),
        per_coef(shared_slope),
        stock / 1e9,
        ours / 1e9,
        (d + HEAD as f64) * 8.0 * cuts * t / 1e9
    );
}
