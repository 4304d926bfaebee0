//! Training an upstream study on cobre-shm's shared engine: the study's
//! stage LPs, opening tree and cut pool live once per node (the trainer of
//! `cobre-shm-sddp`, fed by [`crate::model::UpstreamModel`]), and the result
//! is handed back to upstream's writers and simulator in upstream's own
//! shapes — the policy copied into `setup.fcf` on every rank, a
//! `TrainingResult` and the per-iteration events `cobre run` would have
//! emitted.
#![forbid(unsafe_code)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use cobre_core::TrainingEvent;
use cobre_io::MetadataTrainingSolveStats;
use cobre_sddp::config::ShutdownSource;
use cobre_sddp::setup::NodeId;
use cobre_sddp::CapturedBasis;
use cobre_sddp::{
    ConvergenceMonitor, SolverStatsDelta, SolverStatsLogEntry, SyncResult, TrainingResult,
};
use cobre_shm_sddp::checkpoint::{decode_entries, encode_entry};
use cobre_shm_sddp::model::Phase;
use cobre_shm_sddp::report::{PhaseWork, Policy, TrainReport};
use cobre_shm_sddp::solve::basis::Entry;
use cobre_shm_sddp::{
    CutSelection, EngineComm, EngineError, Hooks, IterationRow, SelectionRule, StopRules,
    TrainOptions,
};
use cobre_solver::Basis;

use crate::model::{CutSelectionMethod, StopMode, StopRule, UpstreamModel, UpstreamTraining};
use crate::share::ShareError;
use crate::study::{Context, Study};
use crate::training::Trained;
use crate::RunError;

/// The trainer's options for `settings` on `threads` worker threads.
///
/// # Errors
/// [`RunError::Invalid`] when the iteration budget does not fit this
/// machine's integers.
fn options(settings: &UpstreamTraining, threads: usize) -> Result<TrainOptions, RunError> {
    let limits: Vec<u64> = settings
        .stopping_rules
        .iter()
        .filter_map(|r| match r {
            StopRule::IterationLimit(n) => Some(*n),
            _ => None,
        })
        .collect();
    // Any rule stops: the smallest limit fires first; all: the limits are
    // the budget, which always stops.
    let limit = match settings.stopping_mode {
        StopMode::Any => limits.iter().copied().min(),
        StopMode::All => None,
    }
    .unwrap_or(settings.max_iterations);
    let iterations = usize::try_from(limit).map_err(|_| {
        RunError::Invalid(format!(
            "an iteration limit of {limit} does not fit this machine"
        ))
    })?;
    let mut stop = StopRules {
        require_all: settings.stopping_mode == StopMode::All,
        ..StopRules::default()
    };
    for rule in &settings.stopping_rules {
        match *rule {
            StopRule::TimeLimit { seconds } => {
                stop.time_limit = Some(Duration::from_secs_f64(seconds.max(0.0)));
            }
            StopRule::BoundStalling {
                iterations,
                tolerance,
            } => {
                stop.stall = Some((tolerance, usize::try_from(iterations).unwrap_or(usize::MAX)));
            }
            StopRule::IterationLimit(_) => {}
        }
    }
    let cut_selection = settings.cut_selection.map_or(
        CutSelection {
            rule: None,
            ..CutSelection::default()
        },
        |c| {
            let (rule, tolerance) = match c.method {
                CutSelectionMethod::Level1 { tie_tolerance } => {
                    (SelectionRule::Level1, tie_tolerance)
                }
                CutSelectionMethod::Lml1 { tie_tolerance } => (SelectionRule::Lml1, tie_tolerance),
                CutSelectionMethod::Dominated { threshold } => {
                    (SelectionRule::Dominated, threshold)
                }
            };
            CutSelection {
                rule: Some(rule),
                every: usize::try_from(c.check_frequency).unwrap_or(usize::MAX),
                tolerance,
            }
        },
    );
    Ok(TrainOptions {
        iterations,
        forward_passes: settings.forward_passes,
        stop,
        threads: threads.max(1),
        replicate: false,
        cut_selection,
        fault: None,
        checkpoint_every: None,
        // Upstream's stage LPs are large enough that unmapping every freed
        // buffer costs more time than it saves memory (allocator.rs).
        release_eagerly: false,
        // `run` writes upstream's policy, not our checkpoint.
        keep_checkpoint: false,
    })
}

/// Collective: rank 0's copy of the policy on every rank (simulation needs
/// it everywhere); one broadcast of the sizes, one of the records and one
/// of the active flags per stage.
fn share_policy<C: EngineComm>(comm: &C, mut policy: Policy) -> Result<Policy, ShareError> {
    if comm.size() == 1 {
        return Ok(policy);
    }
    let fail = |what: &'static str| move |source| ShareError::Comm { what, source };
    let lanes = policy.strides.len();
    let mut sizes: Vec<u64> = policy
        .stages
        .iter()
        .map(|r| r.len() as u64)
        .chain(policy.strides.iter().map(|&s| s as u64))
        .collect();
    comm.broadcast(&mut sizes, 0)
        .map_err(fail("the policy's sizes"))?;
    let mut out = Policy {
        strides: sizes[lanes..].iter().map(|&s| s as usize).collect(),
        stages: Vec::with_capacity(lanes),
        active: Vec::with_capacity(lanes),
    };
    for (t, &len) in sizes[..lanes].iter().enumerate() {
        let len = usize::try_from(len).unwrap_or(0);
        let mut records = if comm.rank() == 0 {
            std::mem::take(&mut policy.stages[t])
        } else {
            vec![0.0; len]
        };
        comm.broadcast(&mut records, 0)
            .map_err(fail("the policy's cuts"))?;
        let cuts = len / out.strides[t].max(1);
        let mut flags: Vec<u8> = if comm.rank() == 0 {
            policy.active[t].iter().map(|&a| u8::from(a)).collect()
        } else {
            vec![0; cuts]
        };
        comm.broadcast(&mut flags, 0)
            .map_err(fail("the policy's active flags"))?;
        out.stages.push(records);
        out.active.push(flags.into_iter().map(|f| f == 1).collect());
    }
    Ok(out)
}

/// Collective: the stored bases of trajectory 0 (rank 0's `bases`) on every
/// rank, as upstream's basis cache — what upstream's simulation starts each
/// stage from after its own training.
fn basis_cache<C: EngineComm>(
    comm: &C,
    bases: &[Entry],
) -> Result<Vec<Option<CapturedBasis>>, ShareError> {
    let fail = |what: &'static str| move |source| ShareError::Comm { what, source };
    let mut bytes: Vec<u8> = bases
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.is_empty())
        .flat_map(|(t, e)| encode_entry(0, u32::try_from(t).unwrap_or(u32::MAX), e))
        .collect();
    let mut len = [bytes.len() as u64];
    comm.broadcast(&mut len, 0)
        .map_err(fail("the stored bases' size"))?;
    bytes.resize(usize::try_from(len[0]).unwrap_or(0), 0);
    comm.broadcast(&mut bytes, 0)
        .map_err(fail("the stored bases"))?;
    let entries = decode_entries(&bytes).map_err(|e| ShareError::Codec {
        what: "the stored bases",
        message: e,
    })?;
    let stages = entries
        .iter()
        .map(|(_, t, _)| *t as usize + 1)
        .max()
        .unwrap_or(0);
    let mut cache: Vec<Option<CapturedBasis>> = vec![None; stages];
    for (_, t, e) in entries {
        let node = i32::try_from(t).map_or(NodeId(i32::MAX), NodeId);
        cache[t as usize] = Some(CapturedBasis {
            basis: Basis {
                col_status: e.cols,
                row_status: e.rows,
            },
            base_row_count: e.structural,
            cut_row_slots: e.slots,
            state_at_capture: Vec::new(),
            node_id: node,
        });
    }
    Ok(cache)
}

/// Put `policy` into upstream's future-cost function, slot for slot (the
/// trainer's slots are upstream's: `(iteration − 1) × M + trajectory`).
fn fill_fcf(setup: &mut cobre_sddp::StudySetup, policy: &Policy) {
    let fcf = &mut setup.fcf;
    fcf.set_iteration_base(1);
    for t in 0..policy.stages.len() {
        let node = i32::try_from(t).map_or(NodeId(i32::MAX), NodeId);
        for cut in policy.cuts(t) {
            fcf.add_cut(
                node,
                t,
                cut.iteration as u64,
                u32::try_from(cut.trajectory).unwrap_or(u32::MAX),
                cut.intercept,
                cut.coefficients,
            );
        }
        for (slot, _) in policy.active[t].iter().enumerate().filter(|(_, &a)| !a) {
            fcf.set_active(t, u32::try_from(slot).unwrap_or(u32::MAX), false);
        }
    }
}

/// Milliseconds of `secs`.
fn ms(secs: f64) -> u64 {
    (secs * 1e3).round().max(0.0) as u64
}

/// The events `cobre run` emits for the rows of `report`, as far as
/// upstream's output builder reads them.
fn events(rows: &[IterationRow], forward_passes: usize, lanes: usize) -> Vec<TrainingEvent> {
    let mut out = Vec::with_capacity(rows.len() * 5);
    let mut before = 0.0;
    for r in rows {
        let k = r.iteration as u64;
        let [fwd, bwd, lb] = r.phase_secs;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        out.push(TrainingEvent::ForwardPassComplete {
            iteration: k,
            scenarios: count(forward_passes),
            ub_mean: r.upper_bound_mean,
            ub_std: r.upper_bound_std,
            elapsed_ms: ms(fwd),
        });
        out.push(TrainingEvent::ForwardSyncComplete {
            iteration: k,
            global_ub_mean: r.upper_bound_mean,
            global_ub_std: r.upper_bound_std,
            sync_time_ms: 0,
        });
        out.push(TrainingEvent::BackwardPassComplete {
            iteration: k,
            rows_generated: count(forward_passes * lanes),
            stages_processed: count(lanes),
            elapsed_ms: ms(bwd),
            state_exchange_time_ms: 0,
            row_batch_build_time_ms: 0,
            setup_time_ms: 0,
            load_imbalance_ms: 0,
            scheduling_overhead_ms: 0,
        });
        out.push(TrainingEvent::PolicySyncComplete {
            iteration: k,
            rows_distributed: count(forward_passes * lanes),
            rows_active: count(r.active_cuts),
            rows_removed: 0,
            sync_time_ms: 0,
        });
        out.push(TrainingEvent::IterationSummary {
            iteration: k,
            lower_bound: r.lower_bound,
            upper_bound: r.upper_bound_mean,
            gap: r.gap,
            wall_time_ms: ms(r.elapsed_secs),
            iteration_time_ms: ms(r.elapsed_secs - before),
            forward_ms: ms(fwd),
            backward_ms: ms(bwd),
            lp_solves: r.lp_solves,
            solve_time_ms: 0.0,
            lower_bound_eval_ms: ms(lb),
            fwd_setup_time_ms: 0,
            fwd_load_imbalance_ms: 0,
            fwd_scheduling_overhead_ms: 0,
            rows_in_lp_sum: 0,
            rows_in_lp_count: 0,
            rows_in_lp_max: 0,
        });
        before = r.elapsed_secs;
    }
    out
}

/// Upstream's result for `rows`: bounds of the last iteration, the stop
/// decision its convergence monitor takes on the same bounds (with the
/// signal shutdown when `stopped`), and the lower-bound history.
fn result(
    study: &Study,
    rows: &[IterationRow],
    forward_passes: usize,
    stopped: bool,
    bases: Vec<Option<CapturedBasis>>,
    phase_work: &[PhaseWork],
) -> TrainingResult {
    let setup = &study.setup;
    let mut monitor = ConvergenceMonitor::with_iteration_budget(
        study.params.stopping_rule_set.clone(),
        setup.loop_params.max_iterations,
    );
    let n = forward_passes as f64;
    let mut decision = None;
    for (i, r) in rows.iter().enumerate() {
        if stopped && i + 1 == rows.len() {
            monitor.set_shutdown(ShutdownSource::Signal);
        }
        decision = Some(monitor.update(
            r.lower_bound,
            &SyncResult {
                global_ub_mean: r.upper_bound_mean,
                global_ub_std: r.upper_bound_std,
                ci_95_half_width: 1.96 * r.upper_bound_std / n.sqrt(),
                sync_time_ms: 0,
            },
            r.elapsed_secs,
        ));
    }
    let last = rows.last().copied().unwrap_or_default();
    let reason = decision
        .as_ref()
        .and_then(|d| d.termination_reason())
        .unwrap_or("iteration_limit")
        .to_string();
    let mut result = TrainingResult::new(
        last.lower_bound,
        last.upper_bound_mean,
        last.upper_bound_std,
        monitor.gap(),
        last.iteration as u64,
        reason,
        ms(last.elapsed_secs).max(1),
        bases,
        solver_log(phase_work),
        None,
        None,
    );
    if let Some(d) = decision {
        result.stop_decision = d;
    }
    result.lower_bound_history = rows.iter().map(|r| r.lower_bound).collect();
    result
}

/// Upstream's per-iteration solver log (`training/solver/iterations.parquet`)
/// from the engine's work per rank and phase. The engine counts per phase,
/// not per stage or opening: those columns stay empty.
fn solver_log(phase_work: &[PhaseWork]) -> Vec<SolverStatsLogEntry> {
    phase_work
        .iter()
        .map(|w| {
            let phase = match w.phase {
                Phase::Forward => "forward",
                Phase::Backward => "backward",
                Phase::LowerBound => "lower_bound",
            };
            let delta = SolverStatsDelta {
                lp_solves: w.solves,
                lp_successes: w.solves,
                first_try_successes: w.solves.saturating_sub(w.retried),
                lp_failures: 0,
                retry_attempts: w.retried,
                basis_offered: w.warm_starts,
                simplex_iterations: w.simplex_iterations,
                solve_time_ms: w.solve_secs * 1e3,
                load_model_count: w.loads,
                load_model_time_ms: w.load_secs * 1e3,
                ..SolverStatsDelta::default()
            };
            let rank = i32::try_from(w.rank).unwrap_or(i32::MAX);
            SolverStatsLogEntry::from_raw(w.iteration as u64, phase, None, -1, rank, -1, delta)
        })
        .collect()
}

/// LP counts of the run as `metadata.json` records them.
fn solve_stats(report: &TrainReport, threads: usize) -> MetadataTrainingSolveStats {
    let solver = &report.work.solver;
    let retried: u64 = solver.recovered.iter().sum();
    let phases = &report.phases;
    MetadataTrainingSolveStats {
        total_lp_solves: Some(solver.solves),
        first_try: Some(solver.solves.saturating_sub(retried)),
        retried: Some(retried),
        failed: Some(0),
        forward_solve_seconds: Some(phases.forward.as_secs_f64()),
        backward_solve_seconds: Some(phases.backward.as_secs_f64()),
        parallelism: Some(u32::try_from(threads.saturating_mul(report.ranks)).unwrap_or(u32::MAX)),
    }
}

/// Train `study` on the shared engine (collective), then write upstream's
/// training outputs on rank 0 — also after a solver failure, so the
/// completed iterations are kept. `stop` is set by SIGTERM/SIGINT.
///
/// # Errors
/// Training failed (after its partial outputs were written), or a write.
pub fn train<C: EngineComm>(
    ctx: &Context<'_, C>,
    study: &mut Study,
    stop: &Arc<AtomicBool>,
) -> Result<Trained, RunError> {
    let settings = UpstreamTraining::new(&study.setup, &study.params)
        .map_err(|u| RunError::Unsupported(u.to_string()))?;
    let opts = options(&settings, ctx.opts.threads)?;
    let started_at = cobre_io::now_iso8601();
    ctx.say(&format!(
        "training on the shared engine: {} rank(s) x {} thread(s), {} backend, {} {}",
        ctx.comm.size(),
        opts.threads,
        ctx.opts.backend,
        cobre_solver::active_solver_name(),
        cobre_solver::active_solver_version()
    ));
    let name = ctx.opts.case_dir.display().to_string();
    let outcome = {
        let model = UpstreamModel::new(name, &study.setup, &study.params)
            .map_err(|u| RunError::Unsupported(u.to_string()))?;
        let quiet = !ctx.root() || ctx.opts.quiet;
        let mut on_iteration = |r: &IterationRow| {
            if !quiet {
                eprintln!(
                    "iteration {}: lower bound {:.6}, upper bound {:.6}, gap {:.2}%, {} ms",
                    r.iteration,
                    r.lower_bound,
                    r.upper_bound_mean,
                    r.gap * 100.0,
                    ms(r.phase_secs.iter().sum())
                );
            }
        };
        cobre_shm_sddp::train(
            ctx.comm,
            &model,
            &opts,
            Hooks {
                on_iteration: &mut on_iteration,
                on_checkpoint: None,
                stop: Some(stop),
                resume: None,
            },
        )
    };
    let (mut report, error) = match outcome {
        Ok(report) => (report, None),
        Err(f) => match (f.partial, f.error) {
            (Some(partial), EngineError::Interrupted { .. }) => (*partial, None),
            (Some(partial), error) => (*partial, Some(error)),
            (None, error) => return Err(RunError::Engine(error)),
        },
    };
    let stopped = stop.load(std::sync::atomic::Ordering::SeqCst);
    // Upstream's simulator reads the policy from every rank's own future-cost
    // function; without a simulation only rank 0 (the writer) needs it.
    let policy = std::mem::take(&mut report.policy);
    if study.setup.simulation_config.n_scenarios > 0 {
        let policy = share_policy(ctx.comm, policy)?;
        fill_fcf(&mut study.setup, &policy);
    } else if ctx.root() {
        fill_fcf(&mut study.setup, &policy);
    }
    let lanes = study.setup.fcf.pools.len().saturating_sub(1);
    let bases = basis_cache(ctx.comm, &report.first_trajectory_bases)?;
    let result = result(
        study,
        &report.rows,
        opts.forward_passes,
        stopped,
        bases,
        &report.phase_work,
    );
    let events = events(&report.rows, opts.forward_passes, lanes);
    let mut output = study.setup.build_training_output(&result, &events);
    output.training_solve_stats = solve_stats(&report, opts.threads);
    let written = if ctx.root() {
        let mut meta = crate::training::output_context(ctx, started_at);
        meta.setup = study.timings.clone();
        meta.production_fit_deviation =
            cobre_sddp::build_deviation_summary(&study.setup.hydro_models.fpha_fit_deviations);
        let extra = crate::training::EngineRecord::shared(&report);
        crate::training::write_outputs(ctx, study, &result, &output, &meta, &extra)
    } else {
        Ok(())
    };
    ctx.in_step(written, "writing the training outputs")?;
    if let Some(e) = error {
        ctx.say(&format!(
            "training failed after {} iterations; the outputs of those are in {}",
            result.iterations,
            ctx.output_dir.display()
        ));
        return Err(RunError::Engine(e));
    }
    ctx.say(&format!(
        "training: {} iterations ({}), lower bound {:.6}, outputs in {}",
        result.iterations,
        result.reason,
        result.final_lb,
        ctx.output_dir.display()
    ));
    Ok(Trained { result })
}
