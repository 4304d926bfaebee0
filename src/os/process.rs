//! `fork` for the launcher, made safe by checking that the process has a
//! single thread (threads do not survive `fork`, and a lock held by another
//! thread would stay locked forever in the child).

use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};

/// Number of threads of the calling process (`/proc/self/task`).
#[must_use]
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

/// Which side of a fork we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent; the child's pid.
    Parent(Pid),
    /// In the child.
    Child,
}

/// `fork()`, refused unless the calling process has exactly one thread.
///
/// # Errors
/// A message when other threads exist or `fork` fails.
pub fn fork_single_threaded() -> Result<Forked, String> {
    let threads = thread_count();
    if threads != 1 {
        return Err(format!(
            "refusing to fork: the process has {threads} threads (the launcher must fork before \
             starting any thread)"
        ));
    }
    // SAFETY: the process has exactly one thread (checked just above, and
    // this function is the only place that could have started another), so
    // the child inherits no lock held by a thread that does not exist in it.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => Ok(Forked::Parent(child)),
        Ok(ForkResult::Child) => Ok(Forked::Child),
        Err(e) => Err(format!("fork failed: {e}")),
    }
}

/// In a freshly forked child: receive `signal` when the parent dies, and
/// exit at once if `parent` is already gone (it may have died before the
/// request was registered).
pub fn die_with_parent(parent: Pid, signal: Signal) {
    let _ = nix::sys::prctl::set_pdeathsig(signal);
    if nix::unistd::getppid() != parent {
        std::process::exit(128 + signal as i32);
    }
}
