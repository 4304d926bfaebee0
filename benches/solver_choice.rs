//! Which HiGHS wrapper the per-thread workspaces use, measured: the same
//! stage LP (a stage of the 40-hydro case with every cut a short training
//! produced) loaded into one instance, solved cold, and re-solved warm after
//! RHS changes, through upstream `cobre-solver` 0.18 (HiGHS 1.13.1, what
//! the engine uses) and through the engine's former wrapper over
//! `highs-sys` 1.15 extended with a reload (`benches/solver-choice/`, its
//! own package because one binary holds one HiGHS).
//!
//! Run: `benches/solver-choice/build.sh && cargo bench -p cobre-shm-benches --bench solver_choice`
//! (without the build, only the cobre-solver column is printed).

#[path = "common.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use cobre_comm::LocalBackend;
use cobre_shm::Comm;
use cobre_shm_sddp::lp::{build_stage, empty_batch, push_cut, Shape};
use cobre_shm_sddp::{train, CutSelection, TrainOptions};
use cobre_solver::{HighsProfile, HighsSolver, SolverInterface, StageTemplate};
use serde_json::{json, Value};

fn finite(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.clamp(-1e300, 1e300)).collect()
}

fn rss() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        * 1024.0
}

/// The measured stage: its LP, the cuts a short training produced, the
/// states and inflows the solves cycle through, and the run's sizes.
struct Stage {
    template: StageTemplate,
    shape: Shape,
    cuts: Vec<Vec<f64>>,
    states: Vec<Vec<f64>>,
    inflows: Vec<Vec<f64>>,
    loads: usize,
    solves: usize,
}

/// Train the 40-hydro case briefly and take stage 13 with every cut.
fn stage(dir: &Path, quick: bool) -> Stage {
    let spec = common::forty_hydros();
    let (_, case) = common::write_case(dir, &spec);
    let mut opts = TrainOptions::from_case(&case, 2);
    opts.iterations = if quick { 4 } else { 16 };
    opts.forward_passes = 32;
    opts.cut_selection = CutSelection::None;
    let report = train(&Comm::Local(LocalBackend), &case, &opts, |_| {}).expect("train");
    let t = 12;
    let shape = Shape::of(&case);
    let mut template = StageTemplate::empty();
    build_stage(&case, &shape, t, &mut template);
    let cuts: Vec<Vec<f64>> = report
        .policy
        .cuts(t)
        .map(|c| {
            std::iter::once(c.intercept)
                .chain(c.coefficients.iter().copied())
                .collect()
        })
        .collect();
    let states: Vec<Vec<f64>> = (0..16)
        .map(|s| {
            case.hydros
                .iter()
                .enumerate()
                .map(|(h, hy)| {
                    let f = ((s * 7 + h * 3) % 16) as f64 / 15.0;
                    hy.min_volume + f * (hy.max_volume - hy.min_volume)
                })
                .collect()
        })
        .collect();
    let mut tree = vec![0.0; case.openings(t) * case.hydros.len()];
    case.fill_stage_inflows(t, &mut tree);
    let inflows: Vec<Vec<f64>> = tree
        .chunks(case.hydros.len())
        .map(<[f64]>::to_vec)
        .collect();
    let (loads, solves) = if quick { (30, 400) } else { (300, 3000) };
    Stage {
        template,
        shape,
        cuts,
        states,
        inflows,
        loads,
        solves,
    }
}

/// Write the stage as the JSON the highs-sys binary reads.
fn write_stage(stage: &Stage, path: &Path) {
    let template = &stage.template;
    let data = json!({
        "cols": template.num_cols,
        "col_starts": template.col_starts,
        "row_indices": template.row_indices,
        "values": template.values,
        "col_lower": finite(&template.col_lower),
        "col_upper": finite(&template.col_upper),
        "objective": template.objective,
        "row_lower": finite(&template.row_lower),
        "row_upper": finite(&template.row_upper),
        "hydros": stage.shape.hydros,
        "theta": stage.shape.theta,
        "cuts": stage.cuts,
        "states": stage.states,
        "inflows": stage.inflows,
        "loads": stage.loads,
        "solves": stage.solves,
    });
    std::fs::write(path, data.to_string()).expect("write stage.json");
}

/// The engine's HiGHS options, changed by `COBRE_SHM_PROFILE` for
/// experiments (e.g. `scale=1,perturb=1,edge=-1`).
fn profile() -> HighsProfile {
    let mut profile = cobre_shm_sddp::workspace::engine_profile();
    if let Ok(spec) = std::env::var("COBRE_SHM_PROFILE") {
        for kv in spec.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').expect("key=value");
            match k {
                "scale" => profile.simplex_scale_strategy = v.parse().expect("int"),
                "perturb" => profile.cost_perturbation = v.parse().expect("float"),
                "edge" => profile.simplex_dual_edge_weight_strategy = v.parse().expect("int"),
                "price" => profile.simplex_price_strategy = v.parse().expect("int"),
                "presolve" => {
                    profile.presolve = if v == "on" {
                        cobre_solver::PresolveKind::On
                    } else {
                        cobre_solver::PresolveKind::Off
                    }
                }
                other => panic!("unknown profile key {other}"),
            }
        }
    }
    profile
}

/// The stage through cobre-solver, the same procedure as
/// benches/solver-choice/src/main.rs: loads, cold and warm solves, memory.
fn measure_cobre_solver(stage: &Stage) -> Value {
    let Stage {
        template,
        shape,
        cuts,
        states,
        inflows,
        loads,
        solves,
    } = stage;
    let (loads, solves) = (*loads, *solves);
    let profile = profile();
    let mut batch = empty_batch();
    for c in cuts {
        push_cut(&mut batch, shape, c[0], &c[1..]);
    }
    let nh = shape.hydros;
    let rows: Vec<usize> = (0..nh).collect();
    let mut rhs = vec![0.0; nh];
    let set = |s: &mut HighsSolver, i: usize, rhs: &mut Vec<f64>| {
        let (x, a) = (&states[i % states.len()], &inflows[i % inflows.len()]);
        for h in 0..nh {
            rhs[h] = x[h] + a[h];
        }
        s.set_row_bounds(&rows, rhs, rhs);
    };
    let fresh = || {
        let mut s = HighsSolver::new().expect("HiGHS");
        s.apply_profile(&profile);
        s
    };
    let load = |s: &mut HighsSolver| {
        s.load_model(template);
        s.add_rows(&batch);
    };
    let mut s = fresh();
    let t0 = Instant::now();
    for _ in 0..loads {
        load(&mut s);
    }
    let load_us = t0.elapsed().as_secs_f64() * 1e6 / loads as f64;
    let t0 = Instant::now();
    let mut cold_obj = 0.0;
    for i in 0..loads {
        load(&mut s);
        set(&mut s, i, &mut rhs);
        cold_obj += s.solve(None).expect("solve").objective;
    }
    let load_cold_us = t0.elapsed().as_secs_f64() * 1e6 / loads as f64;
    // Stage change as the engine does it: load, then solve from the basis
    // this stage had (here: the optimal basis of the previous state).
    load(&mut s);
    set(&mut s, 0, &mut rhs);
    s.solve(None).expect("solve");
    let mut basis = cobre_solver::Basis::new(0, 0);
    let t0 = Instant::now();
    for i in 0..loads {
        s.get_basis(&mut basis);
        load(&mut s);
        set(&mut s, i + 1, &mut rhs);
        s.solve(Some(&basis)).expect("solve");
    }
    let load_basis_us = t0.elapsed().as_secs_f64() * 1e6 / loads as f64;
    load(&mut s);
    let t0 = Instant::now();
    let (mut warm_obj, mut iters) = (0.0, 0u64);
    for i in 0..solves {
        set(&mut s, i, &mut rhs);
        let v = s.solve(None).expect("solve");
        warm_obj += v.objective;
        iters += v.iterations;
    }
    let warm_us = t0.elapsed().as_secs_f64() * 1e6 / solves as f64;
    let before = rss();
    let held: Vec<HighsSolver> = (0..8)
        .map(|i| {
            let mut h = fresh();
            load(&mut h);
            set(&mut h, i, &mut rhs);
            h.solve(None).expect("solve");
            h
        })
        .collect();
    let bytes = (rss() - before) / held.len() as f64;
    drop(held);
    json!({
        "solver": format!("cobre-solver 0.18 (HiGHS {})", cobre_solver::highs_version()),
        "load_us": load_us,
        "load_cold_solve_us": load_cold_us,
        "load_basis_solve_us": load_basis_us,
        "warm_solve_us": warm_us,
        "warm_iterations_per_solve": iters as f64 / solves as f64,
        "bytes_per_instance": bytes,
        "cold_objective_sum": cold_obj,
        "warm_objective_sum": warm_obj,
    })
}

/// The same stage through the highs-sys binary, when it was built.
fn measure_highs_sys(path: &Path) -> Option<Value> {
    let own_bin = std::env::var("COBRE_SHM_SOLVER_CHOICE_OWN").unwrap_or_else(|_| {
        format!(
            "{}/.cache/cobre-shm/solver-choice-target/release/solver-choice-highs-sys",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    std::process::Command::new(&own_bin)
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
}

/// The table, one column per solver, and whether their optima agree.
fn print_table(stage: &Stage, ours: &Value, theirs: Option<&Value>) {
    let (template, cuts, loads, solves) = (&stage.template, &stage.cuts, stage.loads, stage.solves);
    println!(
        "## Stage 13 of the 40-hydro case with {} cuts ({} columns, {} structural rows); {loads} loads, {solves} warm solves\n",
        cuts.len(),
        template.num_cols,
        template.num_rows
    );
    let cols: Vec<&Value> = std::iter::once(ours).chain(theirs).collect();
    print!("| |");
    for c in &cols {
        print!(" {} |", c["solver"].as_str().unwrap_or("?"));
    }
    println!("\n|---|{}", "---:|".repeat(cols.len()));
    for (label, key, scale, unit) in [
        ("stage load (pass model + cut rows)", "load_us", 1.0, "µs"),
        ("stage load + cold solve", "load_cold_solve_us", 1.0, "µs"),
        (
            "stage load + solve from the stage's last basis",
            "load_basis_solve_us",
            1.0,
            "µs",
        ),
        (
            "warm re-solve after an RHS change",
            "warm_solve_us",
            1.0,
            "µs",
        ),
        (
            "simplex iterations per warm solve",
            "warm_iterations_per_solve",
            1.0,
            "",
        ),
        (
            "memory per loaded instance",
            "bytes_per_instance",
            1e-6,
            "MB",
        ),
    ] {
        print!("| {label} |");
        for c in &cols {
            print!(
                " {:.2} {unit} |",
                c[key].as_f64().unwrap_or(f64::NAN) * scale
            );
        }
        println!();
    }
    if let Some(t) = theirs {
        let rel = |k: &str| {
            let (a, b) = (
                ours[k].as_f64().unwrap_or(0.0),
                t[k].as_f64().unwrap_or(0.0),
            );
            (a - b).abs() / b.abs().max(1.0)
        };
        println!(
            "\nsame optima: cold objectives agree to {:.1e}, warm to {:.1e} (relative)",
            rel("cold_objective_sum"),
            rel("warm_objective_sum")
        );
    } else {
        println!("\n(highs-sys column: run benches/solver-choice/build.sh first)");
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = std::env::temp_dir().join(format!("cobre-shm-bench-solver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let stage = stage(&dir, quick);
    let path = dir.join("stage.json");
    write_stage(&stage, &path);
    let ours = measure_cobre_solver(&stage);
    let theirs = measure_highs_sys(&path);
    print_table(&stage, &ours, theirs.as_ref());
    let _ = std::fs::remove_dir_all(dir);
}
