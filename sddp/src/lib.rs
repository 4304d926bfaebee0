//! The SDDP engine of cobre-shm: one trainer for every study, fed by
//! *models* (what to solve, [`model::Model`]) — the `case.json`
//! hydrothermal front-end here ([`hydrothermal`]), upstream Cobre studies in
//! `cobre-shm-upstream` — and generic over the communicator
//! ([`comm::EngineComm`]). The stage-LP cache, opening tree and cut pool
//! live once per node under shm; every worker thread owns one HiGHS
//! workspace (upstream `cobre-solver`). This crate and
//! `cobre-shm-upstream` (through upstream cobre-sddp) link the solver.
//!
//! Modules: `model` (the boundary), `hydrothermal` (a front-end),
//! `options`, `report`, `iteration` and `error` (what a run is asked and
//! answers),
//! `shared` (the data every rank reads), `solve` (per-thread workspaces and
//! stored bases), `trainer` (forward, backward, selection, bounds), `gemm`
//! (the cut-selection kernel), `sizes`, `checkpoint`, `output` (the files of
//! a `case.json` run), `atomic_dir` (writing a directory so readers see the
//! old set or the new one), `allocator` (glibc told to give memory back)
//! and `comm`.

pub mod allocator;
pub mod atomic_dir;
pub mod checkpoint;
pub mod comm;
pub mod error;
mod gemm;
pub mod hydrothermal;
pub mod iteration;
pub mod model;
pub mod options;
pub mod output;
pub mod report;
pub mod shared;
pub mod sizes;
pub mod solve;
mod trainer;

use std::sync::atomic::AtomicBool;

pub use comm::EngineComm;
pub use error::EngineError;
pub use model::Model;
pub use options::{CutSelection, SelectionRule, StopRules, TrainOptions};
pub use report::{IterationRow, StopReason, TrainFailure, TrainReport};
pub use sizes::{sizes, Sizes};

/// What the caller hooks into a run (see [`train`]).
pub struct Hooks<'h> {
    /// Called on rank 0 after every iteration.
    pub on_iteration: &'h mut dyn FnMut(&IterationRow),
    /// Called on rank 0 with the results so far (their `checkpoint` set)
    /// every `checkpoint_every` iterations.
    pub on_checkpoint: Option<&'h mut dyn FnMut(&TrainReport)>,
    /// Set (e.g. by a signal handler) to stop at the next phase boundary
    /// with a checkpoint of the completed iterations.
    pub stop: Option<&'h AtomicBool>,
    /// Continue from this checkpoint (read with [`checkpoint::read`];
    /// every rank needs it: ranks forked from one process share its pages).
    pub resume: Option<&'h checkpoint::State>,
}

impl Hooks<'_> {
    /// Train, calling `on_iteration` on rank 0 after every iteration and
    /// nothing else.
    pub fn iterations(on_iteration: &mut dyn FnMut(&IterationRow)) -> Hooks<'_> {
        Hooks {
            on_iteration,
            on_checkpoint: None,
            stop: None,
            resume: None,
        }
    }
}

/// Train a policy for `model` on `comm` (collective: every rank calls it).
///
/// # Errors
/// [`TrainFailure`]; every rank of a failed job returns an error, and when
/// the ranks could still agree, the policy and iterations so far.
pub fn train<C: EngineComm, M: Model>(
    comm: &C,
    model: &M,
    opts: &TrainOptions,
    hooks: Hooks<'_>,
) -> Result<TrainReport, TrainFailure> {
    trainer::train(comm, model, opts, hooks)
}
