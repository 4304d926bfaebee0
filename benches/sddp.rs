//! SDDP benchmarks, each printing a table with the command that produced it:
//!
//! 1. time per iteration of a generated case (20 hydros, 24 stages, 10
//!    openings, 40 forward passes) at 1×1, 1×2, 2×1, 2×2, 4×1 (ranks ×
//!    threads), all in the same run;
//! 2. memory: summed PSS of all ranks, shared regions vs `--replicate`, at
//!    1, 2 and 4 ranks, on a case whose cut pool is tens of MB;
//! 3. LP solves per second on one thread, warm-started vs cold;
//! 4. (launcher built with `--features mpi`) time per iteration with shm
//!    `-p 2` vs `mpiexec -n 2`, and `-p 4` vs `mpiexec -n 4` (oversubscribed),
//!    through cobre-comm's MPI backend; an Open MPI column when
//!    `benches/build-ompi-launcher.sh` built `cobre-shm-openmpi`.
//!
//! Run: `cargo build --release --workspace && cargo bench -p cobre-shm-bench --bench sddp`
//! (`-- --quick` for a shorter run); for section 4:
//! `cargo build --release --workspace --features mpi && cargo bench -p cobre-shm-bench --features mpi --bench sddp`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "common.rs"]
mod common;

use cobre_comm::LocalBackend;
use cobre_shm::Comm;
use cobre_shm_sddp::hydrothermal::generate::GenerateSpec;
use cobre_shm_sddp::hydrothermal::{case::Case, HydroThermal};
use cobre_shm_sddp::{train, Hooks, Model, TrainReport};

use common::{launcher, write_case};

/// Train with the launcher built next to this benchmark.
fn train_run(
    case: &Path,
    out: &Path,
    ranks: usize,
    threads: usize,
    extra: &[&str],
) -> serde_json::Value {
    common::train_summary(&launcher(), case, out, ranks, threads, extra)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = std::env::temp_dir().join(format!("cobre-shm-bench-sddp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");

    // 1. Iteration time.
    let iterations = if quick { 2 } else { 4 };
    let spec = GenerateSpec {
        hydros: 20,
        stages: 24,
        openings: 10,
        thermals: 5,
        seed: 1,
    };
    let (case_path, case) = write_case(&dir, &spec);
    println!("## 1. time per iteration: 20 hydros, 24 stages, 10 openings, 40 forward passes, {iterations} iterations\n");
    println!("| ranks × threads | s / iteration | LP solves / s | speed-up vs 1×1 | lower bound after {iterations} |");
    println!("|---|---:|---:|---:|---:|");
    let mut base = None;
    for (r, t) in [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1)] {
        let s = train_run(
            &case_path,
            &dir.join(format!("it_{r}x{t}")),
            r,
            t,
            &[
                "--iterations",
                &iterations.to_string(),
                "--forward-passes",
                "40",
            ],
        );
        let total = s["time_secs"]["total"].as_f64().unwrap_or(f64::NAN);
        let per = total / iterations as f64;
        let solves = s["lp_solves"].as_f64().unwrap_or(f64::NAN);
        let b = *base.get_or_insert(per);
        println!(
            "| {r} × {t} | {per:.3} | {:.0} | {:.2}× | {} |",
            solves / total,
            b / per,
            s["final"]["lower_bound"]
        );
    }

    // 2. Memory: shared regions vs private copies.
    let spec = GenerateSpec {
        hydros: 30,
        stages: 24,
        openings: 4,
        thermals: 2,
        seed: 2,
    };
    let (mem_case, _) = write_case(&dir, &spec);
    // Every iteration runs (no time limit): shared regions are reserved
    // (fallocate) and first-touched whole at creation, so a pool sized for
    // iterations that never run would count against the shared side only.
    let mem_args = ["--iterations", "20", "--forward-passes", "40"];
    println!("\n## 2. memory: summed PSS of all ranks (30 hydros, 24 stages, 20 iterations × 40 passes)\n");
    println!(
        "| ranks | opening tree + cut pool | shared: total PSS | --replicate: total PSS | saved |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for r in [1usize, 2, 4] {
        let shared = train_run(&mem_case, &dir.join(format!("mem_s{r}")), r, 1, &mem_args);
        let replicated = train_run(
            &mem_case,
            &dir.join(format!("mem_r{r}")),
            r,
            1,
            &[&mem_args[..], &["--replicate"]].concat(),
        );
        let bytes: u64 = shared["shared_regions"]
            .as_array()
            .map_or(0, |a| a.iter().filter_map(|x| x["bytes"].as_u64()).sum());
        let s = shared["memory"]["node_pss_bytes"].as_u64().unwrap_or(0);
        let p = replicated["memory"]["node_pss_bytes"].as_u64().unwrap_or(0);
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "| {r} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB ({:.0}%) |",
            mb(bytes),
            mb(s),
            mb(p),
            mb(p.saturating_sub(s)),
            100.0 * (p as f64 - s as f64) / p as f64
        );
    }

    // 3. LP solves per second on one workspace: warm re-solves after an RHS
    // change, against a stage change (load from the cache) then a cold solve.
    let (mut opts, seed) = cobre_shm_sddp::hydrothermal::options(&case, 1);
    opts.iterations = 3;
    opts.forward_passes = 40;
    let model = HydroThermal::new(&case, seed);
    let report = train(
        &Comm::Local(LocalBackend),
        &model,
        &opts,
        Hooks::iterations(&mut |_| {}),
    )
    .expect("train");
    let (warm, cold, cuts) = solve_rates(&case, &report, if quick { 500 } else { 3000 });
    println!(
        "\n## 3. LP solves per second on one thread (stage 2 of the 20-hydro case with {cuts} cuts; openings cycled)\n"
    );
    println!("| start | solves / s | µs / solve |\n|---|---:|---:|");
    println!(
        "| stage load + cold solve | {cold:.0} | {:.1} |",
        1e6 / cold
    );
    println!(
        "| warm (previous basis, new RHS) | {warm:.0} | {:.1} |",
        1e6 / warm
    );
    println!("\nwarm / (load + cold): {:.2}×", warm / cold);

    // 4. The same engine on shm and on MPI.
    versus_mpi(&dir, &case_path, quick);
    let _ = std::fs::remove_dir_all(dir);
}

/// An MPI a launcher binary is linked against: label, `mpiexec`, its arguments.
type MpiOf = (&'static str, &'static str, Vec<&'static str>);

/// Which MPI a launcher binary is linked against: `mpiexec` and its arguments.
fn mpi_of(bin: &Path) -> Option<MpiOf> {
    let ldd = Command::new("ldd").arg(bin).output().ok()?;
    let libs = String::from_utf8_lossy(&ldd.stdout).to_string();
    if libs.contains("libmpich") {
        Some(("MPICH", "mpiexec.mpich", vec![]))
    } else if libs.contains("libmpi.so") {
        Some((
            "Open MPI",
            "mpiexec.openmpi",
            vec![
                "--allow-run-as-root",
                "--oversubscribe",
                "--bind-to",
                "none",
                "--mca",
                "btl",
                "self,vader",
            ],
        ))
    } else {
        None
    }
}

fn versus_mpi(dir: &Path, case: &Path, quick: bool) {
    let iterations = if quick { 1 } else { 2 };
    let mut bins = vec![launcher()];
    let ompi = launcher().with_file_name("cobre-shm-openmpi");
    if ompi.exists() {
        bins.push(ompi);
    }
    let mpis: Vec<(PathBuf, MpiOf)> = bins
        .into_iter()
        .filter_map(|b| mpi_of(&b).map(|m| (b, m)))
        .collect();
    println!("\n## 4. shm vs MPI: seconds per iteration, same case as 1 (40 forward passes, {iterations} iterations), 1 thread per rank\n");
    if mpis.is_empty() {
        println!("skipped: the launcher is not built with `--features mpi` (see the command at the top of this file)");
        return;
    }
    let iters = iterations.to_string();
    let args = ["--iterations", iters.as_str(), "--forward-passes", "40"];
    print!("| ranks | shm |");
    for (_, (label, _, _)) in &mpis {
        print!(" {label} | {label} / shm |");
    }
    println!("\n|---:|---:|{}", "---:|---:|".repeat(mpis.len()));
    for n in [2usize, 4] {
        let shm = train_run(case, &dir.join(format!("vs_shm{n}")), n, 1, &args);
        let shm_per = shm["time_secs"]["total"].as_f64().unwrap_or(f64::NAN) / iterations as f64;
        print!("| {n} | {shm_per:.3} s |");
        for (bin, (label, mpiexec, extra)) in &mpis {
            let out = dir.join(format!("vs_{}{n}", label.replace(' ', "_")));
            let o = Command::new(mpiexec)
                .args(extra)
                .args(["-n", &n.to_string()])
                .arg(bin)
                .args(["--threads", "1", "train"])
                .arg(case)
                .args(args)
                .args(["--quiet", "--backend", "mpi", "--output"])
                .arg(&out)
                .output()
                .expect("mpiexec");
            if !o.status.success() {
                print!(" failed | - |");
                continue;
            }
            let s: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("summary.json")).expect("summary"),
            )
            .expect("json");
            let per = s["time_secs"]["total"].as_f64().unwrap_or(f64::NAN) / iterations as f64;
            let same = s["final"] == shm["final"];
            print!(
                " {per:.3} s{} | {:.2}× |",
                if same { "" } else { " (different result!)" },
                per / shm_per
            );
        }
        println!();
    }
}

/// Warm re-solves per second and (stage load + cold solve) per second on
/// stage 2 of `case` holding every cut `report` produced for it, and the
/// number of those cuts.
fn solve_rates(case: &Case, report: &TrainReport, solves: usize) -> (f64, f64, usize) {
    let t = 1;
    let model = HydroThermal::new(case, 0);
    let cuts = report.policy.len(t);
    let mut ws = common::frozen_workspace(&model, t, &report.policy.stages[t]);
    let nh = case.hydros.len();
    let mut inflows = vec![0.0; case.openings(t) * nh];
    case.fill_stage_inflows(t, &mut inflows);
    let state: Vec<f64> = case
        .hydros
        .iter()
        .map(|h| 0.5 * (h.min_volume + h.max_volume))
        .collect();
    let mut rate = |reload: bool| {
        ws.load().expect("load");
        let t0 = Instant::now();
        for i in 0..solves {
            if reload {
                ws.load().expect("load");
            }
            let k = i % case.openings(t);
            let a = &inflows[k * nh..(k + 1) * nh];
            let mut set =
                |s: &mut cobre_solver::HighsSolver| model.prepare(t, a, &state, &mut (), s);
            ws.solve(None, &mut set, &String::new).expect("solve");
        }
        solves as f64 / t0.elapsed().as_secs_f64()
    };
    let cold = rate(true);
    let warm = rate(false);
    (warm, cold, cuts)
}
