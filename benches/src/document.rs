//! The benchmark report: `report.md` (tables, each with the exact commands
//! that produced it), SVG plots and `results.json`, written as one set.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use super::collectives::{Backend, Sweep, OPS};
use super::training::TrainRun;
use super::{Results, MACHINE_MEMCPY_SIZES};
use cobre_shm_plot::{self as plot, ChartError, Panel, Scale, Series};
use cobre_shm_sddp::atomic_dir::{write_dir, Contents};

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "—".to_string(), |x| format!("{x:.digits$}"))
}

/// GB/s of a collective: the bytes each rank ends up with per call.
fn gbps(bytes: u64, us: f64) -> f64 {
    bytes as f64 / (us * 1e-6) / 1e9
}

fn machine_md(s: &mut String, r: &Results) {
    let Some(m) = &r.machine else { return };
    let _ = writeln!(s, "## Machine\n\n```\n{}```\n", m.topology.render());
    let _ = writeln!(s, "| measure | value |\n|---|---:|");
    for (b, g) in m
        .memcpy
        .iter()
        .filter(|(b, _)| MACHINE_MEMCPY_SIZES.contains(b))
    {
        let _ = writeln!(
            s,
            "| memcpy, 1 thread, {} | {g:.1} GB/s |",
            plot::bytes(*b as f64)
        );
    }
    if let Some(g) = m.memcpy_all {
        let _ = writeln!(
            s,
            "| memcpy, all {} CPUs at once, 64 MiB each | {g:.1} GB/s (sum) |",
            m.cpus
        );
    }
    if let Some(us) = m.round_trip_us {
        let _ = writeln!(s, "| cache-line round trip, CPU to CPU | {us:.3} µs |");
    }
    s.push('\n');
}

/// " — barrier: …" from the shapes a sweep's runs reported (one entry
/// per run, repeats folded: "flat ×5"), or nothing when none did.
fn barrier_note(reported: &[String]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for b in reported {
        match parts.last_mut() {
            Some((last, n)) if last == b => *n += 1,
            _ => parts.push((b.clone(), 1)),
        }
    }
    if parts.is_empty() {
        return String::new();
    }
    let text: Vec<String> = parts
        .into_iter()
        .map(|(b, n)| if n > 1 { format!("{b} ×{n}") } else { b })
        .collect();
    format!(" — barrier: {}", text.join("; "))
}

/// Backends in first-seen order.
fn backends(sweeps: &[Sweep]) -> Vec<Backend> {
    let mut v: Vec<Backend> = Vec::new();
    for sw in sweeps {
        if !v.contains(&sw.backend) {
            v.push(sw.backend.clone());
        }
    }
    v
}

fn collectives_md(s: &mut String, r: &Results) {
    if r.sweeps.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Collectives\n\nMedian time per call (µs) of each operation on `f64` data; \
         `allreduce` sums the whole vector, `allgatherv` gathers that many bytes in total \
         (an equal block per rank), `broadcast` sends them from rank 0. GB/s = bytes per call \
         / time. A ratio is the other column's time over the shm time: above 1, shm is \
         faster. `shm staged` is shm with single-copy cross-memory reads off \
         (`COBRE_SHM_CMA_MIN_BYTES=0`: every byte through the staging buffers).\n"
    );
    let _ = writeln!(
        s,
        "{}\n",
        if r.fresh_buffers {
            "Buffers: fresh (`--fresh-buffers`): every sender rewrites its buffer before \
             every call, as an application sends data it just produced; the rewrite is in \
             every column's time."
        } else {
            "Buffers: reused unchanged from call to call, as OSU and IMB measure \
             (`--fresh-buffers` measures data the sender just wrote)."
        }
    );
    let all_backends = backends(&r.sweeps);
    let counts: BTreeSet<usize> = r.sweeps.iter().map(|w| w.ranks).collect();
    for &n in &counts {
        rank_count_md(s, r, n);
    }
    if let Some(note) = &r.mpi_note {
        let _ = writeln!(s, "Note: {note}.\n");
    }
    let _ = writeln!(
        s,
        "Plots: `latency.svg` (a panel per operation), `bandwidth.svg`{}.\n",
        if all_backends.len() > 1 {
            ", `ratio_mpi_over_shm.svg` (a panel per operation and rank count)"
        } else {
            ""
        }
    );
}

/// The table of `n` ranks: shm's time and bandwidth per operation and size,
/// the memcpy ceiling, each other backend's time and ratio, and the commands.
fn rank_count_md(s: &mut String, r: &Results, n: usize) {
    let runs: Vec<&Sweep> = r.sweeps.iter().filter(|w| w.ranks == n).collect();
    let Some(shm) = runs.iter().find(|w| w.backend == Backend::Shm) else {
        return;
    };
    let others: Vec<&&Sweep> = runs.iter().filter(|w| w.backend != Backend::Shm).collect();
    let ceiling = |bytes: u64| {
        r.machine
            .as_ref()
            .and_then(|m| m.memcpy.iter().find(|(b, _)| *b == bytes))
            .map(|(_, g)| *g)
    };
    let with_ceiling = r.machine.is_some();
    let _ = write!(
        s,
        "### {n} ranks\n\n| operation | bytes | shm µs | shm GB/s |{}",
        if with_ceiling { " memcpy GB/s |" } else { "" }
    );
    for o in &others {
        let _ = write!(s, " {} µs | ratio |", o.backend.label());
    }
    let _ = write!(
        s,
        "\n|---|---:|---:|---:|{}",
        if with_ceiling { "---:|" } else { "" }
    );
    s.push_str(&"---:|---:|".repeat(others.len()));
    s.push('\n');
    for p in &shm.points {
        let rate = if p.op == "barrier" {
            "—".to_string()
        } else {
            format!("{:.2}", gbps(p.bytes, p.us))
        };
        let _ = write!(
            s,
            "| {} | {} | {:.2} | {rate} |",
            p.op,
            if p.op == "barrier" {
                "—".into()
            } else {
                plot::bytes(p.bytes as f64)
            },
            p.us
        );
        if with_ceiling {
            let c = ceiling(p.bytes).filter(|_| p.op != "barrier");
            let _ = write!(s, " {} |", opt(c, 1));
        }
        for o in &others {
            let v = o.at(&p.op, p.bytes);
            let _ = write!(s, " {} | {} |", opt(v, 2), opt(v.map(|x| x / p.us), 2));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\nCommands:\n");
    for w in &runs {
        let barrier = barrier_note(&w.barrier);
        match &w.error {
            Some(e) => {
                let _ = writeln!(s, "- `{}`{barrier} — **failed**: {e}", w.command);
            }
            None => {
                let _ = writeln!(s, "- `{}`{barrier}", w.command);
            }
        }
    }
    s.push('\n');
}

fn run_rows(s: &mut String, runs: &[TrainRun], with_speedup: bool) {
    let base = runs.first().and_then(TrainRun::secs_per_iteration);
    let _ = writeln!(
        s,
        "| run | s / iteration | LP solves / s |{} lower bound | node PSS | peak node PSS |",
        if with_speedup {
            " speed-up vs first |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|{}---:|---:|---:|",
        if with_speedup { "---:|" } else { "" }
    );
    for run in runs {
        let per = run.secs_per_iteration();
        let _ = write!(
            s,
            "| {} | {} | {} |",
            run.label,
            opt(per, 3),
            opt(run.solves_per_sec(), 0)
        );
        if with_speedup {
            let speedup = base
                .zip(per)
                .map_or_else(|| "—".to_string(), |(b, p)| format!("{:.2}×", b / p));
            let _ = write!(s, " {speedup} |");
        }
        let _ = writeln!(
            s,
            " {} | {} MB | {} MB |",
            opt(run.lower_bound(), 6),
            opt(run.node_pss_mb(), 1),
            opt(run.node_peak_mb(), 1)
        );
    }
    let _ = writeln!(s, "\nCommands:\n");
    for run in runs {
        match &run.error {
            Some(e) => {
                let _ = writeln!(s, "- `{}` — **failed**: {e}", run.command);
            }
            None => {
                let _ = writeln!(s, "- `{}`", run.command);
            }
        }
    }
    let bounds: BTreeSet<u64> = runs
        .iter()
        .filter_map(TrainRun::lower_bound)
        .map(f64::to_bits)
        .collect();
    if bounds.len() > 1 {
        let _ = writeln!(
            s,
            "\n**The lower bounds differ** between these runs: that is a bug (results must not \
             depend on the layout); please report it."
        );
    }
    s.push('\n');
}

fn training_md(s: &mut String, r: &Results) {
    if !r.scaling.is_empty() {
        let _ = writeln!(
            s,
            "## SDDP over the splits of the cores\n\nCase: `{}`. Every split of this machine's \
             CPUs into ranks × threads, against 1 × 1 (the first row). The lower bound must be \
             the same in every row.\n",
            r.case
        );
        run_rows(s, &r.scaling, true);
        let _ = writeln!(s, "Plot: `sddp_speedup.svg`.\n");
    }
    if !r.memory.is_empty() {
        let _ = writeln!(
            s,
            "## Node memory: shared against `--replicate`\n\nNode PSS is the sum over ranks \
             of `/proc/<pid>/smaps_rollup` Pss. Shared: the stage-LP cache, cut pool, trial \
             points and opening tree exist once on the node; `--replicate`: once per rank.\n"
        );
        run_rows(s, &r.memory, false);
        let _ = writeln!(s, "Plot: `memory.svg`.\n");
    }
    if !r.numa.is_empty() {
        let _ = writeln!(
            s,
            "## NUMA placements\n\n`--bind numa` pins each rank to its node's CPUs and \
             memory, `none` leaves placement to the kernel; `--mempolicy` sets where the shared \
             segments' pages go. On a machine with one NUMA node the rows differ only by noise.\n"
        );
        run_rows(s, &r.numa, true);
    }
    if !r.mpi.is_empty() {
        let _ = writeln!(
            s,
            "## SDDP on shm ranks and on MPI ranks\n\nThe same case, one thread per rank, \
             through this launcher and under `mpiexec` (cobre-comm's MPI backend, which keeps a \
             copy of the shared data per rank).\n"
        );
        run_rows(s, &r.mpi, true);
    } else if let Some(note) = &r.mpi_note {
        let _ = writeln!(s, "## SDDP on MPI ranks\n\nSkipped: {note}.\n");
    }
}

const HOW_TO_READ: &str = "\
How to read it: every figure was measured on this machine in this run; compare ratios \
within a table, not absolute numbers across machines or runs. Collective times are medians \
over batches, so one slow batch does not move them. The memcpy column beside the shm GB/s is \
one thread copying the same number of bytes (the ceiling for one copy). SDDP rows are what a user \
waits for (`time_secs.total` of `summary.json` per iteration, setup included).";

fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# cobre-shm bench\n\n`{}` — {} mode, started {}, cobre-shm {}.\n\n{HOW_TO_READ}\n",
        r.command,
        r.mode.name(),
        r.started,
        env!("CARGO_PKG_VERSION")
    );
    machine_md(&mut s, r);
    collectives_md(&mut s, r);
    training_md(&mut s, r);
    s
}

/// One series per sweep (backend × rank count) that measured `op`, its
/// points `(bytes, y(bytes, µs))`.
fn series_for(r: &Results, op: &str, y: impl Fn(u64, f64) -> f64) -> Vec<Series> {
    r.sweeps
        .iter()
        .filter(|w| w.points.iter().any(|p| p.op == op))
        .map(|w| Series {
            name: format!("{} · {} ranks", w.backend.label(), w.ranks),
            points: w
                .points
                .iter()
                .filter(|p| p.op == op)
                .map(|p| (p.bytes as f64, y(p.bytes, p.us)))
                .collect(),
            dashed: false,
        })
        .collect()
}

/// Every chart of the report, by file name.
fn plots(r: &Results) -> Result<Vec<(String, String)>, ChartError> {
    let mut files = Vec::new();
    if !r.sweeps.is_empty() {
        files.push(("latency.svg".into(), latency_plot(r)?));
        files.push(("bandwidth.svg".into(), bandwidth_plot(r)?));
        if let Some(svg) = ratio_plot(r)? {
            files.push(("ratio_mpi_over_shm.svg".into(), svg));
        }
    }
    files.extend(training_plots(r)?);
    Ok(files)
}

/// Time per call against message size: one panel per operation with a
/// size (the barrier has none; its figures are in the tables).
fn latency_plot(r: &Results) -> Result<String, ChartError> {
    let panels: Vec<Panel> = OPS
        .iter()
        .skip(1)
        .map(|op| Panel {
            title: (*op).to_string(),
            series: series_for(r, op, |_, us| us),
        })
        .collect();
    plot::small_multiples(
        "Time per call",
        "message size",
        "µs per call",
        Scale::Log,
        Scale::Log,
        plot::bytes,
        &panels,
    )
}

/// The shm allgatherv's bandwidth beside a one-thread memcpy of the same size.
fn bandwidth_plot(r: &Results) -> Result<String, ChartError> {
    let mut bw: Vec<Series> = series_for(r, "allgatherv", gbps)
        .into_iter()
        .filter(|s| s.name.starts_with("shm"))
        .collect();
    if let Some(m) = &r.machine {
        let points: Vec<(f64, f64)> = m
            .memcpy
            .iter()
            .filter(|(b, _)| r.sizes.contains(b))
            .map(|&(b, g)| (b as f64, g))
            .collect();
        if !points.is_empty() {
            bw.push(Series {
                name: "memcpy of the same size, 1 thread".into(),
                points,
                dashed: true,
            });
        }
    }
    plot::small_multiples(
        "allgatherv bandwidth (shm)",
        "bytes gathered",
        "GB/s",
        Scale::Log,
        Scale::Log,
        plot::bytes,
        &[Panel {
            title: String::new(),
            series: bw,
        }],
    )
}

/// Every other backend's time over shm's at the same rank count: one panel
/// per (operation, rank count), when anything but shm was measured.
fn ratio_plot(r: &Results) -> Result<Option<String>, ChartError> {
    let mut counts: Vec<usize> = r.sweeps.iter().map(|w| w.ranks).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut panels = Vec::new();
    for op in ["allreduce", "allgatherv", "broadcast"] {
        for &n in &counts {
            let Some(shm) = r
                .sweeps
                .iter()
                .find(|x| x.backend == Backend::Shm && x.ranks == n)
            else {
                continue;
            };
            let mut series: Vec<Series> = r
                .sweeps
                .iter()
                .filter(|w| w.backend != Backend::Shm && w.ranks == n)
                .map(|w| Series {
                    name: format!("{} / shm", w.backend.label()),
                    points: w
                        .points
                        .iter()
                        .filter(|p| p.op == op)
                        .filter_map(|p| Some((p.bytes as f64, p.us / shm.at(op, p.bytes)?)))
                        .collect(),
                    dashed: false,
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            if series.is_empty() {
                continue;
            }
            let sizes = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
            let (lo, hi) = sizes.fold((f64::INFINITY, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
            series.push(Series {
                name: "same time".into(),
                points: vec![(lo, 1.0), (hi, 1.0)],
                dashed: true,
            });
            panels.push(Panel {
                title: format!("{op} · {n} ranks"),
                series,
            });
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    plot::small_multiples(
        "Time relative to shm (above 1: shm is faster)",
        "message size",
        "time / shm time",
        Scale::Log,
        Scale::Log,
        plot::bytes,
        &panels,
    )
    .map(Some)
}

/// SDDP speed-up over the rank × thread splits and node memory.
fn training_plots(r: &Results) -> Result<Vec<(String, String)>, ChartError> {
    let mut files = Vec::new();
    if let Some(base) = r.scaling.first().and_then(TrainRun::secs_per_iteration) {
        let cats: Vec<String> = r.scaling.iter().map(|x| x.label.clone()).collect();
        let speedup = Series {
            name: "speed-up vs 1×1".into(),
            points: r
                .scaling
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    (
                        i as f64,
                        x.secs_per_iteration().map_or(f64::NAN, |p| base / p),
                    )
                })
                .collect(),
            dashed: false,
        };
        files.push((
            "sddp_speedup.svg".into(),
            plot::bars("SDDP speed-up over 1 × 1", "speed-up", &cats, &[speedup])?,
        ));
    }
    if !r.memory.is_empty() {
        let cats: Vec<String> = r.memory.iter().map(|x| x.label.clone()).collect();
        let at = |f: fn(&TrainRun) -> Option<f64>| {
            r.memory
                .iter()
                .enumerate()
                .map(|(i, x)| (i as f64, f(x).unwrap_or(f64::NAN)))
                .collect()
        };
        files.push((
            "memory.svg".into(),
            plot::bars(
                "node memory (PSS)",
                "MB",
                &cats,
                &[
                    Series {
                        name: "node PSS at the end".into(),
                        points: at(TrainRun::node_pss_mb),
                        dashed: false,
                    },
                    Series {
                        name: "peak node PSS".into(),
                        points: at(TrainRun::node_peak_mb),
                        dashed: false,
                    },
                ],
            )?,
        ));
    }
    Ok(files)
}

fn json(r: &Results) -> Value {
    json!({
        "command": r.command,
        "mode": r.mode.name(),
        "fresh_buffers": r.fresh_buffers,
        "started": r.started,
        "version": env!("CARGO_PKG_VERSION"),
        "machine": r.machine.as_ref().map(|m| json!({
            "cpus": m.cpus,
            "numa_nodes": m.topology.nodes.len(),
            "memcpy_gbps": m.memcpy.iter().map(|(b, g)| json!({"bytes": b, "gbps": g})).collect::<Vec<_>>(),
            "memcpy_all_cpus_gbps": m.memcpy_all,
            "cache_line_round_trip_us": m.round_trip_us,
        })),
        "collectives": r.sweeps.iter().map(|w| json!({
            "backend": w.backend.label(),
            "ranks": w.ranks,
            "command": w.command,
            "error": w.error,
            "barrier": w.barrier,
            "points": w.points.iter().map(|p| json!({"op": p.op, "bytes": p.bytes, "us": p.us})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "sddp_case": r.case,
        "sddp_scaling": r.scaling.iter().map(TrainRun::to_json).collect::<Vec<_>>(),
        "memory": r.memory.iter().map(TrainRun::to_json).collect::<Vec<_>>(),
        "numa": r.numa.iter().map(TrainRun::to_json).collect::<Vec<_>>(),
        "mpi_sddp": r.mpi.iter().map(TrainRun::to_json).collect::<Vec<_>>(),
        "mpi_note": r.mpi_note,
    })
}

/// Write the report set into `dir` (replacing what was there, atomically).
///
/// # Errors
/// When a chart cannot be drawn or the directory cannot be written.
pub fn write(dir: &Path, r: &Results) -> Result<(), String> {
    let mut texts = vec![
        ("report.md".to_string(), markdown(r)),
        (
            "results.json".to_string(),
            serde_json::to_string_pretty(&json(r)).unwrap_or_default() + "\n",
        ),
    ];
    texts.extend(plots(r).map_err(|e| format!("cannot draw the charts: {e}"))?);
    let writers: Vec<(String, Box<Contents<'_>>)> = texts
        .iter()
        .map(|(name, text)| {
            let w: Box<Contents<'_>> =
                Box::new(move |w: &mut dyn std::io::Write| w.write_all(text.as_bytes()));
            (name.clone(), w)
        })
        .collect();
    let files: Vec<(&str, &Contents<'_>)> = writers
        .iter()
        .map(|(n, w)| (n.as_str(), w.as_ref()))
        .collect();
    write_dir(dir, &files).map_err(|e| e.to_string())
}
