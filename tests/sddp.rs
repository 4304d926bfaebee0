//! SDDP correctness: the lower bound is a valid bound at every iteration and
//! converges to the optimum of the deterministic equivalent over the full
//! scenario tree (built here independently of the engine and solved with
//! HiGHS); the tutorial gives 8333.33; cases the engine used to refuse are
//! solved (penalised slacks where a stage has no other way out); invalid
//! cases are refused with a message naming the field.

mod common;

use cobre_comm::LocalBackend;
use cobre_shm::Comm;
use cobre_shm_sddp::hydrothermal::case::Uncertainty;
use cobre_shm_sddp::hydrothermal::lp::penalty_cost;
use cobre_shm_sddp::hydrothermal::{case::Case, options, HydroThermal};
use cobre_shm_sddp::{train, Hooks, TrainReport};
use cobre_solver::{HighsSolver, SolverInterface, StageTemplate};

const INF: f64 = f64::INFINITY;

/// A minimisation LP built row by row, solved as a CSC template.
#[derive(Default)]
struct Lp {
    cost: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    triplets: Vec<(usize, usize, f64)>,
    row_lo: Vec<f64>,
    row_hi: Vec<f64>,
}

impl Lp {
    fn col(&mut self, cost: f64, lo: f64, hi: f64) -> usize {
        self.cost.push(cost);
        self.lo.push(lo);
        self.hi.push(hi);
        self.cost.len() - 1
    }

    fn row(&mut self, lo: f64, hi: f64, entries: &[(usize, f64)]) {
        let r = self.row_lo.len();
        self.row_lo.push(lo);
        self.row_hi.push(hi);
        self.triplets
            .extend(entries.iter().map(|&(c, v)| (r, c, v)));
    }

    fn solve(mut self) -> f64 {
        let n = self.cost.len();
        self.triplets.sort_by_key(|&(r, c, _)| (c, r));
        let mut starts = vec![0i32; n + 1];
        for &(_, c, _) in &self.triplets {
            starts[c + 1] += 1;
        }
        for c in 0..n {
            starts[c + 1] += starts[c];
        }
        let template = StageTemplate {
            num_cols: n,
            num_rows: self.row_lo.len(),
            num_nz: self.triplets.len(),
            col_starts: starts,
            row_indices: self.triplets.iter().map(|t| t.0 as i32).collect(),
            values: self.triplets.iter().map(|t| t.2).collect(),
            col_lower: self.lo,
            col_upper: self.hi,
            objective: self.cost,
            row_lower: self.row_lo,
            row_upper: self.row_hi,
            n_state: 0,
            col_scale: Vec::new(),
            row_scale: Vec::new(),
        };
        let mut solver = HighsSolver::new().expect("HiGHS");
        solver.load_model(&template);
        solver
            .solve(None)
            .expect("the deterministic equivalent is solvable")
            .objective
    }
}

/// Optimal expected cost over the full scenario tree of `case`, with the
/// same penalised slacks as the stage LPs (overflow for reservoirs that
/// cannot spill and have a turbine limit; unserved energy when every
/// deficit tier is limited).
fn deterministic_equivalent(case: &Case) -> f64 {
    let Uncertainty::Explicit {
        probabilities,
        inflows,
    } = &case.uncertainty
    else {
        panic!("the deterministic equivalent needs explicit openings");
    };
    let penalty = penalty_cost(case);
    let unserved = case.deficit.iter().all(|d| d.max.is_finite());
    let mut lp = Lp::default();
    // End-volume columns of each node of the previous stage, with its probability.
    let mut parents: Vec<(Option<Vec<usize>>, f64)> = vec![(None, 1.0)];
    for t in 0..case.stages {
        let mut next = Vec::new();
        for (parent, p_parent) in &parents {
            for (k, &p_k) in probabilities[t].iter().enumerate() {
                let p = p_parent * p_k;
                let v: Vec<usize> = case
                    .hydros
                    .iter()
                    .map(|h| lp.col(0.0, h.min_volume, h.max_volume))
                    .collect();
                let q: Vec<usize> = case
                    .hydros
                    .iter()
                    .map(|h| lp.col(0.0, 0.0, h.max_turbined))
                    .collect();
                let s: Vec<usize> = case
                    .hydros
                    .iter()
                    .map(|h| {
                        lp.col(
                            p * h.spill_cost,
                            0.0,
                            if h.spill_allowed { INF } else { 0.0 },
                        )
                    })
                    .collect();
                let o: Vec<Option<usize>> = case
                    .hydros
                    .iter()
                    .map(|h| {
                        (!h.spill_allowed && h.max_turbined.is_finite())
                            .then(|| lp.col(p * penalty, 0.0, INF))
                    })
                    .collect();
                let g: Vec<usize> = case
                    .thermals
                    .iter()
                    .map(|th| lp.col(p * th.cost[t], 0.0, th.capacity))
                    .collect();
                let d: Vec<usize> = case
                    .deficit
                    .iter()
                    .map(|df| lp.col(p * df.cost, 0.0, df.max))
                    .collect();
                let u = unserved.then(|| lp.col(p * penalty, 0.0, INF));
                for (h, hy) in case.hydros.iter().enumerate() {
                    let mut e = vec![(v[h], 1.0), (q[h], 1.0), (s[h], 1.0)];
                    e.extend(o[h].map(|c| (c, 1.0)));
                    for (up, uh) in case.hydros.iter().enumerate() {
                        if uh.downstream == Some(h) {
                            e.push((q[up], -1.0));
                            e.push((s[up], -1.0));
                            e.extend(o[up].map(|c| (c, -1.0)));
                        }
                    }
                    let a = inflows[t][k][h];
                    match parent {
                        Some(pv) => {
                            e.push((pv[h], -1.0));
                            lp.row(a, a, &e);
                        }
                        None => lp.row(hy.initial_volume + a, hy.initial_volume + a, &e),
                    }
                }
                let mut supply: Vec<(usize, f64)> = case
                    .hydros
                    .iter()
                    .enumerate()
                    .map(|(h, hy)| (q[h], hy.productivity))
                    .collect();
                supply.extend(g.iter().chain(&d).chain(&u).map(|&c| (c, 1.0)));
                lp.row(case.demand[t], case.demand[t], &supply);
                next.push((Some(v), p));
            }
        }
        parents = next;
    }
    lp.solve()
}

fn train_local(case: &Case, iterations: usize, passes: usize) -> TrainReport {
    let (mut opts, _) = options(case, 2);
    opts.iterations = iterations;
    opts.forward_passes = passes;
    let model = HydroThermal::new(case, 11);
    train(
        &Comm::Local(LocalBackend),
        &model,
        &opts,
        Hooks::iterations(&mut |_| {}),
    )
    .expect("train")
}

fn converge(case: &Case, iterations: usize, passes: usize) -> Vec<f64> {
    let report = train_local(case, iterations, passes);
    report.rows.iter().map(|r| r.lower_bound).collect()
}

fn check_against_de(json: &str, iterations: usize, passes: usize) -> TrainReport {
    let case = Case::parse(json, "test", "t").expect("valid case");
    let exact = deterministic_equivalent(&case);
    let report = train_local(&case, iterations, passes);
    let lbs: Vec<f64> = report.rows.iter().map(|r| r.lower_bound).collect();
    for (i, lb) in lbs.iter().enumerate() {
        assert!(
            *lb <= exact + 1e-8 * exact.abs().max(1.0),
            "iteration {}: lower bound {lb} above the optimum {exact}",
            i + 1
        );
    }
    let last = *lbs.last().expect("iterations");
    let rel = (exact - last).abs() / exact.abs().max(1.0);
    assert!(
        rel < 1e-6,
        "lower bound {last} vs optimum {exact} (relative gap {rel:e}); trace {lbs:?}"
    );
    report
}

#[test]
fn tutorial_reaches_8333_33() {
    let case = Case::parse(
        cobre_shm_sddp::hydrothermal::case::TUTORIAL_CASE,
        "tutorial",
        "t",
    )
    .expect("tutorial");
    let exact = deterministic_equivalent(&case);
    assert!(
        (exact - 25_000.0 / 3.0).abs() < 1e-4,
        "deterministic equivalent {exact}"
    );
    let lbs = converge(&case, 20, 10);
    let last = *lbs.last().expect("iterations");
    assert!((last - 25_000.0 / 3.0).abs() < 1e-4, "lower bound {last}");
}

const CASCADE_2: &str = r#"{
  "name": "cascade2", "stages": 4,
  "hydros": [
    {"name": "up", "max_volume": 120, "initial_volume": 60, "max_turbined": 40, "productivity": 1.2, "downstream": "down", "spill_cost": 0.5},
    {"name": "down", "min_volume": 10, "max_volume": 80, "initial_volume": 30, "max_turbined": 50, "productivity": 0.9}
  ],
  "thermals": [
    {"name": "cheap", "capacity": 30, "cost": [20, 25, 30, 35]},
    {"name": "dear", "capacity": null, "cost": 90}
  ],
  "demand": [80, 95, 110, 90],
  "deficit": [{"cost": 300, "max": 10}, {"cost": 1000, "max": null}],
  "inflows": [
    {"openings": [{"probability": 0.2, "inflows": [5, 2]}, {"probability": 0.5, "inflows": [25, 10]}, {"probability": 0.3, "inflows": [60, 20]}]},
    {"openings": [{"probability": 0.3, "inflows": [0, 0]}, {"probability": 0.4, "inflows": [30, 5]}, {"probability": 0.3, "inflows": [70, 25]}]},
    {"openings": [{"probability": 0.5, "inflows": [10, 3]}, {"probability": 0.25, "inflows": [40, 12]}, {"probability": 0.25, "inflows": [80, 30]}]},
    {"openings": [{"probability": 0.4, "inflows": [15, 5]}, {"probability": 0.3, "inflows": [35, 8]}, {"probability": 0.3, "inflows": [50, 15]}]}
  ]
}"#;

const CASCADE_3: &str = r#"{
  "name": "cascade3", "stages": 3,
  "hydros": [
    {"name": "a", "max_volume": 100, "initial_volume": 50, "max_turbined": 30, "productivity": 1.0, "downstream": "c"},
    {"name": "b", "max_volume": 60, "initial_volume": 20, "max_turbined": 25, "productivity": 1.1, "downstream": "c"},
    {"name": "c", "max_volume": 150, "initial_volume": 100, "max_turbined": 70, "productivity": 0.8, "spill_cost": 1}
  ],
  "thermals": [{"name": "g1", "capacity": 40, "cost": [30, 60, 45]}, {"name": "g2", "capacity": 40, "cost": [80, 70, 120]}],
  "demand": 120,
  "deficit": [{"cost": 500, "max": null}],
  "inflows": [
    {"openings": [
      {"probability": 0.1, "inflows": [0, 0, 0]}, {"probability": 0.2, "inflows": [10, 5, 3]},
      {"probability": 0.3, "inflows": [20, 10, 6]}, {"probability": 0.25, "inflows": [35, 12, 9]},
      {"probability": 0.15, "inflows": [60, 25, 15]}]},
    {"openings": [
      {"probability": 0.2, "inflows": [2, 1, 0]}, {"probability": 0.2, "inflows": [12, 4, 2]},
      {"probability": 0.2, "inflows": [22, 9, 5]}, {"probability": 0.2, "inflows": [30, 14, 8]},
      {"probability": 0.2, "inflows": [55, 20, 20]}]},
    {"openings": [
      {"probability": 0.3, "inflows": [5, 2, 1]}, {"probability": 0.3, "inflows": [15, 8, 4]},
      {"probability": 0.2, "inflows": [25, 11, 7]}, {"probability": 0.1, "inflows": [40, 18, 11]},
      {"probability": 0.1, "inflows": [70, 30, 25]}]}
  ]
}"#;

const SIX_STAGES: &str = r#"{
  "name": "six", "stages": 6,
  "hydros": [
    {"name": "x", "max_volume": 50, "initial_volume": 25, "max_turbined": 20, "productivity": 1.0},
    {"name": "y", "max_volume": 40, "initial_volume": 10, "max_turbined": null, "productivity": 0.7, "spill_allowed": false}
  ],
  "thermals": [{"name": "t", "capacity": 15, "cost": [10, 40, 10, 40, 10, 40]}],
  "demand": [30, 35, 25, 40, 30, 35],
  "deficit": [{"cost": 200, "max": 5}, {"cost": 800, "max": null}],
  "inflows": [
    {"openings": [{"probability": 0.5, "inflows": [5, 3]}, {"probability": 0.5, "inflows": [20, 9]}]},
    {"openings": [{"probability": 0.6, "inflows": [0, 2]}, {"probability": 0.4, "inflows": [25, 6]}]},
    {"openings": [{"probability": 0.5, "inflows": [8, 1]}, {"probability": 0.5, "inflows": [14, 12]}]},
    {"openings": [{"probability": 0.3, "inflows": [3, 0]}, {"probability": 0.7, "inflows": [18, 7]}]},
    {"openings": [{"probability": 0.5, "inflows": [6, 4]}, {"probability": 0.5, "inflows": [16, 8]}]},
    {"openings": [{"probability": 0.5, "inflows": [2, 2]}, {"probability": 0.5, "inflows": [22, 10]}]}
  ]
}"#;

#[test]
fn two_reservoir_cascade_with_deficit_tiers_converges_to_the_optimum() {
    check_against_de(CASCADE_2, 60, 8);
}

#[test]
fn three_reservoir_cascade_with_five_openings_converges_to_the_optimum() {
    check_against_de(CASCADE_3, 60, 8);
}

#[test]
fn six_stages_with_unspillable_reservoir_converge_to_the_optimum() {
    check_against_de(SIX_STAGES, 80, 8);
}

/// An unspillable reservoir with a turbine limit used to be refused; when
/// every inflow fits through the turbine, nothing changes and no slack is
/// used; when a flood cannot fit, the overflow slack carries it (at the
/// stated penalty) and the run still converges to the optimum.
#[test]
fn unspillable_reservoir_with_limited_turbine_is_solved() {
    let fits = SIX_STAGES.replacen(
        r#""max_turbined": null, "productivity": 0.7, "spill_allowed": false"#,
        r#""max_turbined": 12, "productivity": 0.7, "spill_allowed": false"#,
        1,
    );
    let report = check_against_de(&fits, 80, 8);
    assert_eq!(report.work.penalty_slack, 0.0);
    let flood = fits.replacen(r#""inflows": [22, 10]"#, r#""inflows": [22, 90]"#, 1);
    let report = check_against_de(&flood, 80, 8);
    assert!(report.work.penalty_slack > 0.0);
}

/// Limited deficit tiers that cannot always cover the demand used to be
/// refused: the unserved-energy slack makes every stage feasible.
#[test]
fn demand_above_firm_supply_is_solved() {
    let tight = SIX_STAGES.replacen(
        r#"{"cost": 800, "max": null}"#,
        r#"{"cost": 800, "max": 1}"#,
        1,
    );
    check_against_de(&tight, 80, 8);
}

/// Replace `from` by `to` in the JSON and expect a message containing `needle`.
fn invalid(base: &str, from: &str, to: &str, needle: &str) {
    assert!(base.contains(from), "test setup: '{from}' not in the case");
    let text = base.replacen(from, to, 1);
    let err = Case::parse(&text, "case.json", "c")
        .expect_err(needle)
        .to_string();
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(err.starts_with("case.json"), "the file is named: {err}");
}

#[test]
fn invalid_cases_name_the_field() {
    invalid(
        CASCADE_2,
        r#""downstream": "down""#,
        r#""downstream": "nowhere""#,
        "hydros[0].downstream: unknown hydro 'nowhere'",
    );
    invalid(
        CASCADE_3,
        r#""productivity": 0.8, "spill_cost": 1}"#,
        r#""productivity": 0.8, "spill_cost": 1, "downstream": "a"}"#,
        "cascade cycle a -> c -> a",
    );
    invalid(
        CASCADE_2,
        r#""initial_volume": 60"#,
        r#""initial_volume": 160"#,
        "hydros[0].initial_volume: 160 is outside [0, 120]",
    );
    invalid(
        CASCADE_2,
        r#""probability": 0.2, "inflows": [5, 2]"#,
        r#""probability": 0.1, "inflows": [5, 2]"#,
        "inflows[0].openings: probabilities sum to 0.9",
    );
    invalid(
        CASCADE_2,
        r#""cost": [20, 25, 30, 35]"#,
        r#""cost": [20, 25, 30]"#,
        "thermals[0].cost: 3 values for 4 stages",
    );
    invalid(
        CASCADE_2,
        r#""inflows": [5, 2]"#,
        r#""inflows": [-5, 2]"#,
        "inflows[0].openings[0].inflows[0]: -5 is negative",
    );
    invalid(
        CASCADE_2,
        r#""inflows": [5, 2]"#,
        r#""inflows": [5]"#,
        "inflows[0].openings[0].inflows: 1 values for 2 hydros",
    );
    invalid(
        CASCADE_2,
        r#""demand": [80, 95, 110, 90]"#,
        r#""demand": [80, 95, 110]"#,
        "demand: 3 values for 4 stages",
    );
    invalid(
        CASCADE_2,
        r#""name": "down""#,
        r#""name": "up""#,
        "hydros[1].name: 'up' is used by two hydros",
    );
    invalid(
        CASCADE_2,
        r#""max_turbined": 40"#,
        r#""max_turbinde": 40"#,
        "unknown field `max_turbinde`",
    );
    invalid(
        CASCADE_2,
        r#""inflows": [5, 2]"#,
        r#""inflows": [NaN, 2]"#,
        "expected value",
    );
    invalid(
        CASCADE_2,
        r#""inflows": [5, 2]"#,
        r#""inflows": [1e999, 2]"#,
        "number out of range",
    );
    invalid(
        CASCADE_2,
        r#""stages": 4"#,
        r#""stages": 0"#,
        "stages: must be at least 1",
    );
    invalid(
        CASCADE_2,
        r#""stages": 4"#,
        r#""stages": 18446744073709551615"#,
        "stages: 18446744073709551615 is more than the 100000 stages",
    );
    invalid(
        CASCADE_2,
        r#""capacity": 30"#,
        r#""capacity": -30"#,
        "thermals[0].capacity: -30 is negative",
    );
}

#[test]
fn invalid_case_stops_the_launcher_before_any_rank() {
    let dir = std::env::temp_dir().join(format!("cobre-shm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        CASCADE_2.replacen(r#""downstream": "down""#, r#""downstream": "nowhere""#, 1),
    )
    .expect("write");
    let t = std::time::Instant::now();
    let out = std::process::Command::new(common::launcher_bin())
        .args(["-p", "4", "train"])
        .arg(&bad)
        .arg("--output")
        .arg(dir.join("out"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    // 2 = refused by the launcher itself; a failing rank would give 1.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("hydros[0].downstream: unknown hydro 'nowhere'"),
        "{err}"
    );
    assert!(!err.contains("rank"), "no rank may have started: {err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(dir);
}
