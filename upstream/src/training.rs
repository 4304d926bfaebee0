//! Training with upstream cobre-sddp on this communicator, and the training
//! outputs `cobre run` writes (rank 0).

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::sync::Arc;

use cobre_comm::{Communicator, ReduceOp};
use cobre_core::TrainingEvent;
use cobre_io::{
    DistributionInfo, HostLayout, MetadataTrainingSolveStats, OutputContext, TrainingOutput,
};
use cobre_sddp::policy::orchestration::{write_checkpoint, CheckpointParams};
use cobre_sddp::TrainingResult;
use cobre_solver::ActiveSolver;

use crate::share::ShareError;
use crate::study::{Context, Study};
use crate::RunError;

/// Which engine trained, and what cobre-shm adds to `training/metadata.json`
/// about it.
pub struct EngineRecord {
    /// `shared` or `upstream`.
    pub engine: &'static str,
    /// Node memory of the training phase (shared engine), as JSON.
    pub memory: Option<serde_json::Value>,
}

impl EngineRecord {
    /// Upstream's own training (a copy of everything per rank).
    #[must_use]
    pub fn upstream() -> Self {
        Self {
            engine: "upstream",
            memory: None,
        }
    }

    /// The shared engine, with the memory `report` measured.
    #[must_use]
    pub fn shared(report: &cobre_shm_sddp::TrainReport) -> Self {
        let sum = |f: fn(&cobre_shm_sddp::report::RankMemory) -> u64| {
            report.memory.iter().map(f).sum::<u64>()
        };
        Self {
            engine: "shared",
            memory: Some(serde_json::json!({
                "node_peak_pss_bytes": report.node_peak_pss,
                "node_pss_bytes": sum(|m| m.pss),
                "node_pss_shared_bytes": sum(|m| m.pss_shmem),
                "node_pss_private_bytes": sum(|m| m.pss_anon),
                "shared_regions": report.regions.iter().map(|r| serde_json::json!({
                    "name": r.name,
                    "bytes": r.bytes,
                    "one_copy_per_node": r.shared,
                    "storage": r.storage,
                })).collect::<Vec<_>>(),
            })),
        }
    }
}

/// Add `record` to the `metadata.json` upstream's writer left at `path`:
/// `"engine"` and, when measured, `"cobre_shm": {"training_memory": …}`.
///
/// # Errors
/// When the file cannot be read back or rewritten.
fn add_engine_record(path: &std::path::Path, record: &EngineRecord) -> Result<(), RunError> {
    let metadata = cobre_io::read_training_metadata(path)
        .map_err(|e| crate::metadata::cannot_add(path, &e.to_string()))?;
    let mut extra = serde_json::Map::new();
    extra.insert("engine".into(), record.engine.into());
    if let Some(m) = &record.memory {
        extra.insert(
            "cobre_shm".into(),
            serde_json::json!({ "training_memory": m }),
        );
    }
    crate::metadata::rewrite_with(path, &metadata, &extra)
}

/// What training left for the next phase.
pub struct Trained {
    /// Upstream's result (cuts stay in the study's setup).
    pub result: TrainingResult,
}

/// Upstream's execution record for `metadata.json`, with this job's backend.
pub fn distribution<C: Communicator>(ctx: &Context<'_, C>) -> DistributionInfo {
    let size = u32::try_from(ctx.comm.size()).unwrap_or(u32::MAX);
    DistributionInfo {
        backend: ctx.opts.backend.to_string(),
        world_size: size,
        ranks_participated: size,
        num_hosts: 1,
        threads_per_rank: u32::try_from(ctx.opts.threads).unwrap_or(u32::MAX),
        mpi_library: None,
        mpi_standard: None,
        thread_level: None,
        slurm_job_id: std::env::var("SLURM_JOB_ID").ok(),
        hosts: vec![HostLayout {
            hostname: ctx.hostname.clone(),
            ranks: (0..size).collect(),
        }],
    }
}

/// The metadata context of a phase that started at `started_at`.
pub(crate) fn output_context<C: Communicator>(
    ctx: &Context<'_, C>,
    started_at: String,
) -> OutputContext {
    OutputContext {
        hostname: ctx.hostname.clone(),
        solver: cobre_solver::active_solver_metadata_id().to_string(),
        solver_version: Some(cobre_solver::active_solver_version()),
        started_at,
        completed_at: cobre_io::now_iso8601(),
        distribution: distribution(ctx),
        setup: None,
        production_fit_deviation: None,
    }
}

/// Rank 0 prints one line per iteration unless quiet; every rank keeps the
/// events (upstream builds its convergence table from them).
fn progress_thread(
    rx: mpsc::Receiver<TrainingEvent>,
    print: bool,
) -> std::thread::JoinHandle<Vec<TrainingEvent>> {
    std::thread::spawn(move || {
        let mut events = Vec::new();
        for e in rx {
            if let (
                true,
                TrainingEvent::IterationSummary {
                    iteration,
                    lower_bound,
                    upper_bound,
                    gap,
                    iteration_time_ms,
                    ..
                },
            ) = (print, &e)
            {
                eprintln!(
                    "iteration {iteration}: lower bound {lower_bound:.6}, upper bound \
                     {upper_bound:.6}, gap {:.2}%, {iteration_time_ms} ms",
                    gap * 100.0
                );
            }
            events.push(e);
        }
        events
    })
}

/// Train (collective), then write the training outputs on rank 0 — also
/// after a solver failure, so the completed iterations are kept.
///
/// # Errors
/// Training failed (after its partial outputs were written), or a write.
pub fn train<C: Communicator>(
    ctx: &Context<'_, C>,
    study: &mut Study,
    stop: &Arc<AtomicUsize>,
) -> Result<Trained, RunError> {
    study
        .setup
        .enable_periodic_checkpoints(&study.system, &ctx.output_dir);
    let started_at = cobre_io::now_iso8601();
    let mut solver = ActiveSolver::new()?;
    let (tx, rx) = mpsc::channel();
    let progress = progress_thread(rx, ctx.root() && !ctx.opts.quiet);
    ctx.say(&format!(
        "training on {} rank(s) x {} thread(s), {} backend, {} {}",
        ctx.comm.size(),
        ctx.opts.threads,
        ctx.opts.backend,
        cobre_solver::active_solver_name(),
        cobre_solver::active_solver_version()
    ));
    let outcome = study.setup.train(
        &mut solver,
        ctx.comm,
        ctx.opts.threads,
        ActiveSolver::new,
        Some(tx),
        Some(stop),
    );
    let events = progress.join().unwrap_or_default();
    let outcome = outcome?;
    let mut output = study.setup.build_training_output(&outcome.result, &events);
    output.training_solve_stats = solve_stats(ctx, &outcome.result, &output)?;
    let written = if ctx.root() {
        let mut meta = output_context(ctx, started_at);
        meta.setup = study.timings.clone();
        meta.production_fit_deviation =
            cobre_sddp::build_deviation_summary(&study.setup.hydro_models.fpha_fit_deviations);
        write_outputs(
            ctx,
            study,
            &outcome.result,
            &output,
            &meta,
            &EngineRecord::upstream(),
        )
    } else {
        Ok(())
    };
    ctx.in_step(written, "writing the training outputs")?;
    if let Some(e) = outcome.error {
        ctx.say(&format!(
            "training failed after {} iterations; the outputs of those are in {}",
            outcome.result.iterations,
            ctx.output_dir.display()
        ));
        return Err(RunError::Sddp(e));
    }
    ctx.say(&format!(
        "training: {} iterations ({}), lower bound {:.6}, outputs in {}",
        outcome.result.iterations,
        outcome.result.reason,
        outcome.result.final_lb,
        ctx.output_dir.display()
    ));
    Ok(Trained {
        result: outcome.result,
    })
}

/// LP counts and solve times summed over the ranks (collective), as
/// `cobre run` records them in `metadata.json`.
fn solve_stats<C: Communicator>(
    ctx: &Context<'_, C>,
    result: &TrainingResult,
    output: &TrainingOutput,
) -> Result<MetadataTrainingSolveStats, RunError> {
    let comm = ctx.comm;
    let lp_solves: u64 = output
        .convergence_records
        .iter()
        .map(|r| u64::from(r.lp_solves))
        .sum();
    let rank = u32::try_from(comm.rank()).ok();
    let (first_try, retried, failed, forward_s, backward_s) =
        cobre_sddp::aggregate_solver_stats_log(&result.solver_stats_log, rank);
    let mut counts = [0u64; 4];
    comm.allreduce(
        &[lp_solves, first_try, retried, failed],
        &mut counts,
        ReduceOp::Sum,
    )
    .map_err(|source| ShareError::Comm {
        what: "training solver counts",
        source,
    })?;
    let mut secs = [0.0f64; 2];
    comm.allreduce(&[forward_s, backward_s], &mut secs, ReduceOp::Sum)
        .map_err(|source| ShareError::Comm {
            what: "training solve times",
            source,
        })?;
    let parallelism =
        u32::try_from(ctx.opts.threads.saturating_mul(comm.size())).unwrap_or(u32::MAX);
    Ok(MetadataTrainingSolveStats {
        total_lp_solves: Some(counts[0]),
        first_try: Some(counts[1]),
        retried: Some(counts[2]),
        failed: Some(counts[3]),
        forward_solve_seconds: Some(secs[0]),
        backward_solve_seconds: Some(secs[1]),
        parallelism: Some(parallelism),
    })
}

/// Rank 0: the policy checkpoint and every training file `cobre run` writes,
/// `metadata.json` with the engine recorded.
pub(crate) fn write_outputs<C: Communicator>(
    ctx: &Context<'_, C>,
    study: &Study,
    result: &TrainingResult,
    output: &TrainingOutput,
    meta: &OutputContext,
    engine: &EngineRecord,
) -> Result<(), RunError> {
    let (out, setup, system, config) =
        (&ctx.output_dir, &study.setup, &study.system, &study.config);
    write_checkpoint(
        &out.join(&setup.policy_path),
        setup,
        system,
        result,
        &CheckpointParams {
            max_iterations: setup.loop_params.max_iterations,
            forward_passes: setup.loop_params.forward_passes,
            seed: setup.loop_params.seed,
            export_states: config.exports.states,
        },
    )?;
    cobre_io::write_training_results(out, output, system, config, meta)?;
    add_engine_record(&out.join("training").join("metadata.json"), engine)?;
    let models = &setup.hydro_models;
    if !models.fpha_export_rows.is_empty() {
        cobre_io::write_fpha_hyperplanes(
            &out.join(cobre_io::FPHA_HYPERPLANES_FILE),
            &models.fpha_export_rows,
        )?;
    }
    let evaporation = cobre_sddp::build_evaporation_model_rows(models, system);
    if !evaporation.is_empty() {
        cobre_io::write_evaporation_models(
            &out.join(cobre_io::EVAPORATION_MODELS_FILE),
            &evaporation,
        )?;
    }
    if config.exports.fpha_deviation_points && !models.fpha_deviation_point_rows.is_empty() {
        cobre_io::write_fpha_deviation_points(
            &out.join(cobre_io::FPHA_DEVIATION_POINTS_FILE),
            &models.fpha_deviation_point_rows,
        )?;
    }
    if !system.generic_constraints().is_empty() {
        let rows = cobre_sddp::build_generic_constraint_echo_rows(setup, system);
        cobre_io::write_generic_constraint_echo(
            &out.join(cobre_io::GENERIC_CONSTRAINT_ECHO_FILE),
            &rows,
        )?;
    }
    let fixed = cobre_sddp::build_fixed_delivery_rows(setup, system);
    cobre_io::write_fixed_delivery(out, &fixed)?;
    if !result.solver_stats_log.is_empty() {
        let rows = cobre_sddp::solver_stats_log_to_rows(&result.solver_stats_log);
        cobre_io::write_solver_stats(out, &rows)?;
    }
    if !output.cut_selection_records.is_empty() {
        cobre_io::write_row_selection_records(out, &output.cut_selection_records)?;
    }
    cobre_io::write_success_marker(&out.join("training"))?;
    Ok(())
}
