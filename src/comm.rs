//! `create_communicator()`: pick the backend from the environment.
#![forbid(unsafe_code)]

use cobre_comm::{
    BackendError, CommData, CommError, Communicator, ExecutionTopology, HeapRegion, LocalBackend,
    LocalCommKind, ReduceOp, SharedMemoryProvider, SharedRegion, TopologyProvider,
};

use crate::backend::ShmBackend;
use crate::config::ENV_NAME;
use crate::region::ShmRegion;

/// Selects the backend: `shm`, `local`, or `auto` (default).
pub const ENV_BACKEND: &str = "COBRE_COMM_BACKEND";

/// Backend names this build knows.
#[must_use]
pub fn available_backends() -> Vec<String> {
    vec!["shm".to_string(), "local".to_string()]
}

/// The communicator a program gets from [`create_communicator`].
#[derive(Debug, Clone)]
pub enum Comm {
    /// Several processes on one node, through POSIX shared memory.
    Shm(ShmBackend),
    /// One process.
    Local(LocalBackend),
}

impl Comm {
    /// `"shm"` or `"local"`.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Shm(_) => "shm",
            Self::Local(_) => "local",
        }
    }
}

/// Choose and initialise the backend from `COBRE_COMM_BACKEND`: `shm`,
/// `local`, or `auto`/unset/empty (shm when `COBRE_SHM_NAME` is set, else
/// local).
///
/// # Errors
/// `InvalidBackend` for an unknown name; `MissingConfiguration` /
/// `InitializationFailed` from [`ShmBackend::from_env`].
pub fn create_communicator() -> Result<Comm, BackendError> {
    let requested = std::env::var(ENV_BACKEND).unwrap_or_default();
    match requested.trim() {
        "shm" => ShmBackend::from_env().map(Comm::Shm),
        "local" => Ok(Comm::Local(LocalBackend)),
        "" | "auto" => {
            if std::env::var_os(ENV_NAME).is_some_and(|v| !v.is_empty()) {
                ShmBackend::from_env().map(Comm::Shm)
            } else {
                Ok(Comm::Local(LocalBackend))
            }
        }
        other => Err(BackendError::InvalidBackend {
            requested: other.to_string(),
            available: available_backends(),
        }),
    }
}

impl Communicator for Comm {
    fn allgatherv<T: CommData>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<(), CommError> {
        match self {
            Self::Shm(c) => c.allgatherv(send, recv, counts, displs),
            Self::Local(c) => c.allgatherv(send, recv, counts, displs),
        }
    }

    fn allreduce<T: CommData>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        match self {
            Self::Shm(c) => c.allreduce(send, recv, op),
            Self::Local(c) => c.allreduce(send, recv, op),
        }
    }

    fn broadcast<T: CommData>(&self, buf: &mut [T], root: usize) -> Result<(), CommError> {
        match self {
            Self::Shm(c) => c.broadcast(buf, root),
            Self::Local(c) => c.broadcast(buf, root),
        }
    }

    fn barrier(&self) -> Result<(), CommError> {
        match self {
            Self::Shm(c) => c.barrier(),
            Self::Local(c) => c.barrier(),
        }
    }

    fn rank(&self) -> usize {
        match self {
            Self::Shm(c) => c.rank(),
            Self::Local(c) => c.rank(),
        }
    }

    fn size(&self) -> usize {
        match self {
            Self::Shm(c) => c.size(),
            Self::Local(c) => c.size(),
        }
    }

    fn abort(&self, error_code: i32) -> ! {
        match self {
            Self::Shm(c) => c.abort(error_code),
            Self::Local(c) => c.abort(error_code),
        }
    }
}

/// A shared region of whichever backend [`Comm`] holds.
pub enum CommRegion<T: CommData> {
    /// A POSIX shared-memory region (one copy per node).
    Shm(ShmRegion<T>),
    /// A private heap copy (local backend).
    Heap(HeapRegion<T>),
}

impl<T: CommData> std::fmt::Debug for CommRegion<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shm(r) => r.fmt(f),
            Self::Heap(r) => write!(f, "HeapRegion({} elements)", r.as_slice().len()),
        }
    }
}

impl<T: CommData> SharedRegion<T> for CommRegion<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Self::Shm(r) => r.as_slice(),
            Self::Heap(r) => r.as_slice(),
        }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Self::Shm(r) => r.as_mut_slice(),
            Self::Heap(r) => r.as_mut_slice(),
        }
    }

    fn fence(&self) -> Result<(), CommError> {
        match self {
            Self::Shm(r) => r.fence(),
            Self::Heap(r) => r.fence(),
        }
    }
}

impl SharedMemoryProvider for Comm {
    type Region<T: CommData> = CommRegion<T>;

    fn create_shared_region<T: CommData>(
        &self,
        count: usize,
    ) -> Result<Self::Region<T>, CommError> {
        match self {
            Self::Shm(c) => c.create_shared_region(count).map(CommRegion::Shm),
            Self::Local(c) => c.create_shared_region(count).map(CommRegion::Heap),
        }
    }

    fn split_local(&self) -> Result<LocalCommKind, CommError> {
        match self {
            Self::Shm(c) => c.split_local(),
            Self::Local(c) => c.split_local(),
        }
    }

    fn is_leader(&self) -> bool {
        match self {
            Self::Shm(c) => c.is_leader(),
            Self::Local(c) => c.is_leader(),
        }
    }
}

impl TopologyProvider for Comm {
    fn topology(&self) -> &ExecutionTopology {
        match self {
            Self::Shm(c) => c.topology(),
            Self::Local(c) => c.topology(),
        }
    }
}
