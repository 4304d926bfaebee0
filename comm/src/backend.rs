//! `ShmBackend`: the cobre-comm 0.18 traits over a job's shared segments.
#![forbid(unsafe_code)]

use std::sync::Arc;

use cobre_comm::{
    BackendError, BackendKind, CommData, CommError, Communicator, ExecutionTopology, HostInfo,
    LocalBackend, LocalCommKind, LocalCommunicator, ReduceOp, SharedMemoryProvider, SlurmJobInfo,
    TopologyProvider,
};

use crate::config::{BarrierChoice, MemPolicy, ShmConfig};
use crate::error::{collective_failed, ShmError};
use crate::job::Job;
use crate::plain;
use crate::region::{self, ShmRegion};

/// A rank of a single-node job whose ranks communicate through POSIX shared
/// memory. Cheap to clone (the clones share one attachment).
///
/// Collective calls of one rank must not overlap (cobre-comm's contract):
/// a call made while another thread of the same process is inside one —
/// through this handle, a clone, its [`ShmLocalComm`] or one of its regions
/// — fails at once with `CommError::CollectiveFailed`.
#[derive(Clone)]
pub struct ShmBackend {
    job: Arc<Job>,
    topology: Arc<ExecutionTopology>,
}

impl std::fmt::Debug for ShmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmBackend")
            .field("rank", &self.job.rank)
            .field("size", &self.job.size)
            .field("name", &self.job.control.name())
            .finish()
    }
}

impl ShmBackend {
    /// Attach to the job described by the `COBRE_SHM_*` environment
    /// variables (see [`crate::config`]): `COBRE_SHM_NAME`, `COBRE_SHM_RANK`,
    /// `COBRE_SHM_SIZE`, optional `COBRE_SHM_TIMEOUT_SECS` (a hard bound on
    /// waits; none by default), `COBRE_SHM_ATTACH_TIMEOUT_SECS` (default 120)
    /// and `COBRE_SHM_STOPPED_SECS` (default 10).
    /// Without `COBRE_SHM_CREATOR_PID` (set by the launcher), rank 0 creates
    /// the control segment (`O_EXCL`, mode 0600) and the others open it.
    ///
    /// # Errors
    /// `MissingConfiguration` naming missing variables; `InitializationFailed`
    /// with a [`ShmError`] source for everything else.
    pub fn from_env() -> Result<Self, BackendError> {
        Self::attach(&ShmConfig::from_env()?)
    }

    /// Attach with an explicit configuration.
    ///
    /// # Errors
    /// `InitializationFailed` with a [`ShmError`] source.
    pub fn attach(cfg: &ShmConfig) -> Result<Self, BackendError> {
        // A rank that gets `kill -SEGV` must die as a crash, not carry on.
        crate::os::process::make_sent_faults_fatal();
        let job = Job::attach(cfg)?;
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let slurm = std::env::var("SLURM_JOB_ID")
            .ok()
            .map(|job_id| SlurmJobInfo {
                job_id,
                node_list: std::env::var("SLURM_JOB_NODELIST").ok(),
                cpus_per_task: std::env::var("SLURM_CPUS_PER_TASK")
                    .ok()
                    .and_then(|v| v.parse().ok()),
            });
        let topology = ExecutionTopology {
            backend: BackendKind::Auto,
            world_size: job.size,
            hosts: vec![HostInfo {
                hostname: if hostname.is_empty() {
                    "localhost".into()
                } else {
                    hostname
                },
                ranks: (0..job.size).collect(),
            }],
            mpi: None,
            slurm,
        };
        Ok(Self {
            job: Arc::new(job),
            topology: Arc::new(topology),
        })
    }

    /// `"shm"`. cobre-comm 0.18's `BackendKind` has no shared-memory variant,
    /// so [`TopologyProvider::topology`] reports `BackendKind::Auto`, which
    /// cobre-comm also uses for backends it does not know by name.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        "shm"
    }

    /// The smallest `allgatherv` (bytes gathered) moved by
    /// single-copy cross-memory reads, or `None` when this job moves
    /// everything through the staging buffers (one rank, reads not
    /// permitted, or `COBRE_SHM_CMA_MIN_BYTES=0`).
    #[must_use]
    pub fn single_copy_min_bytes(&self) -> Option<usize> {
        self.job.cma.as_ref().map(|c| c.min_bytes)
    }

    /// The barrier shape this job meets at, with the start-up timings when
    /// it measured both (`COBRE_SHM_BARRIER`).
    #[must_use]
    pub fn barrier_choice(&self) -> BarrierChoice {
        self.job.barrier_choice()
    }

    /// CPUs the job counts on, the same on every rank:
    /// `COBRE_SHM_JOB_CPUS` when given (the launcher gives it), else how many
    /// ranks their affinity masks, compared at attach, leave a CPU of their
    /// own (at most the job's size), else the fewest CPUs of any rank's
    /// cpuset. When ranks outnumber it they yield instead of spinning.
    #[must_use]
    pub fn job_cpus(&self) -> usize {
        self.job.cpus
    }

    /// Bytes of each of the job's two staging buffers (chosen by the
    /// segment's creator, [`ShmConfig::staging`]).
    #[must_use]
    pub fn staging_bytes(&self) -> usize {
        self.job.control.layout().staging_bytes
    }

    /// Name of the job's control segment.
    #[must_use]
    pub fn segment_name(&self) -> &str {
        self.job.control.name()
    }

    /// Memory policy applied to every shared region of the job.
    #[must_use]
    pub fn mempolicy(&self) -> MemPolicy {
        self.job.mempolicy
    }

    /// The intra-node communicator: on one node it is the whole job, with
    /// this process's rank and the job's size. Use this instead of
    /// [`SharedMemoryProvider::split_local`], which cannot express it.
    #[must_use]
    pub fn local_comm(&self) -> ShmLocalComm {
        ShmLocalComm {
            job: Arc::clone(&self.job),
        }
    }
}

impl From<ShmError> for CommError {
    fn from(e: ShmError) -> Self {
        collective_failed("init", e.to_string())
    }
}

impl Communicator for ShmBackend {
    fn allgatherv<T: CommData>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<(), CommError> {
        plain::check::<T>("allgatherv")?;
        self.job.serial("allgatherv", || {
            self.job.allgatherv(send, recv, counts, displs)
        })
    }

    fn allreduce<T: CommData>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        plain::check::<T>("allreduce")?;
        self.job
            .serial("allreduce", || self.job.allreduce(send, recv, op))
    }

    fn broadcast<T: CommData>(&self, buf: &mut [T], root: usize) -> Result<(), CommError> {
        plain::check::<T>("broadcast")?;
        self.job
            .serial("broadcast", || self.job.broadcast(buf, root))
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.job.user_barrier()
    }

    fn rank(&self) -> usize {
        self.job.rank
    }

    fn size(&self) -> usize {
        self.job.size
    }

    /// Record the abort in the control segment (every waiting rank fails
    /// within milliseconds with `CollectiveFailed` naming this rank and
    /// code), stop the other ranks with SIGTERM when no launcher supervises
    /// the job (a launcher does it itself), and exit with `error_code`.
    fn abort(&self, error_code: i32) -> ! {
        self.job.abort_and_exit(error_code)
    }
}

impl SharedMemoryProvider for ShmBackend {
    type Region<T: CommData> = ShmRegion<T>;

    /// Collective: every rank must call it, in the same order, with the same
    /// `count`. See [`ShmRegion`] for what each rank may read and write.
    /// Element types that are not plain data are refused (see
    /// [`crate::plain`]) before anything is created.
    fn create_shared_region<T: CommData>(
        &self,
        count: usize,
    ) -> Result<Self::Region<T>, CommError> {
        region::create(&self.job, count)
    }

    /// cobre-comm 0.18's `LocalCommKind` is a closed enum with no variant for
    /// a multi-rank shared-memory communicator. So this returns
    /// `LocalCommKind::Local` only when the job has one rank (which is then
    /// exactly right), and otherwise an error pointing to
    /// [`ShmBackend::local_comm`], rather than a communicator that would
    /// report a wrong rank or size.
    fn split_local(&self) -> Result<LocalCommKind, CommError> {
        if self.job.size == 1 {
            return Ok(LocalCommKind::Local(LocalBackend));
        }
        Err(collective_failed(
            "split_local",
            format!(
                "cobre-comm 0.18's LocalCommKind cannot represent the {}-rank shared-memory \
                 communicator; use ShmBackend::local_comm() (rank {} of {} on this node)",
                self.job.size, self.job.rank, self.job.size
            ),
        ))
    }

    fn is_leader(&self) -> bool {
        self.job.rank == 0
    }
}

impl TopologyProvider for ShmBackend {
    fn topology(&self) -> &ExecutionTopology {
        &self.topology
    }
}

/// The intra-node communicator of a shared-memory job (all of its ranks).
#[derive(Clone)]
pub struct ShmLocalComm {
    job: Arc<Job>,
}

impl std::fmt::Debug for ShmLocalComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmLocalComm")
            .field("rank", &self.job.rank)
            .field("size", &self.job.size)
            .finish()
    }
}

impl LocalCommunicator for ShmLocalComm {
    fn rank(&self) -> usize {
        self.job.rank
    }

    fn size(&self) -> usize {
        self.job.size
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.job.user_barrier()
    }
}
