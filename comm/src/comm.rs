//! `create_communicator()`: pick the backend from the environment.
#![forbid(unsafe_code)]

use cobre_comm::{
    BackendError, CommData, CommError, Communicator, ExecutionTopology, HeapRegion, LocalBackend,
    LocalCommKind, ReduceOp, SharedMemoryProvider, SharedRegion, TopologyProvider,
};

use crate::backend::ShmBackend;
use crate::config::{ENV_NAME, ENV_RANK, ENV_SIZE};
use crate::region::ShmRegion;

/// Selects the backend: `shm`, `local`, or `auto` (default).
pub const ENV_BACKEND: &str = "COBRE_COMM_BACKEND";

/// Backend names this build knows.
#[must_use]
pub fn available_backends() -> Vec<String> {
    let mut v = vec!["shm".to_string(), "local".to_string()];
    if cfg!(feature = "mpi") {
        v.insert(0, "mpi".to_string());
    }
    v
}

/// Every backend name `COBRE_COMM_BACKEND` may hold, built in or not.
const KNOWN_BACKENDS: [&str; 4] = ["auto", "mpi", "shm", "local"];

/// Whether the environment shows an MPI launch (`mpiexec`, `mpirun`,
/// `srun`), by the variables those set.
#[must_use]
pub fn mpi_launch_detected() -> bool {
    [
        "PMI_RANK",
        "PMI_SIZE",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "MPI_LOCALRANKID",
        "SLURM_PROCID",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// Initialise MPI and return its communicator (cobre-comm's
/// `FerrompiBackend`, `MPI_THREAD_FUNNELED`).
///
/// # Errors
/// `BackendNotAvailable` when built without the `mpi` feature;
/// `InitializationFailed` when MPI cannot start.
pub fn create_mpi_communicator() -> Result<Comm, BackendError> {
    #[cfg(feature = "mpi")]
    {
        cobre_comm::FerrompiBackend::new().map(|b| Comm::Mpi(Box::new(b)))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err(BackendError::BackendNotAvailable {
            requested: "mpi".to_string(),
            available: available_backends(),
        })
    }
}

/// The communicator a program gets from [`create_communicator`].
pub enum Comm {
    /// Several processes on one node, through POSIX shared memory.
    Shm(ShmBackend),
    /// One process.
    Local(LocalBackend),
    /// MPI processes on one or many nodes (cobre-comm's ferrompi backend).
    #[cfg(feature = "mpi")]
    Mpi(Box<cobre_comm::FerrompiBackend>),
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Comm::{}(rank {} of {})",
            self.backend_name(),
            self.rank(),
            self.size()
        )
    }
}

/// Dispatch `$body` over every variant of [`Comm`], binding the backend to `$c`.
macro_rules! dispatch {
    ($self:expr, $c:ident => $body:expr) => {
        match $self {
            Comm::Shm($c) => $body,
            Comm::Local($c) => $body,
            #[cfg(feature = "mpi")]
            Comm::Mpi($c) => $body,
        }
    };
}

impl Comm {
    /// `"shm"`, `"local"` or `"mpi"`.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Shm(_) => "shm",
            Self::Local(_) => "local",
            #[cfg(feature = "mpi")]
            Self::Mpi(_) => "mpi",
        }
    }
}

/// Choose and initialise the backend from `COBRE_COMM_BACKEND`: `shm`,
/// `local`, `mpi` (with the `mpi` feature), or `auto`/unset/empty: MPI when
/// an MPI launcher started the process (and the feature is on), else shm when
/// `COBRE_SHM_NAME` is set, else local — unless `COBRE_SHM_RANK` or
/// `COBRE_SHM_SIZE` is set, which means a rank of a job whose name is
/// missing (refused, rather than running a job of one).
///
/// # Errors
/// `InvalidBackend` for an unknown name; `BackendNotAvailable` for `mpi`
/// without the feature; `MissingConfiguration` / `InitializationFailed` from
/// the chosen backend.
pub fn create_communicator() -> Result<Comm, BackendError> {
    let requested = std::env::var(ENV_BACKEND).unwrap_or_default();
    match requested.trim() {
        "shm" => ShmBackend::from_env().map(Comm::Shm),
        "local" => Ok(Comm::Local(LocalBackend)),
        "mpi" => create_mpi_communicator(),
        "" | "auto" => {
            let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
            if cfg!(feature = "mpi") && mpi_launch_detected() {
                create_mpi_communicator()
            } else if set(ENV_NAME) {
                ShmBackend::from_env().map(Comm::Shm)
            } else if set(ENV_SIZE) || set(ENV_RANK) {
                // A rank of a multi-rank job without its name would silently
                // run as a job of its own.
                Err(BackendError::MissingConfiguration {
                    backend: "shm".to_string(),
                    missing_vars: vec![ENV_NAME.to_string()],
                })
            } else {
                Ok(Comm::Local(LocalBackend))
            }
        }
        other => Err(BackendError::InvalidBackend {
            requested: other.to_string(),
            available: KNOWN_BACKENDS.iter().map(|s| (*s).to_string()).collect(),
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
        dispatch!(self, c => c.allgatherv(send, recv, counts, displs))
    }

    fn allreduce<T: CommData>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        dispatch!(self, c => c.allreduce(send, recv, op))
    }

    fn broadcast<T: CommData>(&self, buf: &mut [T], root: usize) -> Result<(), CommError> {
        dispatch!(self, c => c.broadcast(buf, root))
    }

    fn barrier(&self) -> Result<(), CommError> {
        dispatch!(self, c => c.barrier())
    }

    fn rank(&self) -> usize {
        match self {
            Self::Shm(c) => Communicator::rank(c),
            Self::Local(c) => Communicator::rank(c),
            #[cfg(feature = "mpi")]
            Self::Mpi(c) => Communicator::rank(c.as_ref()),
        }
    }

    fn size(&self) -> usize {
        match self {
            Self::Shm(c) => Communicator::size(c),
            Self::Local(c) => Communicator::size(c),
            #[cfg(feature = "mpi")]
            Self::Mpi(c) => Communicator::size(c.as_ref()),
        }
    }

    fn abort(&self, error_code: i32) -> ! {
        dispatch!(self, c => c.abort(error_code))
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
            #[cfg(feature = "mpi")]
            Self::Mpi(c) => c.create_shared_region(count).map(CommRegion::Heap),
        }
    }

    fn split_local(&self) -> Result<LocalCommKind, CommError> {
        dispatch!(self, c => c.split_local())
    }

    fn is_leader(&self) -> bool {
        dispatch!(self, c => c.is_leader())
    }
}

impl TopologyProvider for Comm {
    fn topology(&self) -> &ExecutionTopology {
        dispatch!(self, c => c.topology())
    }
}
