//! The SDDP engine of cobre-shm: hydrothermal dispatch cases, stage LPs on
//! HiGHS, and the training loop over any [`engine::EngineComm`]
//! communicator. The only crate of the workspace that links a solver.

pub mod case;
pub mod engine;
pub mod generate;
pub mod model;
pub mod output;
pub mod rng;
pub mod solver;

pub use case::{Case, CaseError};
pub use engine::{
    train, EngineComm, EngineError, IterationRow, StopReason, TrainOptions, TrainReport,
};
