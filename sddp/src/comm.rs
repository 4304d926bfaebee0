//! What the engine needs from a communicator beyond the cobre-comm traits.
#![forbid(unsafe_code)]

use cobre_shm::{BlockPublish, Comm};

/// Regions filled by blocks ([`BlockPublish`]) and a name for reports.
pub trait EngineComm: BlockPublish {
    /// Name of the backend, for the summary.
    fn backend_name(&self) -> &'static str;
}

impl EngineComm for Comm {
    fn backend_name(&self) -> &'static str {
        Comm::backend_name(self)
    }
}
