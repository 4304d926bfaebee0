//! One rank's attachment to a job: attach and validate, clean up on failure,
//! abort.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;
use std::time::Instant;

use cobre_comm::CommError;
use cobre_shm_layout::{rank_lock_byte, AbortKind};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::{validate_name, BarrierChoice, BarrierShape, MemPolicy, ShmConfig};
use crate::control::Control;
use crate::error::ShmError;
use crate::machine;
use crate::os::numa;
use crate::os::segment::Segment;
use crate::sync::{Barrier, Failure, OpKind, Signature, ATTACH_OP};

/// A rank attached to a job's control segment.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) control: Control,
    pub(crate) rank: usize,
    pub(crate) size: usize,
    pub(crate) sync: Barrier,
    /// The barrier shape this job starts with (`Flat`, `Tree` or `Measure`).
    planned: BarrierShape,
    /// Rank 0's start-up timings (flat, tree) when the job measured both.
    barrier_timings: Option<(f64, f64)>,
    /// Pid of the launcher, when one created the job.
    pub(crate) launcher_pid: Option<u32>,
    /// Next shared-region sequence number (identical on every rank).
    pub(crate) region_seq: AtomicU64,
    /// Memory policy of shared regions, from the control segment.
    pub(crate) mempolicy: MemPolicy,
    /// Segment names this rank created that are still linked in `/dev/shm`;
    /// unlinked on failure, abort and drop.
    linked: Mutex<Vec<String>>,
    /// Single-copy reads of peers' memory, when every rank can do them.
    pub(crate) cma: Option<Cma>,
    /// Sizes of the broadcast staging writes this rank makes with non-temporal
    /// stores (its own choice: readers cannot tell the difference).
    pub(crate) stream: std::ops::RangeInclusive<usize>,
    /// Broadcasts of at most this many bytes are eager (the same on every
    /// rank: it follows the configured limit, which the attach handshake
    /// compares, and the CPU count all ranks agree on).
    pub(crate) eager_max: usize,
    /// CPUs the job counts on, the same on every rank (see
    /// [`Job::agree_on_cpus`]); ranks outnumbering it share CPUs.
    pub(crate) cpus: usize,
    /// Whether a thread of this process is inside a collective (see
    /// [`Job::serial`]).
    inside: AtomicBool,
}

/// Clears [`Job::serial`]'s flag when the call ends.
struct Inside<'a>(&'a AtomicBool);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

/// Rounds of [`Job::measure_barrier_shapes`]: each times one batch of
/// either shape.
const SHAPE_ROUNDS: usize = 5;
/// Barriers per timed batch (64 ranks at ≈ 5 µs per flat barrier: about
/// 3 ms for the whole measurement; a few under Miri, which is slow).
const SHAPE_BATCH: usize = if cfg!(miri) { 2 } else { 64 };

/// Cross-memory reads agreed by every rank at attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cma {
    /// Messages of at least this many bytes use them.
    pub(crate) min_bytes: usize,
    /// Every rank's pid, by rank.
    pub(crate) pids: Vec<u32>,
}

impl Job {
    /// Attach as `cfg.rank`: create the control segment (rank 0 without a
    /// launcher) or open it, validate it, claim the rank and run the
    /// handshake barrier. Rank 0 then unlinks the name: from there on the
    /// kernel frees the segment when the last rank exits, however it exits.
    pub(crate) fn attach(cfg: &ShmConfig) -> Result<Self, ShmError> {
        validate_name(&cfg.name).map_err(ShmError::Config)?;
        if cfg.size == 0 || cfg.rank >= cfg.size {
            return Err(ShmError::Config(format!(
                "rank {} is not in 0..{}",
                cfg.rank, cfg.size
            )));
        }
        let deadline = Instant::now()
            .checked_add(cfg.attach_timeout)
            .unwrap_or_else(Instant::now);
        let creating = cfg.creator_pid.is_none() && cfg.rank == 0;
        // Read once: it may read the cgroup files.
        let cpus = cfg.cpus();
        let control = if creating {
            let staging = cfg.staging(cpus, crate::os::segment::shm_free_bytes());
            Control::create(&cfg.name, cfg.size, staging, cfg.mempolicy.code())?
        } else {
            Control::open(&cfg.name, deadline, cfg.creator_pid)?
        };
        let linked = if creating {
            vec![cfg.name.clone()]
        } else {
            Vec::new()
        };
        let mut job = Self::new(control, cfg, cpus, linked);
        if let Err(e) = job.claim_and_handshake(cfg) {
            job.unlink_linked();
            // We attached, so the segment is this job's; with its creator
            // gone nobody else will remove the name.
            if !job.control.creator_alive().unwrap_or(true) {
                let _ = Segment::unlink(&cfg.name);
            }
            return Err(e);
        }
        if job.rank == 0 {
            // Every rank has mapped the segment: the name is no longer needed.
            let _ = Segment::unlink(&cfg.name);
            job.forget_linked(&cfg.name);
        }
        let shared = job
            .agree_on_cpus(cfg, cpus)
            .map_err(|e| ShmError::Aborted(e.to_string()))?;
        job.adopt_cpus(cfg, shared);
        job.cma = job
            .probe_cma(cfg.cma_min_bytes)
            .map_err(|e| ShmError::Aborted(e.to_string()))?;
        if job.planned == BarrierShape::Measure {
            job.barrier_timings = job
                .measure_barrier_shapes()
                .map_err(|e| ShmError::Aborted(e.to_string()))?
                .measured;
        }
        Ok(job)
    }

    /// Time both barrier shapes and switch every rank to the faster one
    /// (`BarrierShape::Measure`). Every rank runs the same barriers in the
    /// same order, [`SHAPE_ROUNDS`] rounds of a batch of
    /// [`SHAPE_BATCH`] flat and a batch of tree barriers (which goes first
    /// alternates), so all switch shapes at the same epochs; a batch's mean
    /// is the period of the whole job's barrier, and the fastest batch of
    /// each shape counts (interference only adds time). Rank 0's figures,
    /// shared bit for bit through one more (flat) barrier, decide the same
    /// way on every rank.
    pub(crate) fn measure_barrier_shapes(&self) -> Result<BarrierChoice, CommError> {
        const OP: &str = "attach (measuring barrier shapes)";
        let sig = Signature::new(OpKind::Attach).mix(0x5_4A9E).finish();
        let mut best = [f64::INFINITY; 2];
        for round in 0..SHAPE_ROUNDS {
            for k in 0..2 {
                let tree = (round + k) % 2 == 1;
                self.sync.set_tree(tree);
                let start = Instant::now();
                for _ in 0..SHAPE_BATCH {
                    self.barrier(sig, OP)?;
                }
                let us = start.elapsed().as_secs_f64() * 1e6 / SHAPE_BATCH as f64;
                best[usize::from(tree)] = best[usize::from(tree)].min(us);
            }
        }
        self.sync.set_tree(false);
        let [flat, tree] =
            self.exchange_words(best.map(f64::to_bits), sig, OP)?[0].map(f64::from_bits);
        self.sync.set_tree(tree < flat);
        Ok(BarrierChoice {
            tree: self.sync.is_tree(),
            measured: Some((flat, tree)),
        })
    }

    /// The shape this job meets at, with the start-up timings when it
    /// measured them.
    pub(crate) fn barrier_choice(&self) -> BarrierChoice {
        BarrierChoice {
            tree: self.sync.is_tree(),
            measured: self.barrier_timings,
        }
    }

    /// The CPUs every rank will count for the job, the same figure on all:
    /// `COBRE_SHM_JOB_CPUS` when the ranks were given it (the launcher gives
    /// every rank its own mask's count; the attach handshake made sure all
    /// ranks have the same); else, when every rank can read its affinity
    /// mask, how many ranks those masks leave a CPU of their own
    /// ([`machine::ranks_with_own_cpu`]: two ranks started by hand under
    /// one `taskset -c 0` share one CPU although their cpuset is larger);
    /// else the smallest [`ShmConfig::cpus`] of any rank (`cpus`, this
    /// rank's). The masks travel in one gather.
    fn agree_on_cpus(&self, cfg: &ShmConfig, cpus: usize) -> Result<usize, CommError> {
        /// Mask words: CPUs 0–1023, what `sched_getaffinity` reports here
        /// (a mask with a CPU above counts as unread).
        const WORDS: usize = 16;
        /// Header words: this rank's `cpus`, mask known (0/1).
        const HEAD: usize = 2;
        if self.size == 1 || cfg.job_cpus.is_some() {
            return Ok(cpus);
        }
        let mut mine = [0u64; HEAD + WORDS];
        mine[0] = cpus as u64;
        let mask = machine::allowed_cpus().and_then(|a| numa::mask_of::<WORDS>(&a));
        if let Some(mask) = mask {
            mine[1] = 1;
            mine[HEAD..].copy_from_slice(&mask);
        }
        let sig = Signature::new(OpKind::Attach).mix(0xAFF1).finish();
        let all = self.exchange_words(mine, sig, "attach (comparing CPU masks)")?;
        if all.iter().any(|w| w[1] == 0) {
            let fewest = all.iter().map(|w| w[0]).min().unwrap_or(1);
            return Ok(usize::try_from(fewest).unwrap_or(cpus).max(1));
        }
        let masks: Vec<Vec<u32>> = all
            .iter()
            .map(|w| {
                (0..WORDS * 64)
                    .filter(|&c| w[HEAD + c / 64] >> (c % 64) & 1 == 1)
                    .filter_map(|c| u32::try_from(c).ok())
                    .collect()
            })
            .collect();
        Ok(machine::ranks_with_own_cpu(&masks).max(1))
    }

    /// Settle the choices that follow the job's CPU count — the wait
    /// policy, the barrier shape, the eager limit — for `cpus`, the figure
    /// [`Self::agree_on_cpus`] gives every rank alike.
    fn adopt_cpus(&mut self, cfg: &ShmConfig, cpus: usize) {
        self.planned = cfg.barrier.resolve(cfg.size, cpus);
        self.sync.set_tree(self.planned == BarrierShape::Tree);
        self.sync.policy = cfg.wait_policy(cpus);
        self.eager_max = cfg.eager_max(cpus);
        self.cpus = cpus;
    }

    /// Whether every rank can read every other rank's memory (same user,
    /// ptrace permission): each rank reads a probe word of its right
    /// neighbour, and the ranks agree (two barriers). The threshold is the
    /// largest any rank asks for; a rank asking for 0 turns reads off.
    fn probe_cma(&self, min_bytes: usize) -> Result<Option<Cma>, CommError> {
        if self.size == 1 {
            return Ok(None);
        }
        if let Some(launcher) = self.launcher_pid {
            crate::os::cma::allow_reads_by_job(launcher);
        }
        let value = 0xC3A0_0000_0000_0000u64 ^ self.rank as u64;
        let word = Box::new(value);
        let addr = std::ptr::from_ref::<u64>(&word) as u64;
        let sig = Signature::new(OpKind::Attach).mix(0xC3A).finish();
        let all = self.exchange_words(
            [u64::from(std::process::id()), addr, value, min_bytes as u64],
            sig,
            ATTACH_OP,
        )?;
        let [pid, peer_addr, peer_value, _] = all[(self.rank + 1) % self.size];
        let mut got = [0u8; 8];
        let ok = min_bytes > 0
            && u32::try_from(pid)
                .ok()
                .is_some_and(|p| crate::os::cma::read(p, peer_addr, &mut got).is_ok())
            && u64::from_ne_bytes(got) == peer_value;
        // The second exchange also keeps `word` alive while peers read it.
        let oks = self.exchange_word(u64::from(ok), sig, ATTACH_OP)?;
        drop(word);
        if oks.contains(&0) {
            return Ok(None);
        }
        Ok(Some(Cma {
            min_bytes: all
                .iter()
                .map(|w| usize::try_from(w[3]).unwrap_or(usize::MAX))
                .max()
                .unwrap_or(usize::MAX),
            pids: all
                .iter()
                .map(|w| u32::try_from(w[0]).unwrap_or(0))
                .collect(),
        }))
    }

    /// The job of `cfg` on `control`, whose ranks share `cpus` CPUs.
    fn new(control: Control, cfg: &ShmConfig, cpus: usize, linked: Vec<String>) -> Self {
        let info = control.info();
        let planned = cfg.barrier.resolve(cfg.size, cpus);
        let tree = planned == BarrierShape::Tree;
        Self {
            rank: cfg.rank,
            size: cfg.size,
            sync: Barrier::new(cfg.rank, cfg.size, cfg.wait_policy(cpus), tree),
            planned,
            barrier_timings: None,
            launcher_pid: cfg.creator_pid,
            region_seq: AtomicU64::new(0),
            mempolicy: MemPolicy::from_code(info.mempolicy, info.mempolicy_node)
                .unwrap_or_default(),
            linked: Mutex::new(linked),
            control,
            cma: None,
            // Miri's isolation forbids reading sysfs: the fallback maximum.
            stream: cfg.stream_range(if cfg!(miri) {
                None
            } else {
                machine::l2_cache_bytes()
            }),
            eager_max: cfg.eager_max(cpus),
            cpus,
            inside: AtomicBool::new(false),
        }
    }

    /// A rank of an in-memory job whose "ranks" are threads of this process
    /// (tests under Miri): no attach handshake, no liveness locks.
    #[cfg(test)]
    pub(crate) fn in_memory(
        control: Control,
        rank: usize,
        size: usize,
        barrier: crate::config::BarrierShape,
    ) -> Self {
        let mut cfg = ShmConfig::new("/in-memory", rank, size);
        cfg.barrier = barrier;
        // The whole slot, whatever this machine's CPU count: protocol tests
        // cover every eager size.
        cfg.eager_max_bytes = Some(cobre_shm_layout::EAGER_BYTES);
        // The online CPUs, not the cpuset: Miri cannot open cgroup files.
        let cpus = machine::online_cpus();
        Self::new(control, &cfg, cpus, Vec::new())
    }

    fn claim_and_handshake(&self, cfg: &ShmConfig) -> Result<(), ShmError> {
        let ctl = &self.control;
        let me = std::process::id();
        if ctl.is_aborted() {
            return Err(ShmError::Aborted(ctl.abort_message()));
        }
        let segment_size = ctl.header().world_size as usize;
        if segment_size != cfg.size {
            return Err(self.refuse(ShmError::WorldSizeMismatch {
                name: cfg.name.clone(),
                segment: segment_size,
                mine: cfg.size,
                rank: cfg.rank,
            }));
        }
        let slot_pid = ctl.slot_pid(cfg.rank);
        let duplicate = |pid| ShmError::DuplicateRank {
            name: cfg.name.clone(),
            rank: cfg.rank,
            pid,
        };
        if !ctl.segment().try_lock_byte(rank_lock_byte(cfg.rank))? {
            return Err(self.refuse(duplicate(slot_pid.load(Acquire))));
        }
        if let Err(previous) = slot_pid.compare_exchange(0, me, SeqCst, SeqCst) {
            return Err(self.refuse(duplicate(previous)));
        }
        // Ranks configured to meet at differently shaped barriers, to send
        // a broadcast eagerly that a peer stages, or told different CPU
        // counts, stop here with a mismatch instead of waiting for each
        // other forever. What follows from the CPU count is settled after
        // this, from one figure all ranks agree on (`agree_on_cpus`).
        let sig = Signature::new(OpKind::Attach)
            .mix(cfg.size as u64)
            .mix(cfg.barrier as u64)
            .mix(cfg.eager_max_bytes.map_or(u64::MAX, |b| b as u64))
            .mix(cfg.job_cpus.map_or(u64::MAX, |n| n as u64))
            .finish();
        let deadline = Instant::now().checked_add(cfg.attach_timeout);
        self.sync
            .wait_until(ctl, sig, ATTACH_OP, deadline)
            .map_err(|e| match e.failure {
                Failure::Timeout => ShmError::Timeout(format!(
                    "all {} ranks to attach to {} within {:.0} s (COBRE_SHM_ATTACH_TIMEOUT_SECS): {}",
                    cfg.size,
                    cfg.name,
                    cfg.attach_timeout.as_secs_f64(),
                    e.message
                )),
                _ => ShmError::Aborted(e.message),
            })
    }

    /// Abort the job because this process cannot attach, so every rank
    /// learns why at once; returns `err` for this process.
    fn refuse(&self, err: ShmError) -> ShmError {
        let me = std::process::id();
        self.raise(
            AbortKind::AttachFailed,
            self.rank as u32,
            me,
            0,
            &err.to_string(),
        );
        err
    }

    /// Run the collective call `op` (`call`), refused while another thread
    /// of this process is inside one of this job's collectives.
    /// cobre-comm requires callers to serialize collective calls; two at
    /// once would interleave their steps of the shared protocol, write the
    /// same staging bytes and take each other's data. The second call
    /// fails at once without touching anything shared.
    ///
    /// # Errors
    /// `CollectiveFailed` naming the rule and the fix, or `call`'s error.
    pub(crate) fn serial<R>(
        &self,
        op: &'static str,
        call: impl FnOnce() -> Result<R, CommError>,
    ) -> Result<R, CommError> {
        if self.inside.swap(true, Acquire) {
            return Err(self.overlap(op));
        }
        // Cleared on return and on unwind alike.
        let _inside = Inside(&self.inside);
        call()
    }

    fn overlap(&self, op: &'static str) -> CommError {
        crate::error::collective_failed(
            op,
            format!(
                "another thread of rank {} is inside a collective call on this communicator; \
                 collective calls must not overlap (cobre-comm's contract): make them from one \
                 thread, or hold a Mutex around each call",
                self.rank
            ),
        )
    }

    /// The barrier a program calls (`Communicator::barrier` and the local
    /// communicator's), refused while another thread is inside a collective.
    ///
    /// # Errors
    /// As [`Self::serial`] and [`Self::barrier`].
    pub(crate) fn user_barrier(&self) -> Result<(), CommError> {
        let sig = Signature::new(OpKind::Barrier).finish();
        self.serial("barrier", || self.barrier(sig, "barrier"))
    }

    /// Barrier number `epoch + 1` with signature `sig`; `op` names the
    /// collective in errors.
    ///
    /// # Errors
    /// `CollectiveFailed` when the job is aborted, a peer died, the
    /// signatures disagree, or the deadline passes.
    pub(crate) fn barrier(&self, sig: u32, op: &'static str) -> Result<(), CommError> {
        Ok(self.sync.wait(&self.control, sig, op)?)
    }

    /// Before a collective writes staging or inline areas: wait, if eager
    /// broadcasts came since the last full barrier, until no peer still
    /// reads what came before them (see [`Barrier::settle`]).
    ///
    /// # Errors
    /// As [`Self::barrier`].
    pub(crate) fn settle(&self, op: &'static str) -> Result<(), CommError> {
        Ok(self.sync.settle(&self.control, op)?)
    }

    /// The epoch reached so far (completed collectives).
    pub(crate) fn epoch(&self) -> u32 {
        self.sync.epoch()
    }

    /// Raise the job's abort record from this rank.
    pub(crate) fn raise(
        &self,
        kind: AbortKind,
        subject_rank: u32,
        subject_pid: u32,
        code: i32,
        reason: &str,
    ) {
        self.sync
            .raise(&self.control, kind, subject_rank, subject_pid, code, reason);
    }

    /// Record a name this rank created and must unlink if the job fails.
    pub(crate) fn remember_linked(&self, name: &str) {
        if let Ok(mut v) = self.linked.lock() {
            v.push(name.to_string());
        }
    }

    /// Forget a name after it was unlinked in the normal course.
    pub(crate) fn forget_linked(&self, name: &str) {
        if let Ok(mut v) = self.linked.lock() {
            v.retain(|n| n != name);
        }
    }

    /// Unlink every name this rank created that is still linked.
    pub(crate) fn unlink_linked(&self) {
        let names = match self.linked.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for name in names {
            let _ = Segment::unlink(&name);
        }
    }

    /// `Communicator::abort`: record the abort, wake everyone, stop the other
    /// ranks when no launcher does it, and exit with `code`.
    pub(crate) fn abort_and_exit(&self, code: i32) -> ! {
        let me = std::process::id();
        let reason = format!("rank {} (pid {me}) called abort({code})", self.rank);
        self.raise(AbortKind::RankAbort, self.rank as u32, me, code, &reason);
        self.unlink_linked();
        if self.launcher_pid.is_none() {
            for r in (0..self.size).filter(|&r| r != self.rank) {
                let pid = self.control.slot_pid(r).load(Acquire);
                if pid != 0 && self.control.rank_alive(r).unwrap_or(false) {
                    if let Ok(p) = i32::try_from(pid) {
                        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
                    }
                }
            }
        }
        eprintln!("cobre-shm: {reason}");
        std::process::exit(code)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.unlink_linked();
    }
}
