//! SDDP correctness: the lower bound is a valid bound at every iteration and
//! converges to the optimum of the deterministic equivalent over the full
//! scenario tree (built and solved here with HiGHS); the tutorial gives
//! 8333.33; invalid cases are refused with a message naming the field.

mod common;

use cobre_comm::LocalBackend;
use cobre_shm::Comm;
use cobre_shm_sddp::case::Uncertainty;
use cobre_shm_sddp::solver::{Lp, LpStatus, Rows, INF};
use cobre_shm_sddp::{train, Case, TrainOptions};

/// Optimal expected cost over the full scenario tree of `case`.
fn deterministic_equivalent(case: &Case) -> f64 {
    let Uncertainty::Explicit {
        probabilities,
        inflows,
    } = &case.uncertainty
    else {
        panic!("the deterministic equivalent needs explicit openings");
    };
    let (nh, nj, nl) = (case.hydros.len(), case.thermals.len(), case.deficit.len());
    let per_node = 3 * nh + nj + nl;
    let mut cost = Vec::new();
    let mut lo = Vec::new();
    let mut hi = Vec::new();
    let mut rows = Rows::default();
    // Nodes of the previous stage: (first column of the node, probability).
    let mut parents: Vec<(Option<usize>, f64)> = vec![(None, 1.0)];
    for t in 0..case.stages {
        let mut next = Vec::new();
        for &(parent, p_parent) in &parents {
            for (k, &p_k) in probabilities[t].iter().enumerate() {
                let p = p_parent * p_k;
                let base = cost.len();
                let (v0, q0, s0, g0) = (base, base + nh, base + 2 * nh, base + 3 * nh);
                let d0 = g0 + nj;
                for hy in &case.hydros {
                    cost.push(0.0);
                    lo.push(hy.min_volume);
                    hi.push(hy.max_volume);
                }
                for hy in &case.hydros {
                    cost.push(0.0);
                    lo.push(0.0);
                    hi.push(hy.max_turbined);
                }
                for hy in &case.hydros {
                    cost.push(p * hy.spill_cost);
                    lo.push(0.0);
                    hi.push(if hy.spill_allowed { INF } else { 0.0 });
                }
                for th in &case.thermals {
                    cost.push(p * th.cost[t]);
                    lo.push(0.0);
                    hi.push(th.capacity);
                }
                for d in &case.deficit {
                    cost.push(p * d.cost);
                    lo.push(0.0);
                    hi.push(d.max);
                }
                assert_eq!(cost.len(), base + per_node);
                for (h, hy) in case.hydros.iter().enumerate() {
                    let mut e = vec![(v0 + h, 1.0), (q0 + h, 1.0), (s0 + h, 1.0)];
                    for (u, up) in case.hydros.iter().enumerate() {
                        if up.downstream == Some(h) {
                            e.push((q0 + u, -1.0));
                            e.push((s0 + u, -1.0));
                        }
                    }
                    let a = inflows[t][k][h];
                    match parent {
                        Some(pv) => {
                            e.push((pv + h, -1.0));
                            rows.push(a, a, e);
                        }
                        None => rows.push(hy.initial_volume + a, hy.initial_volume + a, e),
                    }
                }
                let supply = case
                    .hydros
                    .iter()
                    .enumerate()
                    .map(|(h, hy)| (q0 + h, hy.productivity))
                    .chain((0..nj).map(|j| (g0 + j, 1.0)))
                    .chain((0..nl).map(|l| (d0 + l, 1.0)));
                rows.push(case.demand[t], case.demand[t], supply);
                next.push((Some(v0), p));
            }
        }
        parents = next;
    }
    let mut lp = Lp::new(&cost, &lo, &hi, &rows).expect("deterministic equivalent");
    assert_eq!(lp.solve().expect("solve"), LpStatus::Optimal);
    lp.objective()
}

fn converge(case: &Case, iterations: usize, passes: usize) -> Vec<f64> {
    let mut opts = TrainOptions::from_case(case, 2);
    opts.iterations = iterations;
    opts.forward_passes = passes;
    opts.seed = 11;
    let report = train(&Comm::Local(LocalBackend), case, &opts, |_| {}).expect("train");
    report.rows.iter().map(|r| r.lower_bound).collect()
}

fn check_against_de(json: &str, iterations: usize, passes: usize) {
    let case = Case::parse(json, "test", "t").expect("valid case");
    let exact = deterministic_equivalent(&case);
    let lbs = converge(&case, iterations, passes);
    for (i, lb) in lbs.iter().enumerate() {
        assert!(
            *lb <= exact * (1.0 + 1e-9) + 1e-9,
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
}

#[test]
fn tutorial_reaches_8333_33() {
    let case = Case::parse(cobre_shm_sddp::case::TUTORIAL_CASE, "tutorial", "t").expect("tutorial");
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
        SIX_STAGES,
        r#"{"cost": 800, "max": null}"#,
        r#"{"cost": 800, "max": 1}"#,
        "demand[0]: 30 exceeds the 21",
    );
    invalid(
        SIX_STAGES,
        r#""max_turbined": null, "productivity": 0.7, "spill_allowed": false"#,
        r#""max_turbined": 9, "productivity": 0.7, "spill_allowed": false"#,
        "hydros[1].spill_allowed",
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
