//! Start the ranks and supervise them.
//!
//! The launcher creates the job's control segment, then forks every rank
//! while it still has a single thread. Each child first arranges to die with
//! the launcher, binds its CPUs and memory, exports its environment, then
//! either `exec`s the program or runs the engine in place. The launcher
//! blocks SIGCHLD/SIGINT/SIGTERM and waits on a signalfd: on the first rank
//! that fails it marks the job aborted (every rank's wait wakes at once),
//! sends SIGTERM to the others, SIGKILL after a grace period, removes every
//! segment of the job and exits with the failed rank's status.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cobre_shm::config::{self, MemPolicy, ShmConfig};
use cobre_shm::launch::{
    bind_cpus, bind_memory, describe_abort, die_with_parent, fork_single_threaded, orphans_of,
    poll_until, AbortSpec, Control, Forked, LAUNCHER_PREFIX, NO_RANK,
};
use cobre_shm::machine::format_list;
use cobre_shm::WaitPolicy;
use cobre_shm_layout::{AbortKind, AbortRecord, DEFAULT_STAGING_BYTES};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::placement::{Bind, Plan, RankPlacement};

/// What each rank runs.
pub enum Program<'a> {
    /// `exec` this command line.
    Exec(&'a [String]),
    /// Run this function in the forked child; its return value is the exit code.
    Run(&'a dyn Fn(&RankContext) -> i32),
}

/// What a rank run in place knows about itself.
#[derive(Debug, Clone)]
pub struct RankContext {
    /// Where it runs.
    pub placement: RankPlacement,
    /// How to attach to the job.
    pub config: ShmConfig,
}

/// Launch options beyond the plan.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Hard bound on waits between ranks, forwarded to them (none by default).
    pub timeout: Option<Duration>,
    /// Prefix every output line with `[rank r]`.
    pub tag_output: bool,
    /// Memory policy of shared regions.
    pub mempolicy: MemPolicy,
    /// Staging buffer size.
    pub staging_bytes: usize,
    /// Whether `staging_bytes` was chosen by the machine (not by
    /// `COBRE_SHM_STAGING_BYTES`), so a run may lower it to the default to
    /// leave `/dev/shm` to its data.
    pub staging_automatic: bool,
    /// CPUs the whole job may run on, passed to every rank
    /// (`COBRE_SHM_JOB_CPUS`; `None`: the ranks settle it from their masks).
    pub job_cpus: Option<usize>,
    /// Time between SIGTERM and SIGKILL when stopping ranks after a failure.
    pub grace: Duration,
    /// Time ranks get to stop on their own after a forwarded SIGINT/SIGTERM
    /// (the SDDP engine writes a final checkpoint) before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            tag_output: false,
            mempolicy: MemPolicy::FirstTouch,
            staging_bytes: DEFAULT_STAGING_BYTES,
            staging_automatic: true,
            job_cpus: None,
            grace: Duration::from_secs(1),
            stop_grace: Duration::from_secs(60),
        }
    }
}

/// Write `text` and a newline to stderr in one call, so lines of several
/// processes never interleave.
pub fn line(text: &str) {
    let mut buf = String::with_capacity(text.len() + 1);
    buf.push_str(text);
    buf.push('\n');
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}

/// How a rank ended.
#[derive(Clone, Copy, Debug)]
enum End {
    Code(i32),
    Signal(i32),
}

impl End {
    fn failed(self) -> bool {
        !matches!(self, End::Code(0))
    }
    fn exit_code(self) -> i32 {
        match self {
            End::Code(c) => c,
            End::Signal(s) => 128 + s,
        }
    }
    fn describe(self) -> String {
        match self {
            End::Code(c) => format!("exited with code {c}"),
            End::Signal(s) => format!("was killed by {}", signal_name(s)),
        }
    }
}

/// Why the launcher is stopping the job.
#[derive(Clone, Copy, Debug)]
enum Stop {
    RankFailed {
        rank: usize,
        pid: i32,
        end: End,
    },
    /// SIGINT, SIGTERM or SIGHUP: passed on, the ranks may finish.
    Signal(Signal),
    /// A fault signal sent to the launcher: the job ends as a crash.
    Fault(Signal),
}

fn set_env(key: &str, value: &str) {
    std::env::set_var(key, value);
}

fn set_env_default(key: &str, value: &str) {
    if std::env::var_os(key).is_none() {
        set_env(key, value);
    }
}

/// The child side, after `fork`. Never returns.
fn child(
    launcher: Pid,
    placement: &RankPlacement,
    plan: &Plan,
    cfg: &ShmConfig,
    program: &Program<'_>,
    output: Option<(OwnedFd, OwnedFd)>,
    blocked: &SigSet,
) -> ! {
    die_with_parent(launcher, Signal::SIGKILL);
    // Its own process group, so stopping the rank stops what it started.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let _ = blocked.thread_unblock();
    if let Some((out, err)) = output {
        let _ = nix::unistd::dup2_stdout(&out);
        let _ = nix::unistd::dup2_stderr(&err);
    }
    let r = placement.rank;
    if plan.bind == Bind::Numa {
        if let Err(e) =
            bind_cpus(&placement.cpus).and_then(|()| bind_memory(placement.node, false).map(|_| ()))
        {
            line(&format!(
                "cobre-shm: rank {r}: cannot bind to node {}: {e}",
                placement.node
            ));
            std::process::exit(1);
        }
    }
    set_env(cobre_shm::ENV_BACKEND, "shm");
    set_env(config::ENV_NAME, &cfg.name);
    set_env(config::ENV_RANK, &r.to_string());
    set_env(config::ENV_SIZE, &cfg.size.to_string());
    set_env(config::ENV_CREATOR_PID, &launcher.to_string());
    if let Some(t) = cfg.timeout {
        set_env(config::ENV_TIMEOUT, &t.as_secs_f64().to_string());
    }
    if let Some(c) = cfg.job_cpus {
        set_env(config::ENV_JOB_CPUS, &c.to_string());
    }
    set_env("COBRE_SHM_NODE", &placement.node.to_string());
    set_env("COBRE_SHM_CPUS", &format_list(&placement.cpus));
    set_env_default("RAYON_NUM_THREADS", &placement.threads.to_string());
    set_env_default("HIGHS_PARALLEL", "false");
    set_env_default("OMP_NUM_THREADS", "1");
    set_env_default("MKL_NUM_THREADS", "1");
    match program {
        Program::Exec(argv) => {
            let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
            line(&format!(
                "cobre-shm: rank {r}: cannot execute {}: {err}",
                argv[0]
            ));
            std::process::exit(127);
        }
        Program::Run(f) => {
            let ctx = RankContext {
                placement: placement.clone(),
                config: ShmConfig {
                    rank: r,
                    ..cfg.clone()
                },
            };
            let code = f(&ctx);
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
    }
}

/// Copy lines from `fd` to stdout or stderr with a `[rank r] ` prefix, one
/// whole line per write.
fn tag_lines(fd: OwnedFd, rank: usize, to_stderr: bool, open: Arc<AtomicUsize>) {
    std::thread::spawn(move || {
        let reader = BufReader::new(std::fs::File::from(fd));
        for line in reader.split(b'\n').map_while(Result::ok) {
            let mut buf = format!("[rank {rank}] ").into_bytes();
            buf.extend_from_slice(&line);
            buf.push(b'\n');
            let _ = if to_stderr {
                std::io::stderr().lock().write_all(&buf)
            } else {
                std::io::stdout().lock().write_all(&buf)
            };
        }
        open.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Start the plan's ranks running `program` and supervise them. Returns the
/// launcher's exit code.
///
/// # Errors
/// A message when the job cannot be started at all.
pub fn launch(plan: &Plan, program: &Program<'_>, opts: &LaunchOptions) -> Result<i32, String> {
    let n = plan.ranks.len();
    // Whatever a rank starts and abandons becomes ours, so we can end it.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let name = cobre_shm::launch::job_name()?;
    let _ = cobre_shm::launch::remove_dead(LAUNCHER_PREFIX);
    let control = Control::create(&name, n, opts.staging_bytes, opts.mempolicy.code())
        .map_err(|e| format!("cannot create the job's control segment: {e}"))?;
    let mut cfg = ShmConfig::new(&name, 0, n);
    cfg.timeout = opts.timeout;
    cfg.creator_pid = Some(std::process::id());
    cfg.job_cpus = opts.job_cpus;

    let mut signals = SigSet::empty();
    // Sent fault signals come through the signalfd too (a real fault of
    // the launcher still kills it: the kernel forces those through).
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGSEGV,
        Signal::SIGBUS,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let launcher = nix::unistd::getpid();
    let mut pids: Vec<Pid> = Vec::with_capacity(n);
    let mut readers = Vec::new();
    let mut start_error = None;
    for placement in &plan.ranks {
        let pipes = if opts.tag_output {
            let out = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
            let err = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
            Some((out, err))
        } else {
            None
        };
        match fork_single_threaded() {
            Ok(Forked::Child) => {
                // The child must not keep the launcher's descriptors: the
                // read ends of earlier ranks' pipes and the signal mask are
                // dealt with here; the control segment fd is CLOEXEC (exec)
                // or simply unused (run in place).
                readers.clear();
                let output = pipes.map(|((_, w_out), (_, w_err))| (w_out, w_err));
                child(launcher, placement, plan, &cfg, program, output, &signals)
            }
            Ok(Forked::Parent(pid)) => {
                pids.push(pid);
                if let Some(((r_out, _), (r_err, _))) = pipes {
                    readers.push((placement.rank, r_out, r_err));
                }
            }
            Err(e) => {
                start_error = Some(e);
                break;
            }
        }
    }
    let open = Arc::new(AtomicUsize::new(0));
    for (rank, out, err) in readers {
        open.fetch_add(2, Ordering::SeqCst);
        tag_lines(out, rank, false, Arc::clone(&open));
        tag_lines(err, rank, true, Arc::clone(&open));
    }
    let sfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let code = supervise(
        &control,
        &pids,
        &sfd,
        (opts.grace, opts.stop_grace),
        start_error,
    );
    drop(control);
    let _ = cobre_shm::launch::remove_job(&name);
    // Give the output threads a moment to drain what the ranks wrote.
    let drain = WaitPolicy::sleepy(Duration::from_millis(5), Duration::from_millis(500));
    let _ = poll_until(&drain, || (open.load(Ordering::SeqCst) == 0).then_some(()));
    Ok(code)
}

/// The launcher's view of its ranks while they run.
struct Supervisor<'a> {
    control: &'a Control,
    pids: &'a [Pid],
    ends: Vec<Option<End>>,
    stop: Option<Stop>,
    /// Ranks still running when the stop began.
    stopped: usize,
    kill_at: Option<Instant>,
    killed: bool,
    grace: Duration,
    /// The abort record the ranks left when the stop began.
    first_abort: Option<AbortRecord>,
    /// How long ranks may take to stop on a forwarded signal.
    stop_grace: Duration,
    /// Abort the job in shared memory when the kill deadline comes.
    abort_at_kill: bool,
}

impl Supervisor<'_> {
    fn live(&self) -> usize {
        self.ends.iter().filter(|e| e.is_none()).count()
    }

    /// Signal every live rank's process group (the rank and whatever it
    /// started).
    fn signal_live(&self, sig: Signal) {
        for (p, end) in self.pids.iter().zip(&self.ends) {
            if end.is_none() {
                let _ = kill(Pid::from_raw(-p.as_raw()), sig);
                let _ = kill(*p, sig);
            }
        }
    }

    /// Abort the job in shared memory, tell the live ranks, start the grace period.
    fn begin_stop(&mut self, why: Stop) {
        match (self.stop, why) {
            // A second signal: the user does not want to wait.
            (Some(Stop::Signal(_)), Stop::Signal(_)) => {
                self.abort_all("the launcher received a second signal", NO_RANK, 0, 130);
                self.signal_live(Signal::SIGKILL);
                self.killed = true;
                return;
            }
            (Some(_), _) => return,
            (None, _) => {}
        }
        self.stop = Some(why);
        self.stopped = self.live();
        // What the ranks recorded, before the launcher's own abort.
        self.first_abort = self.control.abort_record();
        match why {
            Stop::RankFailed { rank, pid, end } => {
                let reason = format!("rank {rank} (pid {pid}) {}", end.describe());
                self.abort_all(&reason, rank as u32, pid as u32, end.exit_code());
                self.signal_live(Signal::SIGTERM);
                self.kill_at = Some(Instant::now() + self.grace);
            }
            Stop::Fault(s) => {
                let reason = format!("the launcher received {}", s.as_str());
                self.abort_all(&reason, NO_RANK, 0, 128 + s as i32);
                self.signal_live(Signal::SIGTERM);
                self.kill_at = Some(Instant::now() + self.grace);
            }
            Stop::Signal(s) => {
                // Pass the signal on and let the ranks finish on their own
                // (the SDDP engine writes a checkpoint); only when they do not
                // within the stop grace does the job abort and die.
                self.signal_live(s);
                self.kill_at = Some(Instant::now() + self.stop_grace);
                self.abort_at_kill = true;
            }
        }
    }

    /// Mark the job aborted in shared memory: every waiting rank wakes and fails.
    fn abort_all(&self, reason: &str, subject: u32, pid: u32, code: i32) {
        self.control.raise_abort(&AbortSpec {
            kind: AbortKind::Launcher,
            subject_rank: subject,
            raised_by: NO_RANK,
            subject_pid: pid,
            code,
            reason,
        });
    }

    /// Reap every rank that ended; a failure stops the job.
    fn reap(&mut self) {
        let mut failed = Vec::new();
        loop {
            let (pid, end) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, End::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, End::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some(rank) = self.pids.iter().position(|p| *p == pid) else {
                continue;
            };
            self.ends[rank] = Some(end);
            if end.failed() {
                failed.push(Stop::RankFailed {
                    rank,
                    pid: pid.as_raw(),
                    end,
                });
            }
        }
        if let Some(cause) = self.cause_of(&failed) {
            self.begin_stop(cause);
        }
    }

    /// Which of the failures reaped together started it: when a rank failed
    /// because it saw another one die (both reaped at once, in the order
    /// `waitpid` returns them), the abort record the ranks left names the
    /// one that died first.
    fn cause_of(&self, failed: &[Stop]) -> Option<Stop> {
        let first = *failed.first()?;
        if failed.len() == 1 || self.stop.is_some() {
            return Some(first);
        }
        let subject = self
            .control
            .abort_record()
            .map(|rec| rec.subject_rank as usize);
        Some(
            failed
                .iter()
                .copied()
                .find(|f| matches!(f, Stop::RankFailed { rank, .. } if Some(*rank) == subject))
                .unwrap_or(first),
        )
    }

    /// How long to wait for the next event.
    fn poll_timeout(&mut self) -> PollTimeout {
        match self.kill_at {
            Some(at) if !self.killed => {
                if Instant::now() >= at {
                    if self.abort_at_kill {
                        self.abort_all(
                            "the ranks did not stop in time after a signal",
                            NO_RANK,
                            0,
                            137,
                        );
                    }
                    self.signal_live(Signal::SIGKILL);
                    self.killed = true;
                    return PollTimeout::from(100u16);
                }
                let ms = at
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(1000);
                PollTimeout::from(u16::try_from(ms).unwrap_or(1000).max(1))
            }
            _ => PollTimeout::from(1000u16),
        }
    }

    /// The launcher's exit code, after printing one line about a failure.
    fn outcome(&self) -> i32 {
        let s = self.stopped;
        let plural = if s == 1 { "" } else { "s" };
        match self.stop {
            None => 0,
            Some(Stop::RankFailed { rank, pid, end }) => {
                // A rank that failed because a peer stopped (or died) is not
                // the culprit: name the peer, as the abort record does.
                let culprit = self
                    .first_abort
                    .as_ref()
                    .filter(|r| {
                        matches!(
                            AbortKind::from_u32(r.kind),
                            Some(AbortKind::RankStopped | AbortKind::RankDied | AbortKind::Timeout)
                        ) && r.raised_by != NO_RANK
                    })
                    .map(describe_abort);
                match culprit {
                    Some(why) => line(&format!(
                        "cobre-shm: {why}; rank {rank} (pid {pid}) {} and {s} other rank{plural} \
                         were stopped",
                        end.describe()
                    )),
                    None => line(&format!(
                        "cobre-shm: rank {rank} (pid {pid}) {}; stopped {s} other rank{plural}",
                        end.describe()
                    )),
                }
                end.exit_code()
            }
            Some(Stop::Signal(sig) | Stop::Fault(sig)) => {
                line(&format!(
                    "cobre-shm: received {}; stopped {s} rank{plural}",
                    sig.as_str()
                ));
                128 + sig as i32
            }
        }
    }
}

fn supervise(
    control: &Control,
    pids: &[Pid],
    sfd: &SignalFd,
    (grace, stop_grace): (Duration, Duration),
    start_error: Option<String>,
) -> i32 {
    let mut sup = Supervisor {
        control,
        pids,
        ends: vec![None; pids.len()],
        stop: None,
        stopped: 0,
        kill_at: None,
        killed: false,
        grace,
        first_abort: None,
        stop_grace,
        abort_at_kill: false,
    };
    if let Some(e) = &start_error {
        line(&format!("cobre-shm: {e}"));
        sup.begin_stop(Stop::Signal(Signal::SIGTERM));
    }
    loop {
        sup.reap();
        if sup.live() == 0 {
            break;
        }
        let timeout = sup.poll_timeout();
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, timeout);
        while let Ok(Some(info)) = sfd.read_signal() {
            let sig = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM);
            match sig {
                Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP => {
                    sup.begin_stop(Stop::Signal(sig));
                }
                Signal::SIGSEGV | Signal::SIGBUS => sup.begin_stop(Stop::Fault(sig)),
                _ => {}
            }
        }
    }
    sweep_orphans(grace);
    if start_error.is_some() {
        return 1;
    }
    sup.outcome()
}

/// End whatever the ranks started and left behind: the launcher is their
/// subreaper, so they are its children now. SIGTERM, then SIGKILL after
/// `grace`; every one is reaped.
fn sweep_orphans(grace: Duration) {
    let me = nix::unistd::getpid();
    let reap = || {
        while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
            waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))
        {}
    };
    let left = orphans_of(me);
    if left.is_empty() {
        return;
    }
    for &p in &left {
        let _ = kill(p, Signal::SIGTERM);
    }
    let policy = WaitPolicy::sleepy(Duration::from_millis(10), grace);
    let gone = poll_until(&policy, || {
        reap();
        orphans_of(me).is_empty().then_some(())
    });
    if gone.is_none() {
        for p in orphans_of(me) {
            let _ = kill(p, Signal::SIGKILL);
        }
        let policy = WaitPolicy::sleepy(Duration::from_millis(10), Duration::from_secs(2));
        let _ = poll_until(&policy, || {
            reap();
            orphans_of(me).is_empty().then_some(())
        });
    }
}
