//! # cobre-shm
//!
//! A single-node, multi-process backend for the
//! [cobre-comm 0.18](https://docs.rs/cobre-comm/0.18) traits over POSIX shared
//! memory: [`ShmBackend`] implements `Communicator`, `SharedMemoryProvider`
//! (with [`ShmRegion`], one copy per node) and `TopologyProvider`, so code
//! generic over `C: Communicator` runs on it unchanged. This crate links no
//! solver.
//!
//! Entry points: [`ShmBackend::from_env`] for a rank of a job described by
//! `COBRE_SHM_NAME` / `COBRE_SHM_RANK` / `COBRE_SHM_SIZE`, and
//! [`create_communicator`] which picks shm, local (or MPI) from
//! `COBRE_COMM_BACKEND`.
//!
//! Only plain data crosses processes ([`plain`]); ranks write their own
//! parts of a region through [`BlockPublish`] and [`BlockRegion`].
//!
//! Two faces: the crate root is what a rank program uses (the factory,
//! [`ShmBackend`], regions, collectives); [`launch`] is what a launcher uses
//! (job names, the control segment, fork, binding, cleanup). Facts about the
//! machine (CPUs, topology, memory) are in [`machine`].
//!
//! Layout of the crate: `os` (every syscall: segments, futex, NUMA, fork,
//! cross-memory reads; atomic views of shared words) and `views` (typed
//! views into mappings) are the only modules with `unsafe`; on top of them,
//! safe code: `wait` (the one backoff), `control` (the validated control
//! segment), `sync` (the barrier), `job`, `collectives`, `reduce`, `region`,
//! `blocks`, `backend`, `comm`, and `cleanup` (segments of dead jobs).

pub mod backend;
pub mod blocks;
mod cleanup;
pub mod collectives;
pub mod comm;
pub mod config;
mod control;
pub mod error;
mod job;
pub mod launch;
pub mod machine;
mod mempolicy;
mod os;
pub mod plain;
mod random;
mod reduce;
pub mod region;
pub mod sync;
mod views;
pub mod wait;

pub use backend::{ShmBackend, ShmLocalComm};
pub use blocks::{BlockPublish, BlockRegion};
pub use comm::{available_backends, create_communicator, Comm, CommRegion, ENV_BACKEND};
pub use config::{MemPolicy, ShmConfig};
pub use error::ShmError;
pub use plain::register_plain_data;
pub use region::ShmRegion;
pub use wait::WaitPolicy;
