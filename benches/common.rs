//! Helpers shared by the benchmarks: the launcher next to the bench binary,
//! generated cases, and training runs read back from `summary.json`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cobre_shm_sddp::hydrothermal::case::Case;
use cobre_shm_sddp::hydrothermal::generate::{generate, GenerateSpec};

/// The `cobre-shm` binary built next to this benchmark.
pub fn launcher() -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("cobre-shm"))
        .filter(|p| p.exists())
        .expect("build the launcher first: cargo build --release")
}

/// The 40-hydro case the memory and solver-choice benches measure
/// (`cobre-shm generate --hydros 40 --stages 24 --openings 10 --thermals 5 --seed 1`).
pub fn forty_hydros() -> GenerateSpec {
    GenerateSpec {
        hydros: 40,
        stages: 24,
        openings: 10,
        thermals: 5,
        seed: 1,
    }
}

/// Write the generated case of `spec` into `dir`; its path and the case.
pub fn write_case(dir: &Path, spec: &GenerateSpec) -> (PathBuf, Case) {
    let text = serde_json::to_string(&generate(spec)).expect("serialise");
    let path = dir.join(format!(
        "h{}_t{}_o{}_j{}_s{}.json",
        spec.hydros, spec.stages, spec.openings, spec.thermals, spec.seed
    ));
    std::fs::write(&path, &text).expect("write case");
    (path, Case::parse(&text, "generated", "g").expect("valid"))
}

/// Train `case` with `bin` on `ranks` × `threads` into `out`; the summary.
pub fn train_summary(
    bin: &Path,
    case: &Path,
    out: &Path,
    ranks: usize,
    threads: usize,
    extra: &[&str],
) -> serde_json::Value {
    let o = Command::new(bin)
        .args([
            "-p",
            &ranks.to_string(),
            "--threads",
            &threads.to_string(),
            "train",
        ])
        .arg(case)
        .args(extra)
        .args(["--quiet", "--output"])
        .arg(out)
        .output()
        .expect("run cobre-shm");
    assert!(
        o.status.success(),
        "{} {extra:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary"))
        .expect("summary.json is JSON")
}

/// Least-squares line `y = a + b x` through `points`: `(a, b)` (`b = 0`
/// when every x is the same).
pub fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    (my - b * mx, b)
}

/// Bytes as megabytes.
pub fn mb(b: f64) -> f64 {
    b / 1e6
}

/// A workspace holding stage `t` of `model` frozen with the cuts `records`
/// (pool records `[α, iteration, trajectory, π…]`, all active), ready for
/// `load` and `solve`.
pub fn frozen_workspace(
    model: &cobre_shm_sddp::hydrothermal::HydroThermal<'_>,
    t: usize,
    records: &[f64],
) -> cobre_shm_sddp::solve::workspace::Workspace {
    use cobre_comm::LocalBackend;
    use cobre_shm::Comm;
    use cobre_shm_sddp::model::{Model, Phase};
    use cobre_shm_sddp::shared::{cache::StageCache, pool::CutPool, pool::HEAD};
    use cobre_shm_sddp::solve::workspace::{CutsOf, Frozen, Workspace};
    let comm = Comm::Local(LocalBackend);
    let cache = StageCache::build(&comm, model, false).expect("cache");
    let lanes = model.stages() - 1;
    let widths: Vec<usize> = (0..lanes).map(|c| model.cut_layout(c).len()).collect();
    let stride = HEAD + widths[t];
    let cuts = records.len() / stride;
    let mut pool =
        CutPool::new(&comm, widths, cuts.max(1), model.state_len(), false, false).expect("pool");
    pool.append_cuts(&comm, t, &[cuts], records).expect("cuts");
    let mut ws = Workspace::new(model.profile(Phase::Forward), None).expect("workspace");
    let src = Frozen {
        cache: &cache,
        pool: &pool,
        layout: Some(model.cut_layout(t)),
        theta: model.theta_column(t),
    };
    ws.freeze(src, t, CutsOf::Active, 0);
    ws
}
