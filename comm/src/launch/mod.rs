//! The launcher's face of the communicator: what a program that starts and
//! supervises ranks needs, and a rank program never does — a fresh job
//! name, the control segment (create it, raise the abort word, read why a
//! job stopped), forking while single-threaded, binding a rank to its CPUs
//! and memory node, and removing a job's segments afterwards.
//!
//! Rank programs use the crate root ([`crate::create_communicator`],
//! regions, collectives); facts about the machine are in [`crate::machine`].
#![forbid(unsafe_code)]

mod bind;

pub use bind::{bind_cpus, bind_memory, MemBinding};

pub use crate::cleanup::{
    remove_dead, remove_job, scan, FoundSegment, HEADERLESS_GRACE, LAUNCHER_PREFIX,
};
pub use crate::control::{describe_abort, AbortSpec, Control, NO_RANK};
pub use crate::os::process::{
    descendants, die_with_parent, fork_single_threaded, make_sent_faults_fatal, orphans_of, state,
    Forked,
};
pub use crate::os::segment::{Segment, SHM_DIR};
pub use crate::wait::poll_until;

/// A run-unique control segment name, `/cobre-shm.<pid>.<32 hex>`: the
/// launcher's pid (so `clean` can tell whose it was) and 128 random bits
/// from the kernel (so no other user can predict it).
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn job_name() -> Result<String, String> {
    let random = crate::random::hex::<2>()
        .map_err(|e| format!("cannot read random bits from /dev/urandom: {e}"))?;
    Ok(format!("/{LAUNCHER_PREFIX}{}.{random}", std::process::id()))
}

/// Most threads of a whole job per online CPU: more are refused before a
/// job starts (the launcher's limit, which `bench` checks rank counts
/// against too).
pub const MAX_THREADS_PER_CPU: usize = 64;
