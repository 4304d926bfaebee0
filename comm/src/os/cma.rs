//! Cross-memory attach: reading another rank's private memory in one copy
//! (`process_vm_readv`), as Open MPI's CMA transport does for large
//! messages. The kernel checks that we may ptrace the peer (same user, and
//! under Yama's `ptrace_scope=1` a declared tracer: every rank declares the
//! launcher, whose descendants — the other ranks — may then read it).

use std::io::IoSliceMut;

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

/// Allow the launcher `launcher` and its descendants (this job's other
/// ranks) to read this process's memory under Yama's relational ptrace
/// scope. Harmless where Yama is absent.
pub fn allow_reads_by_job(launcher: u32) {
    let pid = libc::c_ulong::from(launcher);
    // SAFETY: PR_SET_PTRACER takes one integer argument (a pid) and reads
    // or writes no memory of ours; a failure (e.g. no Yama) only returns
    // an error code, which is ignored: the probe decides whether CMA works.
    let _ = unsafe { libc::prctl(libc::PR_SET_PTRACER, pid, 0, 0, 0) };
}

/// Copy `dst.len()` bytes from address `addr` of process `pid` into `dst`.
///
/// # Errors
/// The kernel's error (e.g. `EPERM` without ptrace permission, `ESRCH` when
/// the process is gone, `EFAULT` for an unmapped address), or `EIO` when the
/// peer's range ends early.
pub fn read(pid: u32, addr: u64, dst: &mut [u8]) -> nix::Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).map_err(|_| nix::Error::ESRCH)?);
    let mut done = 0usize;
    while done < dst.len() {
        let base = usize::try_from(addr)
            .ok()
            .and_then(|a| a.checked_add(done))
            .ok_or(nix::Error::EFAULT)?;
        let len = dst.len() - done;
        let n = process_vm_readv(
            pid,
            &mut [IoSliceMut::new(&mut dst[done..])],
            &[RemoteIoVec { base, len }],
        )?;
        if n == 0 {
            return Err(nix::Error::EIO);
        }
        done += n;
    }
    Ok(())
}
