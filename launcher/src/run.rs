//! `cobre-shm -p N run CASE_DIR`: an upstream Cobre study (the case
//! directory `cobre run` reads) on this job's shm ranks, or as one rank of
//! an MPI job (`--backend mpi` under `mpiexec`); the study itself is
//! crate `cobre-shm-upstream`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use cobre_comm::Communicator;
use cobre_shm::comm::Comm;
use cobre_shm::ShmBackend;
use cobre_shm_upstream::{RunError, RunOptions};

use crate::launch::{launch, LaunchOptions, Program, RankContext};
use crate::log::Verbosity;
use crate::placement::Plan;

/// `cobre-shm run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The case directory (config.json, system/, stages.json, …), as for
    /// cobre-cli's `cobre run`
    pub case_dir: PathBuf,
    /// Output directory [default: CASE_DIR/output]
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// `shared`: train on cobre-shm's engine (stage LPs, opening tree and
    /// cut pool once per node; falls back to upstream's, saying why, for a
    /// study it does not model yet); `upstream`: upstream cobre-sddp's own
    /// training, a copy per rank (the reference)
    #[arg(long, value_enum, default_value_t = EngineArg::Shared)]
    pub engine: EngineArg,
    /// `shm`: fork the ranks here; `mpi`: this process is one MPI rank (run
    /// under `mpiexec`; needs a build with `--features mpi`; every rank
    /// holds its own copy of the shared data); `auto`: mpi when started by
    /// an MPI launcher, else shm
    #[arg(long, value_enum, default_value_t = RunBackend::Auto)]
    pub backend: RunBackend,
}

/// Where the ranks of `run` come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunBackend {
    /// `mpi` under an MPI launcher, `shm` otherwise.
    Auto,
    /// One process per rank, forked by this launcher, shared memory.
    Shm,
    /// This process is one rank of an MPI job (cobre-comm's ferrompi backend).
    Mpi,
}

/// `--engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// cobre-shm's shared engine.
    Shared,
    /// Upstream cobre-sddp's own training.
    Upstream,
}

/// Check what can be checked before starting ranks.
fn check(args: &RunArgs) -> Result<(), String> {
    if !args.case_dir.join("config.json").is_file() {
        return Err(format!(
            "{} is not a Cobre case directory (no config.json in it); give the folder that \
             `cobre run` would take",
            args.case_dir.display()
        ));
    }
    Ok(())
}

/// One shm rank: attach, run the study, map the outcome to an exit code.
fn rank_body(ctx: &RankContext, args: &RunArgs, v: Verbosity) -> i32 {
    let rank = ctx.placement.rank;
    crate::log::init(rank, v);
    let comm = match ShmBackend::attach(&ctx.config) {
        Ok(c) => Comm::Shm(c),
        Err(e) => {
            crate::launch::line(&format!("cobre-shm: rank {rank}: {e}"));
            return 1;
        }
    };
    run_rank(&comm, args, ctx.placement.threads, v)
}

/// One rank of any backend: run the study, map the outcome to an exit code.
fn run_rank(comm: &Comm, args: &RunArgs, threads: usize, v: Verbosity) -> i32 {
    let rank = comm.rank();
    let opts = RunOptions {
        case_dir: args.case_dir.clone(),
        output: args.output.clone(),
        threads,
        quiet: v.quiet,
        backend: comm.backend_name(),
        engine: match args.engine {
            EngineArg::Shared => cobre_shm_upstream::Engine::Shared,
            EngineArg::Upstream => cobre_shm_upstream::Engine::Upstream,
        },
    };
    match cobre_shm_upstream::run_study(comm, &opts) {
        Ok(outcome) => outcome.exit_code(),
        // The failing rank says why; its peers only follow it.
        Err(RunError::Peer { .. }) => {
            settle(comm);
            1
        }
        Err(e) => {
            crate::launch::line(&format!("cobre-shm: rank {rank}: {e}"));
            settle(comm);
            1
        }
    }
}

/// After a failure: one last barrier, so no rank exits before the one that
/// says why has said it (the launcher stops every rank at the first exit,
/// and a follower exiting first had the culprit killed mid-sentence). The
/// barrier fails at once when a peer is gone, and ends in a mismatch when a
/// peer is still in another collective, so it cannot hang.
fn settle(comm: &Comm) {
    let _ = comm.barrier();
}

/// Start the ranks of `plan` on the study of `args`.
///
/// # Errors
/// The case directory is not one, or the launch failed.
pub fn start(
    args: &RunArgs,
    plan: &Plan,
    opts: &LaunchOptions,
    threads_override: Option<usize>,
    v: Verbosity,
    dry_run: bool,
) -> Result<i32, String> {
    check(args)?;
    let mpi = match args.backend {
        RunBackend::Auto => cobre_shm::comm::mpi_launch_detected(),
        RunBackend::Shm => false,
        RunBackend::Mpi => true,
    };
    if dry_run {
        return Ok(0);
    }
    if mpi {
        return run_on_mpi(args, threads_override, v);
    }
    let body = |ctx: &RankContext| rank_body(ctx, args, v);
    launch(plan, &Program::Run(&body), opts)
}

/// `run` as one rank of an MPI job. Rank 0 reads the case and the others
/// receive it, as on shm; a failure there ends every rank through the
/// study's own collectives.
fn run_on_mpi(
    args: &RunArgs,
    threads_override: Option<usize>,
    v: Verbosity,
) -> Result<i32, String> {
    let threads = crate::train::mpi_threads(threads_override);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    crate::limits::check_threads(threads, cpus)?;
    let comm = cobre_shm::comm::create_mpi_communicator().map_err(|e| {
        format!("{e}. Build with `cargo build --release --features mpi` and run under mpiexec")
    })?;
    crate::log::init(comm.rank(), v);
    let code = run_rank(&comm, args, threads, v);
    // Finalise MPI (dropping the communicator) before exiting.
    drop(comm);
    Ok(code)
}
