//! The SDDP engine of cobre-shm: hydrothermal cases, a stage-LP cache once
//! per node, one HiGHS workspace per worker thread (upstream `cobre-solver`,
//! the HiGHS upstream Cobre links), deterministic Level-1 cut selection, and
//! the training loop over any [`engine::EngineComm`] communicator. It links
//! the solver; so does `cobre-shm-upstream`, through upstream cobre-sddp.
//!
//! Modules: `case` and `generate` (the input and synthetic cases), `rng`
//! (sampling), `lp` (a stage's structural LP), `store`, `cache` and `pool`
//! (the data every rank reads: one copy per node under shm), `selection`,
//! `basis` and `workspace` (per-thread solving), `trainer` (forward,
//! backward, bounds, report), `engine` (options, reports, [`train`]),
//! `checkpoint` (resuming), `output` (the files of a run), `atomic_dir`
//! (writing a directory so readers see the old set or the new one) and
//! `allocator` (glibc's allocator told to give memory back).

pub mod allocator;
pub mod atomic_dir;
pub mod basis;
pub mod cache;
pub mod case;
pub mod checkpoint;
pub mod engine;
pub mod generate;
pub mod lp;
pub mod model;
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
