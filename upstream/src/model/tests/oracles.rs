//! The model against independent oracles: its bounds against the
//! formulas at perturbed states, its first stage against upstream's
//! lower-bound evaluation at perturbed initial states, its forward noise
//! against upstream's sampler.

use super::*;
/// `(column or row, lower, upper)` of each bound set.
type Bounds = Vec<(usize, f64, f64)>;

/// The bounds `prepare` should set, computed from the formulas: incoming
/// state pinned as `x / d` on the incoming-state columns, z-inflow rows at
/// `(base + σ·η_eff)·r` with truncation to the zero-inflow noise when a PAR
/// inflow would be negative, load rows at `max(0, μ + s·η)·factor·r`, NCS
/// columns at `max_gen·clamp(μ + s·η, 0, 1)·factor`. `(column or row, lower,
/// upper)` per bound, columns first.
fn formula_bounds(
    setup: &StudySetup,
    t: usize,
    noise: &[f64],
    incoming: &[f64],
) -> (Bounds, Bounds) {
    let stage = setup.stage_ctx();
    let training = setup.training_ctx();
    let state = training.state;
    let lp = &stage.templates[t];
    let (d, r) = (&lp.col_scale, &lp.row_scale);
    let mut cols = Vec::new();
    let regions = [
        (state.storage.clone(), state.storage_in.start),
        (state.inflow_lags.clone(), state.inflow_lags.start),
        (
            state.transit_buckets_out.clone(),
            state.transit_buckets_in.start,
        ),
        (state.commit_out.clone(), state.commit_in.start),
    ];
    for (range, incoming_start) in regions {
        for j in range.clone() {
            let col = incoming_start + (j - range.start);
            let v = incoming[j] / scale(d, col);
            cols.push((col, v, v));
        }
    }
    let stochastic = training.stochastic;
    let dims = stochastic.class_dimensions();
    let mut rows = Vec::new();
    let geometry = &stage.geometry_per_stage[t];
    let normal = stochastic.normal();
    if !stage.load_bus_indices.is_empty() {
        for (i, &bus) in stage.load_bus_indices.iter().enumerate() {
            let eta = noise[dims.load_bus_range().start + i];
            let load = (normal.mean(t, i) + normal.std(t, i) * eta).max(0.0);
            for blk in 0..geometry.n_blks {
                let row = geometry.load_balance_row(BusSys::new(bus), BlockIdx::new(blk));
                let v = load * normal.block_factor(t, i, blk) * scale(r, row);
                rows.push((row, v, v));
            }
        }
    }
    let par = stochastic.par();
    let n = dims.n_hydros;
    let lags = &incoming[state.inflow_lags.clone()];
    let det: Vec<f64> = (0..n)
        .map(|h| {
            let psi = if par.n_stages() > 0 {
                par.psi_slice(t, h)
            } else {
                &[]
            };
            par.deterministic_base(t, h)
                + psi
                    .iter()
                    .enumerate()
                    .map(|(l, p)| p * lags[l * n + h])
                    .sum::<f64>()
        })
        .collect();
    let truncate = matches!(
        training.inflow_method,
        cobre_sddp::InflowNonNegativityMethod::Truncation
            | cobre_sddp::InflowNonNegativityMethod::TruncationWithPenalty
    );
    let eta: Vec<f64> = noise[dims.hydro_range()].to_vec();
    let inflow = |h: usize| det[h] + par.sigma(t, h) * eta[h];
    let any_negative = truncate && (0..n).any(|h| inflow(h) < 0.0);
    for h in 0..n {
        let mut e = eta[h];
        if any_negative && inflow(h) < 0.0 {
            let sigma = par.sigma(t, h);
            let floor = if sigma == 0.0 {
                if det[h].abs() < 1e-10 {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            } else {
                -det[h] / sigma
            };
            e = e.max(floor);
        }
        let rhs = if par.n_stages() > 0 {
            par.deterministic_base(t, h) + par.sigma(t, h) * e
        } else {
            0.0
        };
        let row = state.z_inflow_row(cobre_sddp::indexer::HydroSys::new(h));
        rows.push((row, rhs * scale(r, row), rhs * scale(r, row)));
    }
    if stochastic.n_stochastic_ncs() > 0 {
        let ncs = stochastic.ncs_normal();
        let id = training.stages[t].id;
        for (k, &col) in stage.ncs_stochastic_dense_col.iter().enumerate() {
            let (entry, exit) = stage.ncs_stochastic_windows[k];
            let on = entry.is_none_or(|e| id >= e) && exit.is_none_or(|x| id < x);
            let eta = noise[dims.ncs_range().start + k];
            let avail = (ncs.mean(t, k) + ncs.std(t, k) * eta).clamp(0.0, 1.0);
            for blk in 0..geometry.n_blks {
                let c = geometry
                    .ncs_generation_col(cobre_sddp::indexer::NcsSys::new(col), BlockIdx::new(blk));
                let up = stage.ncs_max_gen[k] * avail * ncs.block_factor(t, k, blk);
                let lo = if stage.ncs_allow_curtailment[k] {
                    0.0
                } else {
                    up
                };
                cols.push(if on { (c, lo, up) } else { (c, 0.0, 0.0) });
            }
        }
    }
    (cols, rows)
}

/// Flatten bound calls into `(index, lower, upper)` of columns and of rows.
fn flatten(calls: &[Bound]) -> (Bounds, Bounds) {
    let (mut cols, mut rows) = (Vec::new(), Vec::new());
    for call in calls {
        let (target, idx, lo, up) = match call {
            Bound::Cols(i, l, u) => (&mut cols, i, l, u),
            Bound::Rows(i, l, u) => (&mut rows, i, l, u),
        };
        for k in 0..idx.len() {
            target.push((idx[k], f64::from_bits(lo[k]), f64::from_bits(up[k])));
        }
    }
    (cols, rows)
}

fn same_bounds(a: &[(usize, f64, f64)], b: &[(usize, f64, f64)]) -> bool {
    let close = |x: f64, y: f64| x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs());
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(p, q)| p.0 == q.0 && close(p.1, q.1) && close(p.2, q.2))
}

/// A state near `x`: storage and buckets scaled, lags shifted.
fn perturbed(setup: &StudySetup, x: &[f64], factor: f64) -> Vec<f64> {
    let state = setup.training_ctx().state;
    let mut y = x.to_vec();
    for j in state
        .storage
        .clone()
        .chain(state.transit_buckets_out.clone())
    {
        y[j] *= factor;
    }
    for j in state.inflow_lags.clone() {
        y[j] = y[j] * factor - 5.0;
    }
    y
}

/// Every stage, the first openings, the initial state and two perturbed
/// ones: `prepare` against the formulas.
pub(super) fn prepare_matches_the_formulas(case: &Case) {
    let out = TempDir::new(&case.name);
    let study = load(case, out.path());
    let model = UpstreamModel::new(case.name.clone(), &study.setup, &study.params)
        .unwrap_or_else(|e| panic!("{} is refused: {e}", case.name));
    let mut scratch = model.scratch();
    let mut noise = vec![0.0; model.noise_len()];
    let x0 = model.initial_state().to_vec();
    let states = [
        x0.clone(),
        perturbed(&study.setup, &x0, 0.7),
        perturbed(&study.setup, &x0, 1.3),
    ];
    let mut checked = 0;
    for t in 0..model.stages() {
        for w in 0..model.openings(t).min(5) {
            model.opening_noise(t, w, &mut noise);
            for x in &states {
                let calls = prepared(&model, &mut scratch, t, &noise, x);
                let (cols, rows) = flatten(&calls);
                let (want_cols, want_rows) = formula_bounds(&study.setup, t, &noise, x);
                assert!(
                    same_bounds(&cols, &want_cols),
                    "{}: stage {t}, opening {w}: columns {cols:?} vs {want_cols:?}",
                    case.name
                );
                assert!(
                    same_bounds(&rows, &want_rows),
                    "{}: stage {t}, opening {w}: rows {rows:?} vs {want_rows:?}",
                    case.name
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 3 * model.stages());
}

/// The first stage at perturbed initial states: the model's bounds against
/// those upstream's lower-bound evaluation sets (its stage-solve preparation
/// on every first-stage opening).
pub(super) fn first_stage_matches_upstream_at_perturbed_states(case: &Case) {
    let out = TempDir::new(&case.name);
    let study = load(case, out.path());
    let setup = &study.setup;
    let model = UpstreamModel::new(case.name.clone(), setup, &study.params)
        .unwrap_or_else(|e| panic!("{} is refused: {e}", case.name));
    let mut scratch = model.scratch();
    let mut noise = vec![0.0; model.noise_len()];
    let stage_ctx = setup.stage_ctx();
    for factor in [1.0, 0.6, 1.25] {
        let x = perturbed(setup, model.initial_state(), factor);
        let training = cobre_sddp::context::TrainingContext {
            initial_state: &x,
            ..setup.training_ctx()
        };
        let mut patch = cobre_sddp::lp::builder::PatchBuffer::new(
            training.state,
            stage_ctx.load_bus_indices,
            stage_ctx.geometry_per_stage,
        );
        let mut batch = RowBatch {
            num_rows: 0,
            row_starts: Vec::new(),
            col_indices: Vec::new(),
            values: Vec::new(),
            row_lower: Vec::new(),
            row_upper: Vec::new(),
        };
        let mut buffers = ScratchBuffers::new(&training, &stage_ctx, WorkspaceSizing::default());
        let mut lb = LbEvalScratch::new();
        let mut bundle = LbEvalScratchBundle::from_scratch_fields(
            &mut patch,
            &mut batch,
            None,
            &mut buffers,
            &mut lb,
        );
        let mut capture = Capture::default();
        evaluate_lower_bound(
            &mut capture,
            &setup.fcf,
            &stage_ctx,
            &training,
            &cobre_sddp::RiskMeasure::Expectation,
            &mut bundle,
            &LocalBackend,
        )
        .expect("upstream's lower-bound pass runs");
        let mut want = Vec::new();
        for w in 0..model.openings(0) {
            model.opening_noise(0, w, &mut noise);
            want.extend(prepared(&model, &mut scratch, 0, &noise, &x));
        }
        assert_eq!(
            capture.calls, want,
            "{}: initial state × {factor}",
            case.name
        );
    }
}

/// The forward noise against upstream's forward sampler.
pub(super) fn forward_noise_matches_upstream_sampler(case: &Case) {
    let out = TempDir::new(&case.name);
    let study = load(case, out.path());
    let setup = &study.setup;
    let model = UpstreamModel::new(case.name.clone(), setup, &study.params)
        .unwrap_or_else(|e| panic!("{} is refused: {e}", case.name));
    let training = setup.training_ctx();
    let sampler = cobre_sddp::forward::build_sampler_from_ctx(&training).expect("sampler");
    let tables = ForwardNoiseTables::default();
    let stage_ctx = setup.stage_ctx();
    let dim = model.noise_len();
    let (mut ours, mut theirs, mut corr) = (vec![0.0; dim], vec![0.0; dim], vec![0.0; 2 * dim]);
    let total = setup.loop_params.forward_passes;
    for t in 0..model.stages() {
        let block = tree_block(&model, t);
        for it in [1usize, 2, 7, 1000] {
            for g in 0..8usize {
                model.forward_noise(it, g, t, &block, &mut ours);
                let noise = sampler
                    .sample(SampleRequest {
                        iteration: u32::try_from(it).expect("small"),
                        scenario: u32::try_from(g).expect("small"),
                        stage: u32::try_from(t).expect("small"),
                        stage_idx: t,
                        noise_buf: &mut theirs,
                        corr_scratch: &mut corr,
                        tables: &tables,
                        total_scenarios: total,
                        noise_group_id: stage_ctx
                            .noise_group_id_at(cobre_sddp::setup::node_graph::StageIdx(t)),
                        node_opening_offset: 0,
                        node_opening_len: model.openings(t),
                        pinned_scenario: None,
                    })
                    .expect("upstream samples");
                let theirs: Vec<u64> = noise.as_slice().iter().map(|v| v.to_bits()).collect();
                let mine: Vec<u64> = ours.iter().map(|v| v.to_bits()).collect();
                assert_eq!(
                    mine, theirs,
                    "{}: iteration {it}, trajectory {g}, stage {t}",
                    case.name
                );
            }
        }
    }
}
