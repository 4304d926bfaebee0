//! `cobre-shm run` against cobre-cli's own `cobre run` on the same upstream
//! Cobre case directory and the same threads, side by side in one run:
//! time per training iteration (`training/metadata.json` duration over
//! completed iterations; setup and simulation excluded), rounds interleaved,
//! median over rounds. Also checks that both give the same lower bound.
//!
//! Needs cobre-cli 0.18 (`cargo install cobre-cli --version 0.18.0 --locked`);
//! give its binary with `COBRE_CLI=/path/to/cobre` or have `cobre` on PATH.
//! Run: `cargo build --release --workspace && cargo bench -p cobre-shm-bench --bench upstream`
//! (add `-- --quick` for a smaller case and fewer rounds).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Seconds per iteration and the final lower bound of a finished run.
fn read_run(out: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(out.join("training/metadata.json")).expect("metadata.json");
    let meta: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let secs = meta["duration_seconds"].as_f64().expect("duration");
    let iterations = meta["iterations"]["completed"]
        .as_f64()
        .expect("iterations");
    let lb = meta["bounds"]["final_lower_bound"].as_f64().expect("bound");
    (secs / iterations.max(1.0), lb)
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

fn run(mut cmd: Command, label: &str) {
    let o = cmd.output().expect("start");
    assert!(
        o.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Builds the command line of a run writing into the given output directory.
type CommandFor = Box<dyn Fn(&Path) -> Command>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let Some(cli) = cobre_cli() else {
        println!(
            "NOTICE: cobre-cli not found (cargo install cobre-cli --version 0.18.0 --locked; \
             then COBRE_CLI=/path/to/cobre): nothing measured"
        );
        return;
    };
    let bin = common::launcher();
    let dir = std::env::temp_dir().join(format!("cobre-shm-bench-upstream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let case = dir.join("case");
    let (hydros, stages, iterations, passes, rounds) = if quick {
        ("4", "12", "10", "8", 3)
    } else {
        ("20", "24", "20", "16", 5)
    };
    let gen = [
        "--hydros",
        hydros,
        "--stages",
        stages,
        "--openings",
        "10",
        "--iterations",
        iterations,
        "--forward-passes",
        passes,
        "--scenarios",
        "0",
    ];
    let mut c = Command::new(&bin);
    c.arg("generate-cobre-case").arg(&case).args(gen);
    run(c, "generate-cobre-case");
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "# cobre-shm run vs cobre run (cobre-cli 0.18), {cpus} CPUs, {rounds} interleaved rounds\n"
    );
    println!(
        "$ {} generate-cobre-case CASE {}\n",
        bin.display(),
        gen.join(" ")
    );
    // (label, command line builder)
    let threads = cpus.to_string();
    let half = (cpus / 2).max(1).to_string();
    let mut variants: Vec<(String, CommandFor)> = Vec::new();
    {
        let (cli, t) = (cli.clone(), threads.clone());
        let case = case.clone();
        variants.push((
            format!("cobre run --threads {t}"),
            Box::new(move |out| {
                let mut c = Command::new(&cli);
                c.arg("run")
                    .arg(&case)
                    .args(["--quiet", "--threads", &t, "--output"])
                    .arg(out);
                c
            }),
        ));
    }
    for (ranks, t) in [("1", threads.clone()), ("2", half.clone())] {
        if ranks == "2" && cpus < 2 {
            continue;
        }
        let (bin, case) = (bin.clone(), case.clone());
        variants.push((
            format!("cobre-shm -p {ranks} --threads {t} run"),
            Box::new(move |out| {
                let mut c = Command::new(&bin);
                c.args(["-q", "-p", ranks, "--threads", &t, "run"])
                    .arg(&case)
                    .arg("--output")
                    .arg(out);
                c
            }),
        ));
    }
    let mut times = vec![Vec::new(); variants.len()];
    let mut bounds = vec![0.0; variants.len()];
    for round in 0..rounds {
        for (i, (label, cmd)) in variants.iter().enumerate() {
            let out = dir.join(format!("out-{i}-{round}"));
            run(cmd(&out), label);
            let (per, lb) = read_run(&out);
            times[i].push(per);
            bounds[i] = lb;
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    let base = median(times[0].clone());
    println!("| run | s / iteration (median) | ratio to cobre run | final lower bound |");
    println!("|---|---:|---:|---:|");
    for (i, (label, _)) in variants.iter().enumerate() {
        let m = median(times[i].clone());
        println!(
            "| `{label}` | {m:.4} | {:.2} | {:.6} |",
            m / base,
            bounds[i]
        );
    }
    if bounds.iter().any(|b| b.to_bits() != bounds[0].to_bits()) {
        println!("\nWARNING: the lower bounds differ");
    } else {
        println!("\nSame lower bound, bit for bit, in every row.");
    }
    let _ = std::fs::remove_dir_all(dir);
}
