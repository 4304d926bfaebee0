//! The OS-facing modules: every syscall on shared memory, futexes and NUMA
//! policy lives here, behind safe, bounds-checked functions.

pub mod cma;
pub mod futex;
pub mod libnuma;
pub mod numa;
pub mod process;
pub mod segment;
