//! Collective latency and bandwidth: a thin wrapper over
//! `cobre-shm bench --only machine,collectives`, which measures the shm
//! backend, cobre-comm's MPI backend (in a build with `--features mpi`) and
//! every installed MPI natively, against message size and rank count, next
//! to the machine's copy bandwidth and cache-line round trip.
//!
//! Run: `cargo build --release --workspace && cargo bench -p cobre-shm-bench --bench collectives`
//! (with `--features mpi` on both to add cobre-comm's MPI backend). Arguments
//! after `--` go to `cobre-shm bench` (e.g. `-- --quick`, `-- --full`,
//! `-- --rank-counts 2,4,8 --sizes 8,65536`). The report (report.md,
//! results.json, SVG plots) lands in `target/bench-collectives/`.

mod common;

use std::process::Command;

fn main() {
    let bin = common::launcher();
    let out = bin.parent().and_then(std::path::Path::parent).map_or_else(
        || std::path::PathBuf::from("bench-collectives"),
        |d| d.join("bench-collectives"),
    );
    // Cargo passes `--bench` to harness-less benches; drop it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    println!(
        "$ {} bench --only machine,collectives --output {} {}",
        bin.display(),
        out.display(),
        args.join(" ")
    );
    let status = Command::new(&bin)
        .args(["bench", "--only", "machine,collectives", "--output"])
        .arg(&out)
        .args(&args)
        .status()
        .expect("run cobre-shm bench");
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    match std::fs::read_to_string(out.join("report.md")) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("no report in {}: {e}", out.display());
            std::process::exit(1);
        }
    }
}
