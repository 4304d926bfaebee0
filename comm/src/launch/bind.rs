//! Binding the calling process to CPUs and a memory node (what the
//! launcher does in each forked rank before it runs).
#![forbid(unsafe_code)]

use crate::machine::format_list;
use crate::os::{libnuma, numa};

/// Pin the calling process (all its future threads) to `cpus`.
///
/// # Errors
/// A message with the errno of `sched_setaffinity`.
pub fn bind_cpus(cpus: &[u32]) -> Result<(), String> {
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        set.set(c as usize)
            .map_err(|e| format!("CPU {c} cannot be pinned: {e}"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| format!("sched_setaffinity to CPUs {}: {e}", format_list(cpus)))
}

/// How a memory binding was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemBinding {
    /// libnuma `numa_set_preferred`.
    LibNumaPreferred,
    /// libnuma `numa_set_membind`.
    LibNumaBind,
    /// The `set_mempolicy(MPOL_PREFERRED)` syscall (libnuma absent).
    Syscall,
}

/// Make `node` the calling thread's memory node (inherited by threads it
/// creates later): strictly (`membind`) or as a preference that falls back
/// to other nodes when `node` is full.
///
/// # Errors
/// A message with the errno when libnuma is absent and the syscall fails.
pub fn bind_memory(node: u32, strict: bool) -> Result<MemBinding, String> {
    if let Some(lib) = libnuma::get() {
        if strict {
            lib.set_membind(node);
            return Ok(MemBinding::LibNumaBind);
        }
        lib.set_preferred(node);
        return Ok(MemBinding::LibNumaPreferred);
    }
    numa::set_preferred_node(node)
        .map(|()| MemBinding::Syscall)
        .map_err(|e| format!("set_mempolicy(MPOL_PREFERRED, node {node}): {e}"))
}
