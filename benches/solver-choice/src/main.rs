//! `solver-choice-highs-sys STAGE.json`: load, solve cold and re-solve warm
//! the stage LP that `benches/solver_choice.rs` exported, through the
//! engine's former highs-sys wrapper; prints the figures as one JSON line.

mod lp;

use std::time::Instant;

use lp::{Lp, Rows, INF};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| {
            let f = x.as_f64().expect("number");
            if f >= 1e299 {
                INF
            } else if f <= -1e299 {
                -INF
            } else {
                f
            }
        })
        .collect()
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

fn main() {
    let path = std::env::args().nth(1).expect("usage: solver-choice-highs-sys STAGE.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    let n = d["cols"].as_u64().expect("cols") as usize;
    let starts: Vec<usize> = d["col_starts"].as_array().expect("starts").iter().map(|x| x.as_u64().expect("int") as usize).collect();
    let idx: Vec<usize> = d["row_indices"].as_array().expect("idx").iter().map(|x| x.as_u64().expect("int") as usize).collect();
    let val = floats(&d["values"]);
    let (lo, hi, cost) = (floats(&d["col_lower"]), floats(&d["col_upper"]), floats(&d["objective"]));
    let (rlo, rhi) = (floats(&d["row_lower"]), floats(&d["row_upper"]));
    let nh = d["hydros"].as_u64().expect("hydros") as usize;
    let theta = d["theta"].as_u64().expect("theta") as usize;
    // Structural rows from the CSC columns.
    let m = rlo.len();
    let mut by_row: Vec<Vec<(usize, f64)>> = vec![Vec::new(); m];
    for c in 0..n {
        for k in starts[c]..starts[c + 1] {
            by_row[idx[k]].push((c, val[k]));
        }
    }
    let mut rows = Rows::default();
    for (r, e) in by_row.into_iter().enumerate() {
        rows.push(rlo[r], rhi[r], e);
    }
    for cut in d["cuts"].as_array().expect("cuts") {
        let c = floats(cut);
        let e = std::iter::once((theta, 1.0)).chain((0..nh).map(|h| (h, -c[1 + h])));
        rows.push(c[0], INF, e);
    }
    let states: Vec<Vec<f64>> = d["states"].as_array().expect("states").iter().map(floats).collect();
    let inflows: Vec<Vec<f64>> = d["inflows"].as_array().expect("inflows").iter().map(floats).collect();
    let loads = d["loads"].as_u64().expect("loads") as usize;
    let solves = d["solves"].as_u64().expect("solves") as usize;
    let rhs_rows: Vec<i32> = (0..nh as i32).collect();
    let mut rhs = vec![0.0; nh];
    let set = |lp: &mut Lp, i: usize, rhs: &mut Vec<f64>| {
        let (x, a) = (&states[i % states.len()], &inflows[i % inflows.len()]);
        for h in 0..nh {
            rhs[h] = x[h] + a[h];
        }
        lp.set_row_bounds(&rhs_rows, rhs, rhs).expect("rhs");
    };
    let mut lp = Lp::new(&cost, &lo, &hi, &rows).expect("model");
    // Stage change: the same instance takes the model again, then a cold solve.
    let t0 = Instant::now();
    for _ in 0..loads {
        lp.reload(&cost, &lo, &hi, &rows).expect("reload");
    }
    let load_us = t0.elapsed().as_secs_f64() * 1e6 / loads as f64;
    let t0 = Instant::now();
    let mut cold_obj = 0.0;
    for i in 0..loads {
        lp.reload(&cost, &lo, &hi, &rows).expect("reload");
        set(&mut lp, i, &mut rhs);
        lp.solve().expect("solve");
        cold_obj += lp.objective();
    }
    let load_cold_us = t0.elapsed().as_secs_f64() * 1e6 / loads as f64;
    // Stage change as the engine does it: load, then solve from the basis
    // this stage had (here: the optimal basis of the previous state).
    lp.reload(&cost, &lo, &hi, &rows).expect("reload");
    set(&mut lp, 0, &mut rhs);
    lp.solve().expect("solve");
    let (mut bc, mut br) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    for i in 0..loads {
        lp.basis(&mut bc, &mut br);
        lp.reload(&cost, &lo, &hi, &rows).expect("reload");
        lp.set_basis(&bc, &br).expect("basis");
        set(&mut lp, i + 1, &mut rhs);
        lp.solve().expect("solve");
    }
    let load_basis_us = t0.elapsed().as_secs_f64() * 1e6 / loads as f64;
    lp.reload(&cost, &lo, &hi, &rows).expect("reload");
    let t0 = Instant::now();
    let (mut warm_obj, mut iters) = (0.0, 0i64);
    for i in 0..solves {
        set(&mut lp, i, &mut rhs);
        lp.solve().expect("solve");
        warm_obj += lp.objective();
        iters += lp.iterations();
    }
    let warm_us = t0.elapsed().as_secs_f64() * 1e6 / solves as f64;
    let before = rss();
    let held: Vec<Lp> = (0..8)
        .map(|i| {
            let mut l = Lp::new(&cost, &lo, &hi, &rows).expect("model");
            set(&mut l, i, &mut rhs);
            l.solve().expect("solve");
            l
        })
        .collect();
    let bytes = (rss() - before) / held.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "solver": "highs-sys 1.15 (own wrapper)",
            "load_us": load_us,
            "load_cold_solve_us": load_cold_us,
            "load_basis_solve_us": load_basis_us,
            "warm_solve_us": warm_us,
            "warm_iterations_per_solve": iters as f64 / solves as f64,
            "bytes_per_instance": bytes,
            "cold_objective_sum": cold_obj,
            "warm_objective_sum": warm_obj,
        })
    );
}
