//! Errors of the shared-memory backend, with messages that say what to do.
#![forbid(unsafe_code)]

use cobre_comm::{BackendError, CommError};

use crate::os::segment::OsError;

/// Everything that can go wrong while setting up or attaching to a job.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// An OS call failed.
    #[error("{0}")]
    Os(#[from] OsError),

    /// Configuration values are missing or malformed.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The segment name is already in use; nothing was removed.
    #[error(
        "shared-memory segment {name} already exists and belongs to another run: {detail}. \
         Choose another COBRE_SHM_NAME, or remove dead runs' segments with `cobre-shm clean`"
    )]
    AlreadyExists {
        /// Segment name.
        name: String,
        /// What sits there.
        detail: String,
    },

    /// The segment does not start with the cobre-shm magic number.
    #[error("{name} is not a cobre-shm segment (magic {found:#018x}); check COBRE_SHM_NAME")]
    NotCobreSegment {
        /// Segment name.
        name: String,
        /// Magic found.
        found: u64,
    },

    /// `/dev/shm` has no room for a segment.
    #[error(
        "/dev/shm has no room for {name} ({bytes} bytes): {errno}. See `df -h /dev/shm`; free \
         space there, remove dead jobs' segments with `cobre-shm clean`, or lower \
         COBRE_SHM_STAGING_BYTES"
    )]
    NoSpace {
        /// Segment name.
        name: String,
        /// Bytes it needs.
        bytes: usize,
        /// The errno of the reservation (`ENOSPC` when full).
        errno: nix::errno::Errno,
    },

    /// The segment belongs to another user, or others may write it.
    #[error(
        "{name} belongs to user {uid} with mode {mode:o}, not to this user with mode 600: it was \
         not created by this job and is left untouched. Choose another COBRE_SHM_NAME; if it \
         should not be there, ask its owner (or root) to remove /dev/shm{name}"
    )]
    Foreign {
        /// Segment name.
        name: String,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },

    /// The creator speaks another layout version.
    #[error(
        "{name} has layout version {found} (created by pid {creator_pid}) but this build speaks \
         version {expected}: every rank must run the same cobre-shm build",
        expected = cobre_shm_layout::LAYOUT_VERSION
    )]
    VersionMismatch {
        /// Segment name.
        name: String,
        /// Version found.
        found: u32,
        /// Pid of the creator.
        creator_pid: u32,
    },

    /// The creator was built with different type layouts.
    #[error(
        "{name} has layout fingerprint {found:#018x} (created by pid {creator_pid}) but this build \
         has {expected:#018x}: every rank must run the same cobre-shm build",
        expected = cobre_shm_layout::FINGERPRINT
    )]
    FingerprintMismatch {
        /// Segment name.
        name: String,
        /// Fingerprint found.
        found: u64,
        /// Pid of the creator.
        creator_pid: u32,
    },

    /// The segment's contents are inconsistent.
    #[error("{name} is corrupt: {what}")]
    Corrupt {
        /// Segment name.
        name: String,
        /// What is wrong.
        what: String,
    },

    /// The segment's creator is gone.
    #[error(
        "{name} is stale: its creator (pid {pid}) is no longer running. Remove it with \
         `cobre-shm clean` and start the job again with a fresh COBRE_SHM_NAME"
    )]
    Stale {
        /// Segment name.
        name: String,
        /// Creator pid.
        pid: u32,
    },

    /// The segment was created by another process than announced.
    #[error(
        "{name} was created by pid {found}, but COBRE_SHM_CREATOR_PID says {expected}: \
         the segment belongs to another job"
    )]
    WrongCreator {
        /// Segment name.
        name: String,
        /// Creator pid found.
        found: u32,
        /// Creator pid expected.
        expected: u32,
    },

    /// The job was created for another number of ranks.
    #[error(
        "world size mismatch on {name}: the job was created for {segment} ranks but this process \
         (rank {rank}) was started with COBRE_SHM_SIZE={mine}: start every rank with the same size"
    )]
    WorldSizeMismatch {
        /// Segment name.
        name: String,
        /// Size in the segment.
        segment: usize,
        /// Size this process was given.
        mine: usize,
        /// Rank of this process.
        rank: usize,
    },

    /// Two processes claim the same rank.
    #[error(
        "rank {rank} of {name} is already taken by pid {pid}: two processes were started with \
         COBRE_SHM_RANK={rank}"
    )]
    DuplicateRank {
        /// Segment name.
        name: String,
        /// Rank claimed twice.
        rank: usize,
        /// Pid already holding it (0 if unknown).
        pid: u32,
    },

    /// A wait passed its deadline.
    #[error(
        "timed out waiting for {0} (raise COBRE_SHM_ATTACH_TIMEOUT_SECS if ranks start slowly)"
    )]
    Timeout(String),

    /// The job was aborted while attaching.
    #[error("{0}")]
    Aborted(String),
}

impl From<ShmError> for BackendError {
    fn from(e: ShmError) -> Self {
        match e {
            ShmError::Config(msg) => BackendError::InitializationFailed {
                backend: "shm".to_string(),
                source: msg.into(),
            },
            other => BackendError::InitializationFailed {
                backend: "shm".to_string(),
                source: Box::new(other),
            },
        }
    }
}

/// A `CommError::CollectiveFailed` for the shm backend (`mpi_error_code` 0).
pub(crate) fn collective_failed(operation: &'static str, message: impl Into<String>) -> CommError {
    CommError::CollectiveFailed {
        operation,
        mpi_error_code: 0,
        message: message.into(),
    }
}
