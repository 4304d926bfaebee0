//! What a run reports: one row per iteration, why it stopped, phase times,
//! memory, the shared regions, the policy, solver counters, and the
//! failure that carries what was done before it.
#![forbid(unsafe_code)]

use std::time::Duration;

use cobre_comm::CommError;

use crate::error::EngineError;
pub use crate::iteration::IterationRow;
use crate::options::TrainOptions;
use crate::shared::pool::CutRef;
use crate::solve::workspace::WorkStats;

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

/// A `kB` field of a `/proc` file's text, in bytes (0 when absent).
#[must_use]
pub fn read_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// This process's memory (Linux `/proc`; zeros elsewhere): `[peak_rss, pss, pss_anon, pss_shmem]`.
pub fn own_memory() -> [u64; 4] {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    [
        read_kib(&status, "VmHWM:"),
        read_kib(&rollup, "Pss:"),
        read_kib(&rollup, "Pss_Anon:"),
        read_kib(&rollup, "Pss_Shmem:"),
    ]
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
/// records `[α, iteration, trajectory, π_1 … π_n]` back to back (cuts of
/// stage `t` bound the future cost after stage `t`; the last stage has none)
/// and whether each is active at the end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Values per record of every stage (`3 + n`).
    pub strides: Vec<usize>,
    /// The records of every stage.
    pub stages: Vec<Vec<f64>>,
    /// Whether each cut of every stage is active.
    pub active: Vec<Vec<bool>>,
}

impl Policy {
    fn stride(&self, t: usize) -> usize {
        self.strides.get(t).copied().unwrap_or(1).max(1)
    }

    /// Cuts of stage `t`.
    #[must_use]
    pub fn len(&self, t: usize) -> usize {
        self.stages.get(t).map_or(0, |r| r.len() / self.stride(t))
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
            .chunks_exact(self.stride(t))
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

/// The LP work of one rank in one phase of one iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhaseWork {
    /// 1-based iteration.
    pub iteration: usize,
    /// Forward pass, backward pass (with its cut selection) or lower bound.
    pub phase: crate::model::Phase,
    /// Rank.
    pub rank: usize,
    /// LP solves.
    pub solves: u64,
    /// Solves that needed a rung of the recovery ladder after the first.
    pub retried: u64,
    /// Solves offered a stored basis.
    pub warm_starts: u64,
    /// Simplex iterations.
    pub simplex_iterations: u64,
    /// Stage loads.
    pub loads: u64,
    /// Seconds spent solving.
    pub solve_secs: f64,
    /// Seconds spent loading.
    pub load_secs: f64,
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
    /// The stored basis of trajectory 0 at every stage (rank 0 only; empty
    /// entries where none was stored): what a simulation of the policy can
    /// start from.
    pub first_trajectory_bases: Vec<crate::solve::basis::Entry>,
    /// What a checkpoint adds to the policy and rows (rank 0 only).
    pub checkpoint: Option<crate::checkpoint::State>,
    /// The LP work of every rank in every phase of the iterations this run
    /// trained, by iteration, phase and rank (rank 0 only).
    pub phase_work: Vec<PhaseWork>,
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
