//! `cobre-shm -p N run CASE_DIR`: the study cobre-cli 0.18's `cobre run`
//! performs on an upstream Cobre case directory (cobre-io 0.18), with the
//! ranks of a cobre-shm job as its communicator.
//!
//! Rank 0 reads the case; the system, `config.json` and the other loaded
//! tables reach the other ranks through the communicator (one postcard
//! value: its length, then its bytes). Every rank builds the same upstream
//! `StudySetup`. Training runs on cobre-shm's shared engine by default
//! ([`model`] presents the study to it; `shared_training` hands the result
//! back in upstream's shapes): stage LPs, opening tree and cut pool once per
//! node. A study the shared engine does not model yet, or `--engine
//! upstream`, trains with upstream cobre-sddp 0.18 itself (`training`), a
//! copy of everything per rank. Simulation is upstream's. Rank 0 writes
//! upstream's output tree (`training/`, `policy/`, `simulation/`;
//! `training/metadata.json` records the backend and the engine). Features
//! of `cobre run` this runner does not carry (warm-start or resume
//! policies, boundary cuts, simulation from a stored policy) are refused up
//! front, naming the config field.
#![forbid(unsafe_code)]

pub mod generate;
pub mod limits;
mod metadata;
pub mod model;
mod share;
mod shared_training;
mod simulation;
mod study;
mod training;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use cobre_sddp::setup::{PostTrainingSimulation, RunPhasePlan};
use cobre_shm_sddp::EngineComm;

pub use share::ShareError;

/// What to run and where to write it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The case directory (`config.json`, `system/`, `stages.json`, …).
    pub case_dir: PathBuf,
    /// Output directory [default: `CASE_DIR/output`, as `cobre run`].
    pub output: Option<PathBuf>,
    /// Worker threads of this rank.
    pub threads: usize,
    /// Print nothing but errors.
    pub quiet: bool,
    /// Backend name written to `metadata.json` (`shm`, `mpi`, `local`).
    pub backend: &'static str,
    /// Which engine trains.
    pub engine: Engine,
}

/// Which engine trains a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// cobre-shm's shared engine (stage LPs, opening tree and cut pool once
    /// per node), falling back to upstream's where it does not model the
    /// study yet.
    #[default]
    Shared,
    /// Upstream cobre-sddp 0.18's own training (a copy per rank): the
    /// reference.
    Upstream,
}

impl RunOptions {
    /// Where the outputs go: `--output`, else `CASE_DIR/output`.
    #[must_use]
    pub fn output_dir(&self) -> PathBuf {
        self.output
            .clone()
            .unwrap_or_else(|| self.case_dir.join("output"))
    }
}

/// How a run that returned no error ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every configured phase finished.
    Completed,
    /// SIGTERM/SIGINT stopped training at an iteration boundary; the
    /// training outputs and policy checkpoint of the completed iterations
    /// were written and simulation was skipped.
    Stopped,
}

impl Outcome {
    /// The exit code `cobre run` uses for it (0, or 5 when stopped).
    #[must_use]
    pub const fn exit_code(self) -> i32 {
        match self {
            Self::Completed => 0,
            Self::Stopped => 5,
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The case directory could not be loaded or is invalid.
    #[error("cannot load the case: {0}")]
    Load(#[from] cobre_io::LoadError),
    /// Upstream cobre-sddp refused the study or failed in it.
    #[error("{0}")]
    Sddp(#[from] cobre_sddp::SddpError),
    /// An output file could not be written.
    #[error("cannot write the outputs: {0}")]
    Output(#[from] cobre_io::OutputError),
    /// The HiGHS workspace could not be created.
    #[error("cannot create the LP solver: {0}")]
    Solver(#[from] cobre_solver::SolverError),
    /// Simulation failed.
    #[error("simulation failed: {0}")]
    Simulation(#[from] cobre_sddp::SimulationError),
    /// A collective or a broadcast value failed.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// A value upstream would accept and then fail on.
    #[error("{0}")]
    Invalid(String),
    /// The study cannot fit this machine's memory.
    #[error("{0}")]
    TooLarge(String),
    /// The case asks for something this runner does not do.
    #[error("{0}; run this case with cobre-cli's `cobre run` instead")]
    Unsupported(String),
    /// Another rank failed; its own error is reported by that rank.
    #[error("rank {rank} failed {phase}; stopping in step with it")]
    Peer {
        /// The lowest failing rank.
        rank: usize,
        /// What it was doing.
        phase: &'static str,
    },
    /// The thread writing simulation results panicked (its message is above).
    #[error("the simulation output writer failed; the simulation outputs are incomplete")]
    WriterPanicked,
    /// The shared engine failed.
    #[error("{0}")]
    Engine(#[from] cobre_shm_sddp::EngineError),
    /// A signal handler could not be installed.
    #[error("cannot install the SIGTERM/SIGINT handler: {0}")]
    Signals(std::io::Error),
}

/// Run the study of `opts.case_dir` on `comm` (collective: every rank calls
/// it). Returns how it ended; rank 0 has written the outputs.
///
/// # Errors
/// Any failure of loading, training, simulation or writing, on every rank
/// alike where the failure was collective.
pub fn run_study<C: EngineComm>(comm: &C, opts: &RunOptions) -> Result<Outcome, RunError> {
    init_threads(opts.threads);
    let ctx = study::Context::new(comm, opts);
    let mut study = study::load_and_share(&ctx)?;
    study::write_pre_training(&ctx, &study)?;
    match RunPhasePlan::resolve(
        study.training_enabled,
        study.setup.simulation_config.n_scenarios > 0,
    ) {
        RunPhasePlan::TrainedThenSimulated => {}
        RunPhasePlan::SimulateFromPolicy => {
            return Err(RunError::Unsupported(
                "training.enabled = false (simulation from a stored policy) is not supported by \
                 cobre-shm run"
                    .into(),
            ))
        }
        RunPhasePlan::Nothing => {
            ctx.say("training and simulation are both disabled: nothing to do");
            return Ok(Outcome::Completed);
        }
    }
    let shared = opts.engine == Engine::Shared
        && match model::shared_engine_support(&study.setup, &study.params) {
            Ok(()) => true,
            Err(u) => {
                ctx.say(&format!(
                    "cobre-shm run: the shared engine does not model {u}; training with \
                     upstream's engine instead, which keeps a copy of the opening tree, cut pool \
                     and stage LPs in every rank"
                ));
                false
            }
        };
    let (stop, stop_now, handlers) = signal_flag()?;
    let trained = if shared {
        shared_training::train(&ctx, &mut study, &stop_now)
    } else {
        training::train(&ctx, &mut study, &stop)
    };
    // After training a signal ends the process again (the default action).
    for id in handlers {
        signal_hook::low_level::unregister(id);
    }
    let trained = trained?;
    let decision = &trained.result.stop_decision;
    let level = share::agree_max(comm, stop.load(std::sync::atomic::Ordering::SeqCst))?;
    let n_scenarios = study.setup.simulation_config.n_scenarios;
    match PostTrainingSimulation::resolve(n_scenarios > 0, decision, level) {
        PostTrainingSimulation::Run => {
            simulation::simulate(&ctx, &mut study, &trained.result)?;
            Ok(Outcome::Completed)
        }
        PostTrainingSimulation::SkipAfterSignalStop => {
            simulation::write_skipped(&ctx, n_scenarios)?;
            Ok(Outcome::Stopped)
        }
        PostTrainingSimulation::NotRequested => {
            if cobre_sddp::setup::signal_stop_requested(decision, level) {
                Ok(Outcome::Stopped)
            } else {
                Ok(Outcome::Completed)
            }
        }
    }
}

/// Rayon's global pool with this rank's threads (upstream trains on it).
fn init_threads(threads: usize) {
    let threads = threads.max(1);
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        tracing::warn!(
            "rayon pool already set ({e}); using its {} threads",
            rayon::current_num_threads()
        );
    }
}

/// Flags of a requested stop and the handlers that set them.
type StopFlags = (Arc<AtomicUsize>, Arc<AtomicBool>, Vec<signal_hook::SigId>);

/// During training, SIGTERM and SIGINT ask the training loop to stop at the
/// next iteration boundary, as `cobre run` does: upstream's loop reads its
/// signal shutdown level, the shared engine a flag. Returns both and the
/// handlers to unregister afterwards.
fn signal_flag() -> Result<StopFlags, RunError> {
    let flag = Arc::new(AtomicUsize::new(0));
    let now = Arc::new(AtomicBool::new(false));
    let level = cobre_sddp::config::ShutdownSource::Signal.level();
    let mut ids = Vec::new();
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        ids.push(
            signal_hook::flag::register_usize(sig, Arc::clone(&flag), level)
                .map_err(RunError::Signals)?,
        );
        ids.push(signal_hook::flag::register(sig, Arc::clone(&now)).map_err(RunError::Signals)?);
    }
    Ok((flag, now, ids))
}
