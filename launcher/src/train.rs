//! `cobre-shm train`: validate the case before any rank exists, then run the
//! SDDP engine inside every forked rank (no exec), or in this process for
//! `--backend local`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cobre_comm::Communicator;
use cobre_shm::{Comm, ShmBackend};
use cobre_shm_layout::DEFAULT_STAGING_BYTES;
use cobre_shm_sddp::checkpoint::{self, Identity};
use cobre_shm_sddp::hydrothermal::{case::Case, HydroThermal};
use cobre_shm_sddp::solve::workspace::Fault;
use cobre_shm_sddp::{
    output, train, CutSelection, EngineComm, EngineError, Hooks, IterationRow, Model, TrainOptions,
    TrainReport,
};

use crate::launch::{launch, LaunchOptions, Program, RankContext};
use crate::log::Verbosity;
use crate::placement::Plan;

/// Command-line overrides of the case's training defaults.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Case file (JSON); without it, the bundled three-stage tutorial
    pub case: Option<PathBuf>,
    /// Output directory [default: ./output/<case name>]
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Iteration limit
    #[arg(long, value_name = "K")]
    pub iterations: Option<usize>,
    /// Forward passes per iteration
    #[arg(long, value_name = "M")]
    pub forward_passes: Option<usize>,
    /// Sampling seed
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Wall-clock limit in seconds
    #[arg(long, value_name = "SECS", value_parser = |v: &str| cobre_shm::config::parse_secs("--time-limit", v))]
    pub time_limit: Option<Duration>,
    /// Keep a private copy of the opening tree and cut pool in every rank
    /// (to measure what sharing saves)
    #[arg(long)]
    pub replicate: bool,
    /// Which cuts each stage LP loads: `level1` (cuts within 1e-10 of the
    /// best at some recently visited trial point), `lml1` (only the oldest
    /// such cut), `dominated`, or `none` (every cut); the newest cuts are
    /// always loaded
    #[arg(long, value_name = "RULE", default_value = "level1")]
    pub cut_selection: CutSelection,
    /// Write a checkpoint (with the results so far) into the output
    /// directory every N iterations; 0: only at the end
    #[arg(long, value_name = "N", default_value_t = TrainOptions::DEFAULT_CHECKPOINT_EVERY)]
    pub checkpoint_every: usize,
    /// Continue the study whose outputs (with their checkpoint) are in DIR,
    /// or from a checkpoint file (e.g. DIR/checkpoint.previous.bin); give
    /// --iterations the new total. Any ranks × threads split works
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
    /// Make solves fail, for tests of the recovery ladder:
    /// `stage=S,iteration=I,rungs=R` (the first R rungs of every solve of
    /// stage S in iteration I fail)
    #[arg(long, value_name = "SPEC", hide = true)]
    pub inject_solver_fault: Option<Fault>,
    /// `shm`: fork the ranks here; `local`: train in this process; `mpi`:
    /// this process is one MPI rank (run under `mpiexec`; needs a build with
    /// `--features mpi`); `auto`: mpi when started by an MPI launcher, else shm
    #[arg(long, value_enum, default_value_t = TrainBackend::Auto)]
    pub backend: TrainBackend,
}

/// Where the ranks come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainBackend {
    /// `mpi` under an MPI launcher, `shm` otherwise.
    Auto,
    /// One process per rank, forked by this launcher, shared memory.
    Shm,
    /// This process alone.
    Local,
    /// This process is one rank of an MPI job (cobre-comm's ferrompi backend).
    Mpi,
}

/// Worker threads of an MPI rank: `--threads`, else `RAYON_NUM_THREADS`,
/// else this machine's CPUs divided among the MPI ranks on it.
pub fn mpi_threads(threads_override: Option<usize>) -> usize {
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    threads_override
        .or_else(|| env("RAYON_NUM_THREADS"))
        .unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            let local = env("OMPI_COMM_WORLD_LOCAL_SIZE")
                .or_else(|| env("MPI_LOCALNRANKS"))
                .unwrap_or(1);
            (cpus / local).max(1)
        })
}

/// Load (or take the bundled) case and resolve the options; every check that
/// can fail happens here, before any rank exists: the sizes the run will
/// hold against this machine's memory and `/dev/shm`, and where its outputs
/// go. `copies` is how many copies of the shared data the run keeps (1 under
/// shm, one per rank with `--replicate` or MPI); `workers` the threads of
/// the whole node; `staging` the size of each of the job's two staging
/// buffers, which live in `/dev/shm` beside the data, and a smaller one to
/// take instead when the data does not fit beside the first (0: none).
fn prepare(
    args: &TrainArgs,
    threads: usize,
    copies: usize,
    workers: usize,
    staging: (usize, Option<usize>),
) -> Result<Prepared, String> {
    let case = match &args.case {
        Some(p) => Case::load(&p.to_string_lossy()).map_err(|e| e.to_string())?,
        None => Case::parse(
            cobre_shm_sddp::hydrothermal::case::TUTORIAL_CASE,
            "bundled tutorial",
            "hydro_thermal_tutorial",
        )
        .map_err(|e| e.to_string())?,
    };
    let (mut opts, mut seed) = cobre_shm_sddp::hydrothermal::options(&case, threads);
    let positive = |v: Option<usize>, name: &str| match v {
        Some(0) => Err(format!("--{name} must be at least 1")),
        other => Ok(other),
    };
    if let Some(k) = positive(args.iterations, "iterations")? {
        opts.iterations = k;
    }
    if let Some(m) = positive(args.forward_passes, "forward-passes")? {
        opts.forward_passes = m;
    }
    if let Some(s) = args.seed {
        seed = s;
    }
    if let Some(t) = args.time_limit {
        opts.stop.time_limit = Some(t);
    }
    opts.replicate = args.replicate;
    opts.cut_selection = args.cut_selection;
    opts.fault = args.inject_solver_fault;
    opts.checkpoint_every = (args.checkpoint_every > 0).then_some(args.checkpoint_every);
    let model = HydroThermal::new(&case, seed);
    let sizes = cobre_shm_sddp::sizes(&model, &opts).map_err(|e| e.to_string())?;
    let fits = |bytes: usize| {
        let both = (bytes as u64).saturating_mul(2);
        crate::limits::check_memory(&sizes, copies, workers, opts.replicate, both)
    };
    let staging_bytes = match (fits(staging.0), staging.1) {
        (Ok(()), _) => staging.0,
        (Err(_), Some(smaller)) => fits(smaller).map(|()| smaller)?,
        (Err(e), None) => return Err(e),
    };
    let dir = args.output.clone().unwrap_or_else(|| {
        Path::new("output").join(cobre_shm_sddp::atomic_dir::safe_dir_name(&case.name))
    });
    cobre_shm_sddp::atomic_dir::check_writable(&dir).map_err(|e| e.to_string())?;
    let resume = match &args.resume {
        Some(from) => Some(
            checkpoint::read(
                &checkpoint::locate(from),
                Identity {
                    model: model.fingerprint(),
                    seed: model.seed(),
                    options: checkpoint::options_fingerprint(&opts),
                },
                opts.iterations,
            )
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    drop(model);
    Ok(Prepared {
        case,
        seed,
        opts,
        dir,
        resume,
        staging_bytes,
    })
}

/// Everything a rank needs, checked before any rank exists.
struct Prepared {
    case: Case,
    /// Sampling seed.
    seed: u64,
    opts: TrainOptions,
    dir: PathBuf,
    resume: Option<checkpoint::State>,
    /// Size of each staging buffer the run was checked with.
    staging_bytes: usize,
}

fn progress(row: &IterationRow, total: usize, tty: bool) {
    let line = format!(
        "iteration {:>4}/{total}  lower {:.6e}  upper {:.6e} ± {:.2e}  gap {:>7.3}%  {:.1}s",
        row.iteration,
        row.lower_bound,
        row.upper_bound_mean,
        row.upper_bound_ci95,
        100.0 * row.gap,
        row.elapsed_secs
    );
    if tty {
        let width = 24;
        let done = (row.iteration * width / total.max(1)).min(width);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {line}",
            "#".repeat(done),
            ".".repeat(width - done)
        );
        let _ = err.flush();
    } else {
        tracing::info!("{line}");
    }
}

/// Signal flags of a rank: SIGTERM (a batch scheduler's time limit) and
/// SIGINT ask training to stop at the next phase boundary with a final
/// checkpoint.
struct StopFlags {
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    any: Arc<AtomicBool>,
}

impl StopFlags {
    fn install() -> Self {
        let f = Self {
            term: Arc::new(AtomicBool::new(false)),
            int: Arc::new(AtomicBool::new(false)),
            any: Arc::new(AtomicBool::new(false)),
        };
        for (sig, flag) in [
            (signal_hook::consts::SIGTERM, &f.term),
            (signal_hook::consts::SIGINT, &f.int),
        ] {
            let _ = signal_hook::flag::register(sig, Arc::clone(flag));
            let _ = signal_hook::flag::register(sig, Arc::clone(&f.any));
        }
        f
    }

    /// The exit code of a rank stopped on request: 128 + the signal.
    fn code(&self) -> i32 {
        if self.term.load(Ordering::Relaxed) {
            128 + signal_hook::consts::SIGTERM
        } else {
            128 + signal_hook::consts::SIGINT
        }
    }
}

/// Train on `comm`; rank 0 writes the outputs (and every checkpoint).
/// Returns the exit code.
/// `threads` overrides the prepared thread count (a rank's share of its
/// node); the case and checkpoint are borrowed, so forked ranks share the
/// launcher's copy instead of each making its own.
fn train_rank<C: EngineComm>(comm: &C, p: &Prepared, threads: usize, v: Verbosity) -> i32 {
    let Prepared {
        case, dir, resume, ..
    } = p;
    let model = HydroThermal::new(case, p.seed);
    let opts = &TrainOptions {
        threads,
        ..p.opts.clone()
    };
    let rank = comm.rank();
    let tty = std::io::stderr().is_terminal();
    if rank == 0 {
        tracing::info!(
            "training {}: {} stages, {} hydros, {} thermals; {} rank(s) x {} thread(s) on the {} backend; {} iterations x {} forward passes",
            case.name,
            case.stages,
            case.hydros.len(),
            case.thermals.len(),
            comm.size(),
            opts.threads,
            comm.backend_name(),
            opts.iterations,
            opts.forward_passes
        );
    }
    let flags = StopFlags::install();
    let mut on_iteration = |row: &IterationRow| {
        if !v.quiet {
            progress(row, opts.iterations, tty);
        }
    };
    let mut on_checkpoint = |report: &TrainReport| {
        if let Err(e) = output::write_all(dir, &model, report) {
            crate::launch::line(&format!("cobre-shm: checkpoint not written: {e}"));
        }
    };
    let result = train(
        comm,
        &model,
        opts,
        Hooks {
            on_iteration: &mut on_iteration,
            on_checkpoint: Some(&mut on_checkpoint),
            stop: Some(&flags.any),
            resume: resume.as_ref(),
        },
    );
    if rank == 0 && tty && !v.quiet {
        eprintln!();
    }
    match result {
        Ok(report) => {
            if rank != 0 {
                return 0;
            }
            if let Err(e) = output::write_all(dir, &model, &report) {
                crate::launch::line(&format!("cobre-shm: {e}"));
                return 1;
            }
            if !v.quiet {
                println!("{}", summary_line(case, &report, dir));
            }
            0
        }
        Err(failure) => {
            let stopped = matches!(failure.error, EngineError::Interrupted { .. });
            if !stopped || rank == 0 {
                crate::launch::line(&format!(
                    "cobre-shm: rank {rank}: training {}: {failure}",
                    if stopped { "stopped" } else { "failed" }
                ));
            }
            if let (0, Some(report)) = (rank, &failure.partial) {
                match output::write_all(dir, &model, report) {
                    Ok(()) => crate::launch::line(&format!(
                        "cobre-shm: the {done} completed iteration(s), every cut published so far \
                         and a checkpoint are in {dir} (continue with --resume {dir})",
                        done = report.rows.len(),
                        dir = dir.display()
                    )),
                    Err(e) => crate::launch::line(&format!("cobre-shm: {e}")),
                }
            }
            if stopped {
                flags.code()
            } else {
                1
            }
        }
    }
}

fn summary_line(case: &Case, report: &TrainReport, dir: &Path) -> String {
    match report.rows.last() {
        Some(last) => format!(
            "{}: {} iterations ({}), lower bound {}, upper bound {} ± {}, {} rank(s) x {} thread(s), {:.2}s; outputs in {}",
            case.name,
            report.rows.len(),
            report.stop.as_str(),
            last.lower_bound,
            last.upper_bound_mean,
            last.upper_bound_ci95,
            report.ranks,
            report.threads,
            last.elapsed_secs,
            dir.display()
        ),
        None => format!("{}: no iteration completed; outputs in {}", case.name, dir.display()),
    }
}

/// [`prepare`] for a shm launch, whose two staging buffers live in
/// `/dev/shm` beside the run's data: when the larger buffers chosen for an
/// oversubscribed job leave the data too little room but the default ones
/// do not, the launch takes the default ones (and says so).
fn prepare_with_staging(
    args: &TrainArgs,
    copies: usize,
    workers: usize,
    launch_opts: &mut LaunchOptions,
    v: Verbosity,
) -> Result<Prepared, String> {
    let chosen = launch_opts.staging_bytes;
    let smaller = (launch_opts.staging_automatic && chosen > DEFAULT_STAGING_BYTES)
        .then_some(DEFAULT_STAGING_BYTES);
    let prepared = prepare(args, 1, copies, workers, (chosen, smaller))?;
    if prepared.staging_bytes != chosen {
        if !v.quiet {
            crate::launch::line(&format!(
                "cobre-shm: staging buffers of {} KiB instead of {} KiB, to leave /dev/shm to \
                 the run's data",
                prepared.staging_bytes >> 10,
                chosen >> 10
            ));
        }
        launch_opts.staging_bytes = prepared.staging_bytes;
    }
    Ok(prepared)
}

/// `cobre-shm train`.
///
/// # Errors
/// A message for problems found before any rank starts.
pub fn start(
    args: &TrainArgs,
    plan: &Plan,
    launch_opts: &LaunchOptions,
    threads_override: Option<usize>,
    v: Verbosity,
    dry_run: bool,
) -> Result<i32, String> {
    let backend = match args.backend {
        TrainBackend::Auto if cobre_shm::comm::mpi_launch_detected() => TrainBackend::Mpi,
        TrainBackend::Auto => TrainBackend::Shm,
        other => other,
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    match backend {
        TrainBackend::Local => {
            let threads = threads_override.unwrap_or(cpus);
            crate::limits::check_threads(threads, cpus)?;
            let prepared = prepare(args, threads, 1, threads, (0, None))?;
            if dry_run {
                return Ok(0);
            }
            crate::log::init(0, v);
            Ok(train_rank(
                &Comm::Local(cobre_comm::LocalBackend),
                &prepared,
                prepared.opts.threads,
                v,
            ))
        }
        TrainBackend::Mpi => train_on_mpi(args, threads_override, cpus, v, dry_run),
        TrainBackend::Shm | TrainBackend::Auto => {
            train_on_shm(args, plan, launch_opts.clone(), v, dry_run)
        }
    }
}

/// `train` as one rank of an MPI job (`--backend mpi` or under `mpiexec`):
/// every rank prepares the case, and the ranks agree that all could before
/// training.
fn train_on_mpi(
    args: &TrainArgs,
    threads_override: Option<usize>,
    cpus: usize,
    v: Verbosity,
    dry_run: bool,
) -> Result<i32, String> {
    let threads = mpi_threads(threads_override);
    crate::limits::check_threads(threads, cpus)?;
    if dry_run {
        return prepare(args, threads, 1, threads, (0, None)).map(|_| 0);
    }
    // MPI first: a rank that fails before MPI_Init would leave the
    // others waiting in it; after it, MPI_Abort ends the whole job.
    let comm = cobre_shm::comm::create_mpi_communicator().map_err(|e| {
        format!("{e}. Build with `cargo build --release --features mpi` and run under mpiexec")
    })?;
    crate::log::init(comm.rank(), v);
    let prepared = prepare(args, threads, 1, threads, (0, None));
    // Every rank reaches this agreement (preparing is local), so a
    // failure anywhere ends the job through MPI_Finalize on every
    // rank, with each failing rank's reason printed, instead of an
    // MPI_Abort that can cut off the launcher's output forwarding.
    let failed = u32::from(prepared.is_err());
    let mut any_failed = [0u32];
    if let Err(e) = cobre_comm::Communicator::allreduce(
        &comm,
        &[failed],
        &mut any_failed,
        cobre_comm::ReduceOp::Max,
    ) {
        crate::launch::line(&format!(
            "cobre-shm: rank {}: cannot agree on the case with the other ranks: {e}",
            comm.rank()
        ));
        cobre_comm::Communicator::abort(&comm, 2)
    }
    let prepared = match prepared {
        Ok(p) if any_failed[0] == 0 => p,
        Ok(_) => {
            crate::launch::line(&format!(
                "cobre-shm: rank {}: stopping: another rank could not prepare the case",
                comm.rank()
            ));
            drop(comm);
            return Ok(2);
        }
        Err(msg) => {
            crate::launch::line(&format!("cobre-shm: rank {}: {msg}", comm.rank()));
            drop(comm);
            return Ok(2);
        }
    };
    let code = train_rank(&comm, &prepared, prepared.opts.threads, v);
    // Finalise MPI (dropping the communicator) before exiting.
    drop(comm);
    Ok(code)
}

/// `train` on shm ranks started by this launcher, with the case prepared
/// (and its `/dev/shm` needs checked) once, before any rank starts.
fn train_on_shm(
    args: &TrainArgs,
    plan: &Plan,
    mut launch_opts: LaunchOptions,
    v: Verbosity,
    dry_run: bool,
) -> Result<i32, String> {
    let workers: usize = plan.ranks.iter().map(|r| r.threads).sum();
    let copies = if args.replicate { plan.ranks.len() } else { 1 };
    let prepared = prepare_with_staging(args, copies, workers, &mut launch_opts, v)?;
    if dry_run {
        return Ok(0);
    }
    let body = move |ctx: &RankContext| -> i32 {
        crate::log::init(ctx.placement.rank, v);
        let comm = match ShmBackend::attach(&ctx.config) {
            Ok(c) => Comm::Shm(c),
            Err(e) => {
                crate::launch::line(&format!("cobre-shm: rank {}: {e}", ctx.placement.rank));
                return 1;
            }
        };
        train_rank(&comm, &prepared, ctx.placement.threads, v)
    };
    launch(plan, &Program::Run(&body), &launch_opts)
}
