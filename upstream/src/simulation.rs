//! Simulation of the trained policy: every rank simulates its share of the
//! scenarios and streams its own Parquet partitions; rank 0 writes the merged
//! metadata, solver statistics, paths and scenario summary.

use std::sync::mpsc;

use cobre_comm::{Communicator, ReduceOp};
use cobre_io::output::simulation_writer::{
    ScenarioWritePayload, SimulationParquetWriter, SimulationPathRecord,
};
use cobre_io::{MetadataCost, MetadataSimulationSolveStats, SimulationOutput};
use cobre_sddp::{SimulationWeighting, SolverStatsDelta, TrainingResult};
use cobre_solver::ActiveSolver;

use crate::share;
use crate::study::{Context, Study};
use crate::training::output_context;
use crate::RunError;

/// Simulate (collective) and write the simulation outputs on rank 0.
///
/// # Errors
/// Simulation or a write failed on some rank.
pub fn simulate<C: Communicator>(
    ctx: &Context<'_, C>,
    study: &mut Study,
    trained: &TrainingResult,
) -> Result<(), RunError> {
    let comm = ctx.comm;
    let setup = &study.setup;
    let n_scenarios = setup.simulation_config.n_scenarios;
    ctx.say(&format!("simulating {n_scenarios} scenarios"));
    let mut pool = setup.create_workspace_pool(comm, ctx.opts.threads, ActiveSolver::new)?;
    let capacity = setup.simulation_config().io_channel_capacity.max(1);
    let (tx, rx) = mpsc::sync_channel(capacity);
    let mut writer = SimulationParquetWriter::new(&ctx.output_dir, &study.system)?;
    // Scenario results are written while later scenarios are solved.
    let drain = std::thread::spawn(move || {
        let mut failed = 0u32;
        for scenario in rx {
            if let Err(e) = writer.write_scenario(ScenarioWritePayload::from(scenario)) {
                tracing::error!("simulation write error: {e}");
                failed = failed.saturating_add(1);
            }
        }
        (writer, failed)
    });
    let started_at = cobre_io::now_iso8601();
    let start = std::time::Instant::now();
    let simulated = setup.simulate(
        &mut pool.workspaces,
        comm,
        &tx,
        None,
        trained.frozen_templates.as_deref(),
        &trained.basis_cache,
    );
    drop(tx);
    let drained = drain.join();
    let local: Result<_, RunError> = match (simulated, drained) {
        (Ok(run), Ok(w)) => Ok((run, w)),
        (Err(e), _) => Err(RunError::Simulation(e)),
        (Ok(_), Err(_)) => Err(RunError::WriterPanicked),
    };
    let (run, (writer, write_failures)) = ctx.in_step(local, "simulating")?;
    // Measured while the simulation's workspaces still exist.
    let memory = crate::metadata::node_memory(comm)?;
    let elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let paths: Vec<SimulationPathRecord> = writer.path_rows().to_vec();
    let mut local_output = writer.finalize(elapsed_ms);
    local_output.failed = write_failures;

    let mut merged = merge_counts(comm, &local_output)?;
    let (total, per_scenario) = solver_stats(comm, &run.solver_stats)?;
    let paths = gather_paths(comm, &paths)?;
    let weighting = match run.census_weights.as_deref() {
        Some(weights) => SimulationWeighting::Census { weights },
        None => SimulationWeighting::Uniform,
    };
    let (costs, scenario_costs) =
        cobre_sddp::aggregate_simulation(&run.costs, setup.simulation_config(), comm, weighting)?;
    let parallelism =
        u32::try_from(ctx.opts.threads.saturating_mul(comm.size())).unwrap_or(u32::MAX);
    merged.cost = Some(MetadataCost {
        mean_cost: costs.mean_cost,
        std_cost: costs.std_cost,
    });
    merged.solve_stats = MetadataSimulationSolveStats {
        total_lp_solves: Some(total.lp_solves),
        first_try: Some(total.first_try_successes),
        retried: Some(total.lp_successes.saturating_sub(total.first_try_successes)),
        failed: Some(total.lp_failures),
        solve_seconds: Some(total.solve_time_ms / 1000.0),
        parallelism: Some(parallelism),
    };
    ctx.say(&format!(
        "simulation: {} scenarios, mean cost {:.6}, std {:.6}",
        merged.completed, costs.mean_cost, costs.std_cost
    ));
    let written = if ctx.root() {
        let meta = output_context(ctx, started_at);
        let results = Results {
            merged: &merged,
            per_scenario: &per_scenario,
            paths: &paths,
            scenario_costs: &scenario_costs,
            memory,
        };
        write_outputs(ctx, &results, &meta)
    } else {
        Ok(())
    };
    ctx.in_step(written, "writing the simulation outputs")
}

/// Scenario counts summed and the wall time maximised over the ranks.
fn merge_counts<C: Communicator>(
    comm: &C,
    local: &SimulationOutput,
) -> Result<SimulationOutput, RunError> {
    let mut counts = [0u32; 3];
    comm.allreduce(
        &[local.n_scenarios, local.completed, local.failed],
        &mut counts,
        ReduceOp::Sum,
    )
    .map_err(|source| share::ShareError::Comm {
        what: "simulation counts",
        source,
    })?;
    let mut time = [0u64];
    comm.allreduce(&[local.total_time_ms], &mut time, ReduceOp::Max)
        .map_err(|source| share::ShareError::Comm {
            what: "simulation time",
            source,
        })?;
    Ok(SimulationOutput {
        n_scenarios: counts[0],
        completed: counts[1],
        failed: counts[2],
        total_time_ms: time[0],
        cost: None,
        solve_stats: MetadataSimulationSolveStats::default(),
    })
}

/// Solver statistics over all ranks: the total and one row per scenario.
fn solver_stats<C: Communicator>(
    comm: &C,
    local: &[(u32, i32, SolverStatsDelta)],
) -> Result<(SolverStatsDelta, Vec<(u32, SolverStatsDelta)>), RunError> {
    let mine = SolverStatsDelta::aggregate(local.iter().map(|(_, _, d)| d));
    let packed = cobre_sddp::pack_delta_scalars(&mine);
    let mut total = [0.0f64; cobre_sddp::SOLVER_STATS_DELTA_SCALAR_FIELDS];
    comm.allreduce(&packed, &mut total, ReduceOp::Sum)
        .map_err(|source| share::ShareError::Comm {
            what: "simulation solver statistics",
            source,
        })?;
    let rows: Vec<(u32, SolverStatsDelta)> =
        local.iter().map(|(id, _, d)| (*id, d.clone())).collect();
    let all = share::gather_all(
        comm,
        &cobre_sddp::pack_scenario_stats(&rows),
        "per-scenario solver statistics",
    )?;
    let mut per_scenario = cobre_sddp::unpack_scenario_stats(&all);
    per_scenario.sort_by_key(|(id, _)| *id);
    Ok((cobre_sddp::unpack_delta_scalars(&total), per_scenario))
}

/// Every rank's scenario paths, in rank order.
fn gather_paths<C: Communicator>(
    comm: &C,
    local: &[SimulationPathRecord],
) -> Result<Vec<SimulationPathRecord>, RunError> {
    let flat: Vec<i32> = local
        .iter()
        .flat_map(|r| [r.scenario_id, r.stage_id, r.node_id])
        .collect();
    let all = share::gather_all(comm, &flat, "simulation paths")?;
    Ok(all
        .chunks_exact(3)
        .map(|c| SimulationPathRecord {
            scenario_id: c[0],
            stage_id: c[1],
            node_id: c[2],
        })
        .collect())
}

/// What a simulation produced, merged over the ranks.
struct Results<'a> {
    merged: &'a SimulationOutput,
    per_scenario: &'a [(u32, SolverStatsDelta)],
    paths: &'a [SimulationPathRecord],
    scenario_costs: &'a [(u32, f64, Option<f64>)],
    /// Node memory at the end of the simulation.
    memory: serde_json::Value,
}

/// Rank 0: the simulation files `cobre run` writes.
fn write_outputs<C: Communicator>(
    ctx: &Context<'_, C>,
    results: &Results<'_>,
    meta: &cobre_io::OutputContext,
) -> Result<(), RunError> {
    let Results {
        merged,
        per_scenario,
        paths,
        scenario_costs,
        memory,
    } = results;
    let out = &ctx.output_dir;
    cobre_io::write_simulation_results(out, merged, meta)?;
    add_memory(out, memory.clone())?;
    if !per_scenario.is_empty() {
        let rows: Vec<cobre_io::SolverStatsRow> = per_scenario
            .iter()
            .map(|(id, delta)| {
                cobre_sddp::delta_to_stats_row(
                    None,
                    i32::try_from(*id).ok(),
                    "simulation",
                    None,
                    None,
                    None,
                    None,
                    delta,
                )
            })
            .collect();
        cobre_io::write_simulation_solver_stats(out, &rows)?;
    }
    cobre_io::output::simulation_writer::write_paths(out, paths.to_vec())?;
    let summary: Vec<(u32, Option<f64>, f64)> = scenario_costs
        .iter()
        .map(|&(id, cost, probability)| (id, probability, cost))
        .collect();
    cobre_io::output::simulation_writer::write_scenario_summary(out, &summary)?;
    cobre_io::write_success_marker(&out.join("simulation"))?;
    Ok(())
}

/// Add the simulation phase's node memory to `simulation/metadata.json`
/// (`"cobre_shm": {"simulation_memory": …}`).
fn add_memory(out: &std::path::Path, memory: serde_json::Value) -> Result<(), RunError> {
    let path = out.join("simulation").join("metadata.json");
    let metadata = cobre_io::read_simulation_metadata(&path)
        .map_err(|e| crate::metadata::cannot_add(&path, &e.to_string()))?;
    let mut extra = serde_json::Map::new();
    extra.insert(
        "cobre_shm".into(),
        serde_json::json!({ "simulation_memory": memory }),
    );
    crate::metadata::rewrite_with(&path, &metadata, &extra)
}

/// Rank 0: the record of a simulation skipped after a stop request.
///
/// # Errors
/// A write failed.
pub fn write_skipped<C: Communicator>(
    ctx: &Context<'_, C>,
    n_scenarios: u32,
) -> Result<(), RunError> {
    let local = if ctx.root() {
        let meta = output_context(ctx, cobre_io::now_iso8601());
        cobre_io::write_skipped_simulation_results(&ctx.output_dir, n_scenarios, &meta)
            .and_then(|()| cobre_io::write_success_marker(&ctx.output_dir.join("simulation")))
            .map_err(RunError::from)
    } else {
        Ok(())
    };
    ctx.in_step(local, "writing the skipped-simulation record")
}
