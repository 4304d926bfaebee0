//! Everything that can stop training.
#![forbid(unsafe_code)]

use cobre_comm::CommError;

use crate::solve::workspace::SolveFailure;

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
