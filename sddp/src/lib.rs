//! The SDDP engine of cobre-shm: hydrothermal dispatch cases, a stage-LP
//! cache once per node, one HiGHS workspace per worker thread (upstream
//! `cobre-solver`, the HiGHS upstream Cobre links), deterministic Level-1
//! cut selection, and the training loop over any [`engine::EngineComm`]
//! communicator. The only crate of the workspace that links a solver.
//!
//! Layout: `case` (the input), `lp` (a stage's structural LP), `store`,
//! `cache` and `pool` (the data every rank reads: one copy per node under
//! shm), `selection`, `basis` and `workspace` (per-thread solving),
//! `trainer` (forward, backward, bounds, report), `output` (files).

pub mod allocator;
pub mod atomic_dir;
pub mod basis;
pub mod cache;
pub mod case;
pub mod checkpoint;
pub mod engine;
pub mod generate;
pub mod lp;
pub mod output;
pub mod pool;
pub mod rng;
pub mod selection;
pub mod store;
mod trainer;
pub mod workspace;

pub use case::{Case, CaseError};
pub use engine::{
    train, train_with, EngineComm, EngineError, Hooks, IterationRow, StopReason, TrainFailure,
    TrainOptions, TrainReport,
};
pub use selection::CutSelection;
