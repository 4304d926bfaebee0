//! Facts about this machine that the launcher, the engines and the
//! benchmarks all read from here: its CPUs (online, the affinity mask, the
//! cpuset), its NUMA topology, and its memory (available, and free in
//! `/dev/shm`).
#![forbid(unsafe_code)]

mod cpus;
mod memory;
mod topology;

pub use cpus::{
    allowed_cpus, cpuset_cpus, format_list, l2_cache_bytes, online_cpus, ranks_with_own_cpu,
};
pub use memory::{mem_available, shm_free_bytes};
pub use topology::{NumaNode, Topology, TopologySource};

pub use crate::os::numa::{nodes_with_memory, parse_list};
