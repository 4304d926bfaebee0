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

/// The state letter of process `pid` as `/proc/<pid>/stat` shows it (`R`
/// running, `S` sleeping, `D` disk wait, `T` stopped, `t` traced, `Z`
/// zombie, ...), or `None` when there is no such process here.
#[must_use]
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Whether process `pid` is stopped by a signal or a debugger.
#[must_use]
pub fn is_stopped(pid: u32) -> bool {
    matches!(state(pid), Some('T' | 't'))
}

/// The signals a hardware fault raises.
const FAULTS: [Signal; 4] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
];

/// The handlers that were installed before [`make_sent_faults_fatal`], by
/// signal number (as raw `sigaction` values, read in signal context).
static PREVIOUS: [std::sync::OnceLock<libc::sigaction>; 4] = [
    std::sync::OnceLock::new(),
    std::sync::OnceLock::new(),
    std::sync::OnceLock::new(),
    std::sync::OnceLock::new(),
];

fn slot(sig: libc::c_int) -> Option<usize> {
    FAULTS.iter().position(|s| *s as libc::c_int == sig)
}

/// Runs in signal context: only async-signal-safe calls.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    let previous = slot(sig).and_then(|i| PREVIOUS[i].get());
    // si_code > 0: raised by the kernel for a real fault. Let the previous
    // handler (e.g. Rust's stack-overflow report) see it.
    if code > 0 {
        if let Some(prev) = previous {
            let h = prev.sa_sigaction;
            if h != libc::SIG_DFL && h != libc::SIG_IGN {
                if prev.sa_flags & libc::SA_SIGINFO != 0 {
                    // SAFETY: `h` was installed as an SA_SIGINFO handler with
                    // exactly this signature, and gets the kernel's arguments.
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        unsafe { std::mem::transmute(h) };
                    f(sig, info, ctx);
                } else {
                    // SAFETY: as above, for a plain one-argument handler.
                    let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
                    f(sig);
                }
                return;
            }
        }
    }
    // Sent with kill (or no previous handler): die of the signal, now.
    // SAFETY: signal() and raise() are async-signal-safe; SIG_DFL makes the
    // raised signal terminate the process once this handler returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Make a fault signal *sent* to this process (`kill -SEGV`) end it as a
/// crash, as a real fault does, while real faults still reach the handler
/// that was there before (Rust's stack-overflow report). Idempotent.
pub fn make_sent_faults_fatal() {
    for (i, sig) in FAULTS.into_iter().enumerate() {
        if PREVIOUS[i].get().is_some() {
            continue;
        }
        // SAFETY: all-zero is a valid `sigaction` (empty mask, no flags).
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_fault as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid for the call. `on_fault` makes
        // only async-signal-safe calls and reads `PREVIOUS` through atomic
        // loads; a signal arriving before `PREVIOUS` is set below finds no
        // previous handler and dies of the default action, the safe outcome.
        let rc = unsafe { libc::sigaction(sig as libc::c_int, &new, &mut old) };
        if rc == 0 {
            let _ = PREVIOUS[i].set(old);
        }
    }
}

/// `pid` and every process below it (the children of each of its threads,
/// their children, …), as `/proc` shows them now.
#[must_use]
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Pids of the live processes whose parent is `parent` (for a child
/// subreaper: the orphans it inherited).
#[must_use]
pub fn orphans_of(parent: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                let mut f = s.rsplit_once(')').map_or("", |x| x.1).split_whitespace();
                let state = f.next();
                let ppid = f.next().and_then(|p| p.parse::<i32>().ok());
                state != Some("Z") && ppid == Some(parent.as_raw())
            })
        })
        .map(Pid::from_raw)
        .collect()
}
