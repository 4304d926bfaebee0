//! The SDDP engine: hydrothermal dispatch cases, stage LPs on HiGHS, and the
//! training loop over any [`engine::EngineComm`] communicator.

pub mod case;
pub mod engine;
pub mod generate;
pub mod model;
pub mod output;
pub mod rng;

pub use case::{Case, CaseError};
pub use engine::{
    train, EngineComm, EngineError, IterationRow, StopReason, TrainOptions, TrainReport,
};
