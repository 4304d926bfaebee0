//! Upstream's training replayed by the model: upstream trains on HiGHS
//! wrapped to log every call, the model redoes every solve's preparation,
//! trial state, cut row, cut and lower bound from what upstream's solves
//! returned, bit for bit.

use super::*;
/// A cut row: its entries (column, value bits) by column, and its lower bound.
type CutRow = (Vec<(usize, u64)>, u64);

/// The rows the model's layout renders for the active cuts of upstream's
/// `pool` (stage `t`) generated in the iterations `keep` admits, slot order.
fn rendered_rows(
    model: &UpstreamModel<'_>,
    pool: &CutPool,
    t: usize,
    keep: impl Fn(u64) -> bool,
) -> Vec<CutRow> {
    let layout = model.cut_layout(t);
    let d = &model.stage_lp(t).col_scale;
    let theta = model.theta_column(t);
    pool.active_cuts()
        .filter(|&(slot, _, _)| keep(pool.metadata(slot).iteration_generated))
        .map(|(_, alpha, pi)| {
            let mut entries: Vec<(usize, u64)> = layout
                .render
                .iter()
                .map(|&(k, col)| (col, (-pi[k] * scale(d, col)).to_bits()))
                .collect();
            entries.push((theta, scale(d, theta).to_bits()));
            entries.sort_unstable();
            (entries, alpha.to_bits())
        })
        .collect()
}

/// The rows of a loaded LP past the stage template's `base` rows.
fn template_rows(lp: &StageTemplate, base: usize) -> Vec<CutRow> {
    let extra = lp.num_rows.saturating_sub(base);
    let mut rows: Vec<Vec<(usize, u64)>> = vec![Vec::new(); extra];
    for j in 0..lp.num_cols {
        let (from, to) = (lp.col_starts[j] as usize, lp.col_starts[j + 1] as usize);
        for idx in from..to {
            let row = lp.row_indices[idx] as usize;
            if row >= base {
                rows[row - base].push((j, lp.values[idx].to_bits()));
            }
        }
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, mut entries)| {
            entries.sort_unstable();
            assert_eq!(lp.row_upper[base + i], f64::INFINITY);
            (entries, lp.row_lower[base + i].to_bits())
        })
        .collect()
}

/// The rows of a row batch.
fn batch_rows(batch: &RowBatch) -> Vec<CutRow> {
    (0..batch.num_rows)
        .map(|i| {
            let (from, to) = (
                batch.row_starts[i] as usize,
                batch.row_starts[i + 1] as usize,
            );
            let mut entries: Vec<(usize, u64)> = (from..to)
                .map(|k| (batch.col_indices[k] as usize, batch.values[k].to_bits()))
                .collect();
            entries.sort_unstable();
            assert_eq!(batch.row_upper[i], f64::INFINITY);
            (entries, batch.row_lower[i].to_bits())
        })
        .collect()
}

/// Upstream trained `iterations` iterations on one thread with every solver
/// call logged.
struct Trained {
    study: LoadedStudy,
    iterations: usize,
    lower_bounds: Vec<f64>,
    /// The last iteration's upper bound (mean trajectory cost).
    upper_bound: f64,
    /// Solve groups of the solver upstream computes the lower bound on.
    main: Vec<Group>,
    /// Solve groups of the one worker (forward and backward passes).
    worker: Vec<Group>,
}

fn train_upstream(case: &Case, out: &TempDir, iterations: u64) -> Trained {
    let mut study = load(case, &out.path().join("upstream"));
    study.setup.loop_params.max_iterations = iterations;
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let next = AtomicUsize::new(1);
    let mut main = Recording::new(0, &log).expect("HiGHS");
    let outcome = study
        .setup
        .train(
            &mut main,
            &LocalBackend,
            1,
            || Recording::new(next.fetch_add(1, Ordering::Relaxed), &log),
            None,
            None,
        )
        .expect("upstream trains");
    if let Some(e) = outcome.error {
        panic!("upstream training failed on {}: {e}", case.name);
    }
    drop(main);
    let events = std::mem::take(&mut *log.lock().expect("the log is not poisoned"));
    let ids: std::collections::BTreeSet<usize> = events.iter().map(|(id, _)| *id).collect();
    let stream = |want: usize| {
        events
            .iter()
            .filter(move |(id, _)| *id == want)
            .map(|(_, e)| e.clone())
    };
    let worker_ids: Vec<usize> = ids
        .iter()
        .copied()
        .filter(|&id| id != 0 && stream(id).any(|e| matches!(e, Event::Solve(_))))
        .collect();
    assert_eq!(worker_ids.len(), 1, "one thread solves the passes");
    Trained {
        iterations: usize::try_from(outcome.result.iterations).expect("iterations"),
        lower_bounds: outcome.result.lower_bound_history.clone(),
        upper_bound: outcome.result.final_ub,
        main: groups(stream(0)),
        worker: groups(stream(worker_ids[0])),
        study,
    }
}

fn solved(group: &Group) -> &Solved {
    group.solved.as_ref().expect("upstream's solve succeeded")
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1.0)
}

/// Replay `iterations` iterations of upstream's training with the model.
pub(super) fn replay(case: &Case, iterations: u64) {
    let out = TempDir::new(&case.name);
    let up = train_upstream(case, &out, iterations);
    let fcf = &up.study.setup.fcf;
    let study = load(case, &out.path().join("model"));
    let model = UpstreamModel::new(case.name.clone(), &study.setup, &study.params)
        .unwrap_or_else(|e| panic!("{} is refused: {e}", case.name));
    let (stages, n) = (model.stages(), model.state_len());
    let m_fp = study.setup.loop_params.forward_passes as usize;
    let theta = model.theta_column(0);
    let mut scratch = model.scratch();
    let mut worker = up.worker.iter();
    let mut main = up.main.iter();
    let mut noise = vec![0.0; model.noise_len()];
    let blocks: Vec<Vec<f64>> = (0..stages).map(|t| tree_block(&model, t)).collect();
    for t in 0..stages {
        // θ's cost is the one-step discount, scaled as its column.
        let lp = model.stage_lp(t);
        assert_eq!(
            lp.objective[theta].to_bits(),
            (model.discount(t) * scale(&lp.col_scale, theta)).to_bits(),
            "{}: discount of stage {t}",
            case.name
        );
    }
    let mut own = ActiveSolver::new().expect("HiGHS");
    own.apply_profile(&model.profile(Phase::Forward));
    for it in 1..=up.iterations {
        let here = |what: &str| format!("{}: iteration {it}, {what}", case.name);
        // Forward pass: stage-major, trajectories in order.
        let mut states = vec![vec![vec![0.0; n]; stages]; m_fp];
        let mut costs = vec![0.0; m_fp];
        for t in 0..stages {
            for (m, trajectory) in states.iter_mut().enumerate() {
                let g = worker.next().expect("a forward solve");
                let incoming = if t == 0 {
                    model.initial_state().to_vec()
                } else {
                    trajectory[t - 1].clone()
                };
                model.forward_noise(it, m, t, &blocks[t], &mut noise);
                let mut want = prepared(&model, &mut scratch, t, &noise, &incoming);
                if t + 1 == stages {
                    want.push(Bound::Cols(
                        vec![theta],
                        vec![0f64.to_bits()],
                        vec![0f64.to_bits()],
                    ));
                }
                assert_eq!(
                    g.bounds,
                    want,
                    "{}",
                    here(&format!("forward stage {t}, trajectory {m}"))
                );
                // The frozen LP: the stage's template and its pool's cuts of
                // the earlier iterations, rendered by the model's layout.
                assert_eq!(g.loads.len(), 1);
                let lp = &g.loads[0];
                assert_eq!(lp.num_cols, model.stage_lp(t).num_cols);
                let rows = template_rows(lp, model.stage_lp(t).num_rows);
                let want_rows = if t + 1 < stages {
                    rendered_rows(&model, &fcf.pools[t], t, |i| i < it as u64)
                } else {
                    Vec::new()
                };
                assert_eq!(
                    rows,
                    want_rows,
                    "{}",
                    here(&format!("cut rows of stage {t}"))
                );
                if it == 1 {
                    assert!(
                        same_lp(lp, model.stage_lp(t)),
                        "{}",
                        here(&format!("LP of stage {t}"))
                    );
                }
                let s = solved(g);
                let x = unscaled(&s.primal, &model.stage_lp(t).col_scale);
                // The trajectory's cost as upstream's upper bound counts it.
                let stage_cost = (s.objective - model.discount(t) * x[theta]) * model.cost_scale();
                costs[m] += model.cumulative_discount(t) * stage_cost;
                model.outgoing(t, &x, &incoming, &noise, &mut scratch, &mut trajectory[t]);
                if it == 1 {
                    // The same LP solved cold by the model's own solver.
                    own.load_model(model.stage_lp(t));
                    model.prepare(t, &noise, &incoming, &mut scratch, &mut own);
                    if t + 1 == stages {
                        own.set_col_bounds(&[theta], &[0.0], &[0.0]);
                    }
                    let mine = own.solve(None).expect("the model's LP solves").objective;
                    assert!(
                        rel(mine, s.objective) < 1e-9,
                        "{}: {mine} vs upstream {}",
                        here(&format!("stage {t} objective, trajectory {m}")),
                        s.objective
                    );
                }
            }
        }
        if it == up.iterations {
            #[allow(clippy::cast_precision_loss)]
            let mean = costs.iter().sum::<f64>() / m_fp as f64;
            assert!(
                rel(mean, up.upper_bound) < 1e-9,
                "{}: mean trajectory cost {mean} vs upstream's upper bound {}",
                here("upper bound"),
                up.upper_bound
            );
        }
        // Backward pass: stages T-2 … 0, trial points in order, openings in
        // solve order, on the successor stage's LP.
        for t in (0..stages - 1).rev() {
            let s = t + 1;
            let order = model.solve_order(s);
            let n_open = model.openings(s);
            assert_eq!(order.len(), n_open);
            for (m, trajectory) in states.iter().enumerate() {
                let x_hat = &trajectory[t];
                let mut outcomes: Vec<Option<&Solved>> = vec![None; n_open];
                for (pos, &w) in order.iter().enumerate() {
                    let g = worker.next().expect("a backward solve");
                    model.opening_noise(s, w, &mut noise);
                    let want = prepared(&model, &mut scratch, s, &noise, x_hat);
                    assert_eq!(
                        g.bounds,
                        want,
                        "{}",
                        here(&format!("backward stage {s}, trial point {m}, opening {w}"))
                    );
                    if pos == 0 {
                        // The successor's LP: its frozen cuts, then this
                        // iteration's new cuts.
                        assert_eq!(g.loads.len(), 1);
                        let mut rows = template_rows(&g.loads[0], model.stage_lp(s).num_rows);
                        for batch in &g.add_rows {
                            rows.extend(batch_rows(batch));
                        }
                        let want_rows = if s + 1 < stages {
                            rendered_rows(&model, &fcf.pools[s], s, |i| i <= it as u64)
                        } else {
                            Vec::new()
                        };
                        assert_eq!(
                            rows,
                            want_rows,
                            "{}",
                            here(&format!("cut rows of stage {s}"))
                        );
                    } else {
                        assert!(g.loads.is_empty() && g.add_rows.is_empty());
                    }
                    outcomes[w] = Some(solved(g));
                }
                check_cut(
                    &model,
                    &fcf.pools[t],
                    t,
                    it,
                    m,
                    m_fp,
                    x_hat,
                    &outcomes,
                    &here,
                );
            }
        }
        // Lower bound: the first stage's openings in order, at the initial
        // state, on the main solver.
        let n0 = model.openings(0);
        let mut objectives = Vec::with_capacity(n0);
        for w in 0..n0 {
            let g = main.next().expect("a lower-bound solve");
            model.opening_noise(0, w, &mut noise);
            let want = prepared(&model, &mut scratch, 0, &noise, model.initial_state());
            assert_eq!(
                g.bounds,
                want,
                "{}",
                here(&format!("lower bound, opening {w}"))
            );
            objectives.push(solved(g).objective);
        }
        let lb = model.cost_scale()
            * model
                .risk_measure(0)
                .evaluate(&objectives, &model.opening_probabilities(0));
        assert_eq!(
            lb.to_bits(),
            up.lower_bounds[it - 1].to_bits(),
            "{}: lower bound {lb} vs upstream {}",
            here("lower bound"),
            up.lower_bounds[it - 1]
        );
    }
    assert!(
        worker.next().is_none(),
        "upstream solved more than replayed"
    );
    assert!(main.next().is_none(), "upstream solved more lower bounds");
    // The profiles: the worker runs the forward and backward profiles, the
    // lower-bound solver none (HiGHS defaults).
    let applied: Vec<_> = up.worker.iter().flat_map(|g| g.profiles.clone()).collect();
    assert!(applied.contains(&model.profile(Phase::Forward)));
    assert!(applied.contains(&model.profile(Phase::Backward)));
    assert!(applied
        .iter()
        .all(|p| *p == model.profile(Phase::Forward) || *p == model.profile(Phase::Backward)));
    assert!(up.main.iter().all(|g| g.profiles.is_empty()));
    assert_eq!(
        model.profile(Phase::LowerBound),
        cobre_solver::HighsProfile::default()
    );
    lower_bounds_from_pool(&model, fcf, &up, case);
}

/// The cut of trial point `m` at pool `t` from the recorded outcomes, by the
/// model's layout, probabilities and risk measure, against upstream's.
#[allow(clippy::too_many_arguments)]
fn check_cut(
    model: &UpstreamModel<'_>,
    pool: &CutPool,
    t: usize,
    it: usize,
    m: usize,
    m_fp: usize,
    x_hat: &[f64],
    outcomes: &[Option<&Solved>],
    here: &dyn Fn(&str) -> String,
) {
    let layout = model.cut_layout(t);
    let d = &model.stage_lp(t + 1).col_scale;
    let p = model.opening_probabilities(t + 1);
    let mut values = Vec::new();
    let mut alphas = Vec::new();
    let mut slopes = Vec::new();
    for o in outcomes {
        let o = o.expect("every opening solved");
        let pi: Vec<f64> = layout
            .incoming_column
            .iter()
            .map(|&c| o.reduced_costs[c] / scale(d, c))
            .collect();
        let dot: f64 = pi
            .iter()
            .enumerate()
            .map(|(k, &c)| c * x_hat[layout.state_index[k]])
            .sum();
        values.push(o.objective);
        alphas.push(o.objective - dot);
        slopes.push(pi);
    }
    let mut mu = Vec::new();
    model.risk_measure(t).weights(&values, &p, &mut mu);
    let mut alpha = 0.0;
    let mut pi = vec![0.0; layout.len()];
    for (w, &weight) in mu.iter().enumerate() {
        alpha += weight * alphas[w];
        for (agg, &c) in pi.iter_mut().zip(&slopes[w]) {
            *agg += weight * c;
        }
    }
    let slot = (it - 1) * m_fp + m;
    let what = here(&format!("cut of stage {t}, trial point {m}"));
    assert_eq!(pool.metadata(slot).iteration_generated, it as u64, "{what}");
    assert_eq!(
        alpha.to_bits(),
        pool.intercept(slot).to_bits(),
        "{what}: intercept {alpha} vs {}",
        pool.intercept(slot)
    );
    let theirs: Vec<u64> = pool
        .coefficient_row(slot)
        .iter()
        .map(|c| c.to_bits())
        .collect();
    let ours: Vec<u64> = pi.iter().map(|c| c.to_bits()).collect();
    assert_eq!(
        ours,
        theirs,
        "{what}: coefficients {pi:?} vs {:?}",
        pool.coefficient_row(slot)
    );
}

/// Every iteration's lower bound, solved by the model alone: the first
/// stage's LP with upstream's first-pool cuts of iterations up to it,
/// rendered by the model's layout, solved cold under the lower-bound profile.
fn lower_bounds_from_pool(
    model: &UpstreamModel<'_>,
    fcf: &cobre_sddp::FutureCostFunction,
    up: &Trained,
    case: &Case,
) {
    let mut scratch = model.scratch();
    let mut noise = vec![0.0; model.noise_len()];
    for (k, &theirs) in up.lower_bounds.iter().enumerate() {
        let mut solver = ActiveSolver::new().expect("HiGHS");
        solver.apply_profile(&model.profile(Phase::LowerBound));
        solver.load_model(model.stage_lp(0));
        let rows = rendered_rows(model, &fcf.pools[0], 0, |i| i <= k as u64 + 1);
        let mut batch = RowBatch {
            num_rows: 0,
            row_starts: vec![0],
            col_indices: Vec::new(),
            values: Vec::new(),
            row_lower: Vec::new(),
            row_upper: Vec::new(),
        };
        for (entries, lower) in &rows {
            for &(col, value) in entries {
                batch.col_indices.push(i32::try_from(col).expect("column"));
                batch.values.push(f64::from_bits(value));
            }
            batch
                .row_starts
                .push(i32::try_from(batch.values.len()).expect("nnz"));
            batch.row_lower.push(f64::from_bits(*lower));
            batch.row_upper.push(f64::INFINITY);
            batch.num_rows += 1;
        }
        if batch.num_rows > 0 {
            solver.add_rows(&batch);
        }
        let objectives: Vec<f64> = (0..model.openings(0))
            .map(|w| {
                model.opening_noise(0, w, &mut noise);
                model.prepare(0, &noise, model.initial_state(), &mut scratch, &mut solver);
                solver.solve(None).expect("stage 0 solves").objective
            })
            .collect();
        let lb = model.cost_scale()
            * model
                .risk_measure(0)
                .evaluate(&objectives, &model.opening_probabilities(0));
        assert!(
            rel(lb, theirs) < 1e-9,
            "{}: iteration {}: the model's own lower bound {lb} vs upstream's {theirs}",
            case.name,
            k + 1
        );
    }
}

/// Bitwise equality of two LPs.
fn same_lp(a: &StageTemplate, b: &StageTemplate) -> bool {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
    a.num_cols == b.num_cols
        && a.num_rows == b.num_rows
        && a.col_starts == b.col_starts
        && a.row_indices == b.row_indices
        && bits(&a.values) == bits(&b.values)
        && bits(&a.col_lower) == bits(&b.col_lower)
        && bits(&a.col_upper) == bits(&b.col_upper)
        && bits(&a.objective) == bits(&b.objective)
        && bits(&a.row_lower) == bits(&b.row_lower)
        && bits(&a.row_upper) == bits(&b.row_upper)
}
