//! `cobre-shm train`: validate the case before any rank exists, then run the
//! SDDP engine inside every forked rank (no exec), or in this process for
//! `--backend local`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cobre_comm::Communicator;
use cobre_shm::{Comm, ShmBackend};
use cobre_shm_sddp::workspace::Fault;
use cobre_shm_sddp::{output, train, Case, CutSelection, EngineComm, IterationRow, TrainOptions};

use crate::launch::{launch, LaunchOptions, Program, RankContext};
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
    #[arg(long, value_name = "SECS")]
    pub time_limit: Option<f64>,
    /// Keep a private copy of the opening tree and cut pool in every rank
    /// (to measure what sharing saves)
    #[arg(long)]
    pub replicate: bool,
    /// Trajectories per warm-start group (results are identical for any
    /// ranks × threads at a fixed group size)
    #[arg(long, value_name = "G")]
    pub warm_group: Option<usize>,
    /// Which cuts each stage LP loads: `level1` (cuts binding at some
    /// visited trial point, plus the newest) or `none` (every cut)
    #[arg(long, value_name = "RULE", default_value = "level1")]
    pub cut_selection: CutSelection,
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
    /// No progress bar or per-iteration log
    #[arg(long)]
    pub quiet: bool,
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
fn mpi_threads(threads_override: Option<usize>) -> usize {
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
/// can fail happens here, before any rank exists.
fn prepare(args: &TrainArgs, threads: usize) -> Result<(Case, TrainOptions, PathBuf), String> {
    let case = match &args.case {
        Some(p) => Case::load(&p.to_string_lossy()).map_err(|e| e.to_string())?,
        None => Case::parse(
            cobre_shm_sddp::case::TUTORIAL_CASE,
            "bundled tutorial",
            "hydro_thermal_tutorial",
        )
        .map_err(|e| e.to_string())?,
    };
    let mut opts = TrainOptions::from_case(&case, threads);
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
    if let Some(g) = positive(args.warm_group, "warm-group")? {
        opts.warm_group = g;
    }
    if let Some(s) = args.seed {
        opts.seed = s;
    }
    if let Some(t) = args.time_limit {
        if !(t.is_finite() && t > 0.0) {
            return Err("--time-limit must be a positive number of seconds".into());
        }
        opts.time_limit = Some(Duration::from_secs_f64(t));
    }
    opts.replicate = args.replicate;
    opts.cut_selection = args.cut_selection;
    opts.fault = args.inject_solver_fault;
    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| Path::new("output").join(&case.name));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create output directory {}: {e}", dir.display()))?;
    Ok((case, opts, dir))
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

/// Train on `comm`; rank 0 writes the outputs. Returns the exit code.
fn run_rank<C: EngineComm>(
    comm: &C,
    case: &Case,
    opts: &TrainOptions,
    dir: &Path,
    quiet: bool,
) -> i32 {
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
    let result = train(comm, case, opts, |row| {
        if !quiet {
            progress(row, opts.iterations, tty);
        }
    });
    if rank == 0 && tty && !quiet {
        eprintln!();
    }
    let summary = |report: &cobre_shm_sddp::TrainReport| {
        if let Some(last) = report.rows.last() {
            println!(
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
            );
        }
    };
    match result {
        Ok(report) => {
            if rank != 0 {
                return 0;
            }
            if let Err(e) = output::write_all(dir, case, &report) {
                eprintln!("cobre-shm: {e}");
                return 1;
            }
            summary(&report);
            0
        }
        Err(failure) => {
            eprintln!("cobre-shm: rank {rank}: training failed: {failure}");
            if let (0, Some(report)) = (rank, &failure.partial) {
                match output::write_all(dir, case, report) {
                    Ok(()) => eprintln!(
                        "cobre-shm: the {} completed iteration(s) and every cut published so far \
                         are in {}",
                        report.rows.len(),
                        dir.display()
                    ),
                    Err(e) => eprintln!("cobre-shm: {e}"),
                }
            }
            1
        }
    }
}

fn init_logging(rank: usize) {
    let default = if rank == 0 { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// `cobre-shm train`.
///
/// # Errors
/// A message for problems found before any rank starts.
pub fn run(
    args: &TrainArgs,
    plan: &Plan,
    launch_opts: &LaunchOptions,
    threads_override: Option<usize>,
) -> Result<i32, String> {
    let backend = match args.backend {
        TrainBackend::Auto if cobre_shm::comm::mpi_launch_detected() => TrainBackend::Mpi,
        TrainBackend::Auto => TrainBackend::Shm,
        other => other,
    };
    match backend {
        TrainBackend::Local => {
            let threads = threads_override
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
            let (case, opts, dir) = prepare(args, threads)?;
            init_logging(0);
            Ok(run_rank(
                &Comm::Local(cobre_comm::LocalBackend),
                &case,
                &opts,
                &dir,
                args.quiet,
            ))
        }
        TrainBackend::Mpi => {
            let (case, opts, dir) = prepare(args, mpi_threads(threads_override))?;
            let comm = cobre_shm::comm::create_mpi_communicator().map_err(|e| {
                format!(
                    "{e}. Build with `cargo build --release --features mpi` and run under mpiexec"
                )
            })?;
            init_logging(comm.rank());
            let code = run_rank(&comm, &case, &opts, &dir, args.quiet);
            // Finalise MPI (dropping the communicator) before exiting.
            drop(comm);
            Ok(code)
        }
        TrainBackend::Shm | TrainBackend::Auto => {
            let (case, opts, dir) = prepare(args, 1)?;
            let quiet = args.quiet;
            let body = move |ctx: &RankContext| -> i32 {
                init_logging(ctx.placement.rank);
                let comm = match ShmBackend::attach(&ctx.config) {
                    Ok(c) => Comm::Shm(c),
                    Err(e) => {
                        eprintln!("cobre-shm: rank {}: {e}", ctx.placement.rank);
                        return 1;
                    }
                };
                let opts = TrainOptions {
                    threads: ctx.placement.threads,
                    ..opts.clone()
                };
                run_rank(&comm, &case, &opts, &dir, quiet)
            };
            launch(plan, &Program::Run(&body), launch_opts)
        }
    }
}
