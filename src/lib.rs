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
//! Layout of the crate: `os` (all syscalls: segments, futex, NUMA, fork;
//! atomic views of shared words), `wire` (typed views into mappings) — the
//! only modules with `unsafe` — then safe code: `wait` (the one backoff),
//! `control` (validated control segment), `sync` (the barrier), `job`,
//! `collectives`, `region`, `blocks`, `backend`, `comm`.

pub mod backend;
pub mod blocks;
pub mod cleanup;
pub mod collectives;
pub mod comm;
pub mod config;
pub mod control;
pub mod error;
mod job;
pub mod os;
pub mod plain;
pub mod random;
mod reduce;
pub mod region;
pub mod sync;
pub mod topology;
pub mod wait;
mod wire;

pub use backend::{ShmBackend, ShmLocalComm};
pub use blocks::{BlockPublish, BlockRegion};
pub use comm::{available_backends, create_communicator, Comm, CommRegion, ENV_BACKEND};
pub use config::{MemPolicy, ShmConfig};
pub use error::ShmError;
pub use plain::register_plain_data;
pub use region::ShmRegion;
pub use wait::WaitPolicy;
