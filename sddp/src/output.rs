//! Files written by rank 0 after training: `convergence.csv`,
//! `policy.json`, `summary.json`, `convergence.svg`.
//!
//! Floating-point values are written in Rust's shortest round-trip form, so
//! two files are byte-identical exactly when the values are bit-identical.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use cobre_shm_plot::ChartError;
use serde_json::{json, Value};

use crate::atomic_dir::{write_dir, write_dir_with, AtomicDirError, Carry, Contents};
use crate::checkpoint::{Identity, LaneView, StateView};
use crate::hydrothermal::case::Case;
use crate::hydrothermal::HydroThermal;
use crate::model::Model;
use crate::report::{RankMemory, TrainReport};
use crate::solve::workspace::LADDER;

/// Header of `convergence.csv`.
pub const CONVERGENCE_HEADER: &str =
    "iteration,lower_bound,upper_bound_mean,upper_bound_ci95,gap,cuts,elapsed_secs";

/// The text of `convergence.csv`.
#[must_use]
pub fn convergence_csv(report: &TrainReport) -> String {
    let mut s = String::from(CONVERGENCE_HEADER);
    s.push('\n');
    for r in &report.rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{:.3}",
            r.iteration,
            r.lower_bound,
            r.upper_bound_mean,
            r.upper_bound_ci95,
            r.gap,
            r.cuts,
            r.elapsed_secs
        );
    }
    s
}

/// Write a JSON value compactly.
fn json_to(w: &mut dyn Write, v: &(impl serde::Serialize + ?Sized)) -> io::Result<()> {
    serde_json::to_writer(w, v).map_err(io::Error::from)
}

/// Write `policy.json` — every cut of every stage — streaming from the
/// report's policy, one cut per line (no second copy of the cuts is built).
///
/// # Errors
/// The writer's.
pub fn write_policy_json(w: &mut dyn Write, case: &Case, report: &TrainReport) -> io::Result<()> {
    let hydros: Vec<&str> = case.hydros.iter().map(|h| h.name.as_str()).collect();
    w.write_all(b"{\n  \"case\": ")?;
    json_to(w, &case.name)?;
    write!(w, ",\n  \"stages\": {},\n  \"hydros\": ", case.stages)?;
    json_to(w, &hydros)?;
    w.write_all(b",\n  \"cut_form\": ")?;
    json_to(w, CUT_FORM)?;
    w.write_all(b",\n  \"policy\": [")?;
    for t in 0..case.stages {
        let sep = if t == 0 { "" } else { "," };
        write!(w, "{sep}\n    {{\"stage\": {}, \"cuts\": [", t + 1)?;
        for (k, cut) in report.policy.cuts(t).enumerate() {
            let sep = if k == 0 { "" } else { "," };
            write!(w, "{sep}\n      {{\"intercept\": ")?;
            json_to(w, &cut.intercept)?;
            w.write_all(b", \"coefficients\": ")?;
            json_to(w, cut.coefficients)?;
            write!(
                w,
                ", \"iteration\": {}, \"trajectory\": {}}}",
                cut.iteration, cut.trajectory
            )?;
        }
        let close = if report.policy.len(t) == 0 {
            ""
        } else {
            "\n    "
        };
        write!(w, "{close}]}}")?;
    }
    w.write_all(b"\n  ]\n}\n")
}

/// How a cut of `policy.json` reads.
const CUT_FORM: &str = "future_cost_after_stage >= intercept + coefficients . end_volumes";

/// Write the report's checkpoint (when it has one), its cuts streamed from
/// the policy, for the study `id`.
///
/// # Errors
/// The writer's; `InvalidData` when the report holds no checkpoint.
pub fn write_checkpoint(w: &mut dyn Write, id: Identity, report: &TrainReport) -> io::Result<()> {
    let state = report.checkpoint.as_ref().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "the report holds no checkpoint")
    })?;
    let per = state.iterations * report.options.forward_passes;
    let lanes: Vec<LaneView<'_>> = state
        .lanes
        .iter()
        .enumerate()
        .map(|(c, lane)| {
            let records = report.policy.stages.get(c).map_or(&[][..], Vec::as_slice);
            LaneView {
                stride: lane.stride,
                records: &records[..(per * lane.stride).min(records.len())],
                active: &lane.active,
            }
        })
        .collect();
    let view = StateView {
        iterations: state.iterations,
        rows: &report.rows[..state.iterations.min(report.rows.len())],
        lanes: &lanes,
        states: &state.states,
        bases: &state.bases,
        lb_basis: &state.lb_basis,
        slack: state.slack,
    };
    crate::checkpoint::write_to(w, id, &view)
}

/// The identity a checkpoint of `model` trained with `report.options` carries.
#[must_use]
pub fn identity<M: Model>(model: &M, report: &TrainReport) -> Identity {
    Identity {
        model: model.fingerprint(),
        seed: model.seed(),
        options: crate::checkpoint::options_fingerprint(&report.options),
    }
}

/// The run summary as JSON.
#[must_use]
pub fn summary_json(model: &HydroThermal<'_>, report: &TrainReport) -> Value {
    let case = model.case();
    let last = report.rows.last();
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let p = &report.phases;
    let o = &report.options;
    let w = &report.work;
    let sum = |f: fn(&RankMemory) -> u64| report.memory.iter().map(f).sum::<u64>();
    json!({
        "case": case.name,
        "description": case.description,
        "stages": case.stages,
        "hydros": case.hydros.len(),
        "thermals": case.thermals.len(),
        "backend": report.backend,
        "ranks": report.ranks,
        "threads": report.threads,
        "iterations": report.rows.len(),
        "stop_reason": report.stop.as_str(),
        "final": last.map(|r| json!({
            "lower_bound": r.lower_bound,
            "upper_bound_mean": r.upper_bound_mean,
            "upper_bound_ci95": r.upper_bound_ci95,
            "gap": r.gap,
            "cuts": r.cuts,
        })),
        "options": {
            "iterations": o.iterations,
            "forward_passes": o.forward_passes,
            "seed": Model::seed(model),
            "time_limit_secs": o.stop.time_limit.map(|d| d.as_secs_f64()),
            "stall": o.stop.stall.map(|(tol, w)| json!({"tolerance": tol, "iterations": w - 1})),
            "replicate": o.replicate,
            "cut_selection": o.cut_selection.as_str(),
        },
        "time_secs": {
            "total": last.map_or(0.0, |r| r.elapsed_secs),
            "setup": secs(p.setup),
            "forward": secs(p.forward),
            "backward": secs(p.backward),
            "cut_exchange": secs(p.cut_exchange),
            "cut_selection": secs(p.selection),
            "lower_bound": secs(p.lower_bound),
            "bounds_sync": secs(p.bounds_sync),
        },
        "lp_solves": report.lp_solves,
        "solver": {
            "highs_version": cobre_solver::highs_version(),
            "stage_loads": w.solver.loads,
            "stage_load_secs": secs(w.solver.load_time),
            "solve_secs": secs(w.solver.solve_time),
            "warm_started_solves": w.solver.warm_starts,
            "simplex_iterations": w.solver.iterations,
            "recoveries": LADDER.iter().zip(w.solver.recovered).skip(1)
                .map(|(r, n)| (r.as_str().to_string(), json!(n)))
                .collect::<serde_json::Map<String, Value>>(),
        },
        "cut_selection": {
            "rule": o.cut_selection.as_str(),
            "active_cuts_per_stage": w.active_cuts,
            "active_cuts_total": w.active_cuts.iter().sum::<usize>(),
            "pool_cuts_total": last.map_or(0, |r| r.cuts),
        },
        "penalty_slack": {
            "total": w.penalty_slack,
            "cost_per_unit": crate::hydrothermal::lp::penalty_cost(case),
            "note": "overflow volume plus unserved energy over all forward passes; a slack is used only where a stage has no other way out",
        },
        "memory": {
            "node_pss_bytes": sum(|m| m.pss),
            "node_peak_pss_bytes": report.node_peak_pss,
            "node_pss_private_bytes": sum(|m| m.pss_anon),
            "node_pss_shared_bytes": sum(|m| m.pss_shmem),
            "ranks": report.memory.iter().map(|m| json!({
                "rank": m.rank,
                "peak_rss_bytes": m.peak_rss,
                "pss_bytes": m.pss,
                "peak_pss_bytes": m.peak_pss,
                "pss_private_bytes": m.pss_anon,
                "pss_shared_bytes": m.pss_shmem,
            })).collect::<Vec<_>>(),
            "workspace_scratch_bytes_per_thread": w.workspace_scratch_bytes,
            "basis_cache_bytes": w.basis_cache_bytes,
            "cut_selection_bytes": w.selection_bytes,
        },
        "shared_regions": report.regions.iter().map(|r| json!({
            "name": r.name,
            "bytes": r.bytes,
            "one_copy_per_node": r.shared,
            "storage": r.storage,
            "pages_by_numa_node": r.pages_by_node.iter().map(|(n, c)| json!({"node": n, "pages": c})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// A chart of the bounds per iteration: the lower bound and the mean of
/// the trajectory costs with its 95 % confidence band.
///
/// # Errors
/// When the chart cannot be drawn.
pub fn convergence_svg(case: &Case, report: &TrainReport) -> Result<String, ChartError> {
    let rows: Vec<(usize, f64, f64, f64)> = report
        .rows
        .iter()
        .map(|r| {
            (
                r.iteration,
                r.lower_bound,
                r.upper_bound_mean,
                r.upper_bound_ci95,
            )
        })
        .collect();
    cobre_shm_plot::convergence(&format!("{} — bounds per iteration", case.name), &rows)
}

/// Write all four files as the new contents of `dir`, atomically: readers
/// see the previous run's files or this run's, never a mix.
///
/// # Errors
/// I/O errors, with the path; `dir` then still holds the previous results.
pub fn write_all(
    dir: &Path,
    model: &HydroThermal<'_>,
    report: &TrainReport,
) -> Result<(), AtomicDirError> {
    let case = model.case();
    let text = |t: String| move |w: &mut dyn Write| w.write_all(t.as_bytes());
    let csv = text(convergence_csv(report));
    let summary =
        text(serde_json::to_string_pretty(&summary_json(model, report)).unwrap_or_default() + "\n");
    // A chart that cannot be drawn is left out; the numbers are in the csv.
    let chart = convergence_svg(case, report)
        .inspect_err(|e| tracing::warn!("convergence.svg left out: {e}"))
        .ok();
    let svg = text(chart.clone().unwrap_or_default());
    let policy = |w: &mut dyn Write| write_policy_json(w, case, report);
    let id = identity(model, report);
    let checkpoint = |w: &mut dyn Write| write_checkpoint(w, id, report);
    let mut files: Vec<(&str, &Contents)> = vec![
        ("convergence.csv", &csv),
        ("policy.json", &policy),
        ("summary.json", &summary),
    ];
    if chart.is_some() {
        files.push(("convergence.svg", &svg));
    }
    let Some(state) = &report.checkpoint else {
        return write_dir(dir, &files);
    };
    files.push((crate::checkpoint::FILE, &checkpoint));
    // The new checkpoint must read back whole before it replaces the old
    // one, which stays beside it as the previous checkpoint.
    let iterations = state.iterations;
    let verify = move |stage: &Path| -> Result<(), String> {
        let path = stage.join(crate::checkpoint::FILE);
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        crate::checkpoint::decode(&bytes, &path.display().to_string(), id)
            .map_err(|e| e.to_string())
            .and_then(|back| {
                (back.iterations == iterations)
                    .then_some(())
                    .ok_or_else(|| format!("{} iterations read back", back.iterations))
            })
    };
    write_dir_with(
        dir,
        &files,
        &Carry {
            keep: &[(crate::checkpoint::FILE, crate::checkpoint::PREVIOUS_FILE)],
            verify: Some(&verify),
        },
    )
}
