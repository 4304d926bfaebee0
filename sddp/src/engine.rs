//! The public face of the SDDP engine: options, what a run reports, and
//! [`train`], generic over the communicator. The loop itself lives in
//! the private `trainer` module.
//!
//! Results do not depend on how ranks × threads split the work: the
//! forward trajectories are cut into *groups* of `warm_group`; a group is
//! the unit given to a rank (contiguous blocks) and to a worker thread, every
//! (group, stage) visit starts by loading the stage into a clean HiGHS
//! instance, warm-started from the basis the same group left there last
//! time, and the cut selection is a pure function of the shared pool. So
//! every LP sees the same sequence of solves whoever runs it.
#![forbid(unsafe_code)]

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use cobre_comm::CommError;
use cobre_shm::{BlockPublish, Comm};

use crate::case::Case;
use crate::pool::CutRef;
use crate::selection::CutSelection;
use crate::workspace::{Fault, SolveFailure, WorkStats};

/// What the engine needs from a communicator beyond the cobre-comm traits:
/// regions filled by blocks ([`BlockPublish`]) and a name for reports.
pub trait EngineComm: BlockPublish {
    /// Name of the backend, for the summary.
    fn backend_name(&self) -> &'static str;
}

impl EngineComm for Comm {
    fn backend_name(&self) -> &'static str {
        Comm::backend_name(self)
    }
}

/// Everything that can stop training.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A collective failed (a rank died, the job was aborted, ...).
    #[error("communication failed: {0}")]
    Comm(#[from] CommError),
    /// An LP could not be solved on this rank, even after every recovery.
    #[error(transparent)]
    Solve(#[from] SolveFailure),
    /// A stop was requested (SIGTERM, SIGINT): training ended at the next
    /// phase boundary, with a checkpoint of the completed iterations.
    #[error("stopped on request during iteration {iteration}")]
    Interrupted {
        /// The iteration that was abandoned (1-based).
        iteration: usize,
    },
    /// A checkpoint to resume from does not fit this run.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Another rank could not solve an LP; that rank reports it.
    #[error("rank {rank} could not solve an LP in iteration {iteration} (its message says why)")]
    PeerFailed {
        /// The first rank that failed.
        rank: usize,
        /// Iteration (1-based).
        iteration: usize,
    },
    /// HiGHS could not start or load a stage.
    #[error("HiGHS: {0}")]
    Solver(String),
    /// The worker pool could not start.
    #[error("cannot start {0} worker threads")]
    Pool(usize),
    /// Options are inconsistent.
    #[error("invalid training options: {0}")]
    Options(String),
}

/// Training parameters (case defaults overridden by the command line).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// Iteration limit (also the cut pool's capacity).
    pub iterations: usize,
    /// Forward trajectories per iteration.
    pub forward_passes: usize,
    /// Sampling seed.
    pub seed: u64,
    /// Wall-clock limit.
    pub time_limit: Option<Duration>,
    /// Stop when the lower bound improved by less than `tolerance`
    /// (relative) over `iterations` iterations.
    pub stall: Option<(f64, usize)>,
    /// Worker threads of this rank.
    pub threads: usize,
    /// Keep private copies of the shared data in every rank.
    pub replicate: bool,
    /// Trajectories per warm-start group (fixed across ranks × threads).
    pub warm_group: usize,
    /// Which cuts each stage LP loads.
    pub cut_selection: CutSelection,
    /// Solve failures to inject (tests of the recovery ladder).
    pub fault: Option<Fault>,
    /// Also write a checkpoint (with the results so far) every this many
    /// iterations; `None`: only the one every run ends with.
    pub checkpoint_every: Option<usize>,
}

impl TrainOptions {
    /// Default iterations when neither the case nor the command line says.
    pub const DEFAULT_ITERATIONS: usize = 50;
    /// Default forward passes.
    pub const DEFAULT_FORWARD_PASSES: usize = 10;
    /// Default warm-start group.
    pub const DEFAULT_WARM_GROUP: usize = 2;
    /// Default checkpoint interval, in iterations.
    pub const DEFAULT_CHECKPOINT_EVERY: usize = 10;

    /// Options from the case's `training` section, with defaults.
    #[must_use]
    pub fn from_case(case: &Case, threads: usize) -> Self {
        let t = &case.training;
        Self {
            iterations: t.iterations.unwrap_or(Self::DEFAULT_ITERATIONS),
            forward_passes: t.forward_passes.unwrap_or(Self::DEFAULT_FORWARD_PASSES),
            seed: t.seed.unwrap_or(0),
            time_limit: t.time_limit_secs.map(Duration::from_secs_f64),
            stall: match (t.stall_tolerance, t.stall_iterations) {
                (Some(tol), Some(k)) => Some((tol, k.max(1))),
                (Some(tol), None) => Some((tol, 5)),
                _ => None,
            },
            threads: threads.max(1),
            replicate: false,
            warm_group: Self::DEFAULT_WARM_GROUP,
            cut_selection: CutSelection::default(),
            fault: None,
            checkpoint_every: Some(Self::DEFAULT_CHECKPOINT_EVERY),
        }
    }
}

/// One line of `convergence.csv`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IterationRow {
    /// 1-based iteration.
    pub iteration: usize,
    /// Expected stage-1 value.
    pub lower_bound: f64,
    /// Mean cost of the forward trajectories.
    pub upper_bound_mean: f64,
    /// Half width of the 95 % confidence interval of that mean.
    pub upper_bound_ci95: f64,
    /// `(ub − lb) / |ub|`.
    pub gap: f64,
    /// Cuts in the pool.
    pub cuts: usize,
    /// Seconds since training started.
    pub elapsed_secs: f64,
}

/// Why training stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The iteration limit was reached.
    IterationLimit,
    /// The time limit was reached.
    TimeLimit,
    /// The lower bound stalled.
    Stall,
    /// An LP could not be solved even after every recovery (the policy
    /// and iterations so far are still reported).
    SolverFailure,
    /// A stop was requested (SIGTERM, SIGINT).
    Interrupted,
    /// Not stopped: a checkpoint of a run still going.
    InProgress,
}

impl StopReason {
    /// Wire code (for the stop broadcast).
    #[must_use]
    pub fn code(self) -> u64 {
        match self {
            Self::IterationLimit => 1,
            Self::TimeLimit => 2,
            Self::Stall => 3,
            Self::SolverFailure => 4,
            Self::Interrupted => 5,
            Self::InProgress => 6,
        }
    }

    /// From a wire code.
    #[must_use]
    pub fn from_code(c: u64) -> Option<Self> {
        match c {
            1 => Some(Self::IterationLimit),
            2 => Some(Self::TimeLimit),
            3 => Some(Self::Stall),
            4 => Some(Self::SolverFailure),
            5 => Some(Self::Interrupted),
            6 => Some(Self::InProgress),
            _ => None,
        }
    }

    /// Snake-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IterationLimit => "iteration_limit",
            Self::TimeLimit => "time_limit",
            Self::Stall => "lower_bound_stall",
            Self::SolverFailure => "lp_failure",
            Self::Interrupted => "interrupted",
            Self::InProgress => "in_progress",
        }
    }
}

/// Wall time of each phase, summed over iterations (this rank).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    /// Building and publishing the cache and the opening tree.
    pub setup: Duration,
    /// Forward passes.
    pub forward: Duration,
    /// Backward solves.
    pub backward: Duration,
    /// Publishing cuts and trial points.
    pub cut_exchange: Duration,
    /// Cut selection.
    pub selection: Duration,
    /// Lower bound solves.
    pub lower_bound: Duration,
    /// Gathering trajectory costs and the stop decision.
    pub bounds_sync: Duration,
}

/// Memory of one rank.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RankMemory {
    /// Rank.
    pub rank: usize,
    /// Peak resident set (VmHWM), bytes.
    pub peak_rss: u64,
    /// Proportional set size at the end, bytes.
    pub pss: u64,
    /// Highest PSS of this rank sampled (after setup, after every
    /// iteration, at the report), bytes.
    pub peak_pss: u64,
    /// PSS of private anonymous memory (heaps, stacks, HiGHS), bytes.
    pub pss_anon: u64,
    /// PSS of shared memory (the regions, divided among mappers), bytes.
    pub pss_shmem: u64,
}

/// A data structure every rank reads, and where it lives.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionReport {
    /// `opening_tree`, `stage_lp_cache`, `cut_pool` or `trial_points`.
    pub name: &'static str,
    /// Size in bytes (capacity).
    pub bytes: usize,
    /// One copy per node (true) or one per rank (false).
    pub shared: bool,
    /// `posix_shm`, `process_heap`, `cobre_comm_heap_fallback` or `private_copy`.
    pub storage: &'static str,
    /// Pages per NUMA node as seen by rank 0 (`node -1`: not backed yet).
    pub pages_by_node: Vec<(i32, usize)>,
}

/// The cuts of a run, copied once from the pool on rank 0: per stage the
/// records `[α, iteration, trajectory, β_1 … β_H]` back to back (cuts of
/// stage `t` bound the future cost after stage `t`; the last stage has none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Values per record (`3 + hydros`).
    pub stride: usize,
    /// The records of every stage.
    pub stages: Vec<Vec<f64>>,
}

impl Policy {
    /// Cuts of stage `t`.
    #[must_use]
    pub fn len(&self, t: usize) -> usize {
        self.stages
            .get(t)
            .map_or(0, |r| r.len() / self.stride.max(1))
    }

    /// No cut at any stage?
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.stages.iter().all(Vec::is_empty)
    }

    /// The cuts of stage `t`, oldest first.
    pub fn cuts(&self, t: usize) -> impl ExactSizeIterator<Item = CutRef<'_>> + '_ {
        let records = self.stages.get(t).map_or(&[][..], Vec::as_slice);
        records
            .chunks_exact(self.stride.max(1))
            .map(CutRef::from_record)
    }
}

/// Work and selection figures of a run, summed over ranks where it says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkReport {
    /// Workspace counters summed over every thread of every rank.
    pub solver: WorkStats,
    /// Per-thread workspace scratch outside HiGHS (rank 0's largest), bytes.
    pub workspace_scratch_bytes: usize,
    /// Basis cache of rank 0, bytes.
    pub basis_cache_bytes: usize,
    /// Cut-selection bookkeeping of rank 0, bytes.
    pub selection_bytes: usize,
    /// Active cuts per lane at the end.
    pub active_cuts: Vec<usize>,
    /// Penalised slack (overflow plus unserved) over all forward passes.
    pub penalty_slack: f64,
}

/// Everything training produced.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// One row per iteration.
    pub rows: Vec<IterationRow>,
    /// Why it stopped.
    pub stop: StopReason,
    /// This rank's phase times.
    pub phases: PhaseTimes,
    /// Ranks.
    pub ranks: usize,
    /// Threads per rank.
    pub threads: usize,
    /// Backend name.
    pub backend: &'static str,
    /// Memory of every rank.
    pub memory: Vec<RankMemory>,
    /// Highest node PSS sampled: the sum over ranks at one sample point
    /// (after setup, after every iteration, at the report), bytes.
    pub node_peak_pss: u64,
    /// Shared data structures.
    pub regions: Vec<RegionReport>,
    /// Every cut published. Filled on rank 0 only (other ranks would hold
    /// one more copy of the pool); empty elsewhere.
    pub policy: Policy,
    /// LP solves over all ranks.
    pub lp_solves: u64,
    /// Workspaces, basis cache and selection.
    pub work: WorkReport,
    /// Options used.
    pub options: TrainOptions,
    /// What a checkpoint adds to the policy and rows (rank 0 only).
    pub checkpoint: Option<crate::checkpoint::Snapshot>,
}

/// Training that stopped on an error, with what it had done so far: the
/// cuts already published and the iterations already completed.
#[derive(Debug)]
pub struct TrainFailure {
    /// Why it stopped.
    pub error: EngineError,
    /// What was done before, when the job could still agree on it.
    pub partial: Option<Box<TrainReport>>,
}

impl std::fmt::Display for TrainFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for TrainFailure {}

impl From<EngineError> for TrainFailure {
    fn from(error: EngineError) -> Self {
        Self {
            error,
            partial: None,
        }
    }
}

impl From<CommError> for TrainFailure {
    fn from(e: CommError) -> Self {
        EngineError::from(e).into()
    }
}

/// What a run will hold, computed from the case and the options before
/// anything is allocated (all arithmetic checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Cut slots per stage (iterations × forward passes).
    pub cuts_per_stage: usize,
    /// Bytes of the opening tree.
    pub tree_bytes: u64,
    /// Bytes of the stage-LP cache.
    pub cache_bytes: u64,
    /// Bytes of the cut pool.
    pub pool_bytes: u64,
    /// Bytes of the trial points.
    pub states_bytes: u64,
}

impl Sizes {
    /// Bytes of every structure every rank reads (one copy per node under
    /// shm, one per rank with `--replicate` or MPI).
    #[must_use]
    pub fn shared_bytes(&self) -> u64 {
        self.tree_bytes
            .saturating_add(self.cache_bytes)
            .saturating_add(self.pool_bytes)
            .saturating_add(self.states_bytes)
    }
}

/// The sizes of a run of `case` with `opts`.
///
/// # Errors
/// [`EngineError::Options`] when a count is zero or a size overflows, with
/// the options to lower.
pub fn sizes(case: &Case, opts: &TrainOptions) -> Result<Sizes, EngineError> {
    if opts.forward_passes == 0 || opts.iterations == 0 || opts.warm_group == 0 || opts.threads == 0
    {
        return Err(EngineError::Options(
            "forward passes, iterations, warm group and threads must be at least 1".into(),
        ));
    }
    let too_big = || {
        EngineError::Options(format!(
            "{} iterations x {} forward passes over {} stages and {} hydros is too large to \
             hold (cut pool and trial points); lower --iterations or --forward-passes",
            opts.iterations,
            opts.forward_passes,
            case.stages,
            case.hydros.len()
        ))
    };
    let cuts = opts
        .iterations
        .checked_mul(opts.forward_passes)
        .filter(|&c| u32::try_from(c).is_ok())
        .ok_or_else(too_big)?;
    let nh = case.hydros.len() as u64;
    let lanes = (case.stages - 1) as u64;
    let mul = |a: u64, b: u64| a.checked_mul(b).ok_or_else(too_big);
    let shape = crate::lp::Shape::of(case);
    let (n, m, nz) = (shape.cols as u64, shape.rows as u64, shape.nonzeros as u64);
    let per_stage = mul(nz, 12)?
        .checked_add(mul(n, 28)?)
        .and_then(|v| v.checked_add(m * 16 + 4))
        .ok_or_else(too_big)?;
    Ok(Sizes {
        cuts_per_stage: cuts,
        tree_bytes: mul(case.tree_offsets().1 as u64, 8)?,
        cache_bytes: mul(case.stages as u64, per_stage)?,
        pool_bytes: mul(
            mul(lanes, cuts as u64)?,
            mul(nh + crate::pool::HEAD as u64, 8)?,
        )?,
        states_bytes: mul(mul(lanes, cuts as u64)?, mul(nh, 8)?)?,
    })
}

/// What the caller hooks into a run (see [`train_with`]).
pub struct Hooks<'h> {
    /// Called on rank 0 after every iteration.
    pub on_iteration: &'h mut dyn FnMut(&IterationRow),
    /// Called on rank 0 with the results so far (their `checkpoint` set)
    /// every `checkpoint_every` iterations.
    pub on_checkpoint: &'h mut dyn FnMut(&TrainReport),
    /// Set (e.g. by a signal handler) to stop at the next phase boundary
    /// with a checkpoint of the completed iterations.
    pub stop: Option<&'h AtomicBool>,
    /// Continue from this checkpoint (read with [`crate::checkpoint::read`];
    /// every rank needs it: ranks forked from one process share its pages).
    pub resume: Option<&'h crate::checkpoint::State>,
}

/// Train a policy for `case` on `comm`; `on_iteration` is called on rank 0
/// after every iteration.
///
/// # Errors
/// [`TrainFailure`]; every rank of a failed job returns an error, and when
/// the ranks could still agree, the policy and iterations so far.
pub fn train<C: EngineComm>(
    comm: &C,
    case: &Case,
    opts: &TrainOptions,
    mut on_iteration: impl FnMut(&IterationRow),
) -> Result<TrainReport, TrainFailure> {
    let mut nothing = |_: &TrainReport| {};
    train_with(
        comm,
        case,
        opts,
        Hooks {
            on_iteration: &mut on_iteration,
            on_checkpoint: &mut nothing,
            stop: None,
            resume: None,
        },
    )
}

/// [`train`] with checkpoints, a stop flag and resumption.
///
/// # Errors
/// As [`train`].
pub fn train_with<C: EngineComm>(
    comm: &C,
    case: &Case,
    opts: &TrainOptions,
    hooks: Hooks<'_>,
) -> Result<TrainReport, TrainFailure> {
    crate::trainer::train(comm, case, opts, hooks)
}
