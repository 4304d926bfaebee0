//! The barrier every collective is built on.
//!
//! Each rank owns one arrival word `(epoch << 32) | signature` on its own
//! line. Entering barrier number `e`, a rank stores `(e, sig)` and polls its
//! peers' words until every peer's epoch is at least `e`. That is one line
//! transfer per peer with no shared counter; the stores also publish the data
//! each rank staged before the barrier (release/acquire through the word).
//!
//! A peer whose epoch equals ours but whose signature differs called another
//! collective (or the same with other arguments): the job is aborted with a
//! "collective mismatch" instead of exchanging garbage. A peer already past
//! `e` was checked by that peer itself, so every pair is compared once.
//!
//! Waiting spins for [`WaitPolicy::spin`], then yields the CPU for
//! [`WaitPolicy::yield_for`], then sleeps on the shared futex word `wake` in
//! slices of [`WaitPolicy::check_interval`]. Sleepers register in
//! `sleepers`; a rank that sees the barrier complete wakes them only if that
//! count is non-zero (store-then-load on both sides with `SeqCst`, so either
//! the sleeper sees the last arrival or the waker sees the sleeper). Between
//! slices a sleeper checks the abort word, the liveness of every rank that
//! has attached (their lock bytes) and the job deadline.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::time::{Duration, Instant};

use cobre_comm::CommError;
use cobre_shm_layout::{pack_arrival, unpack_arrival, AbortKind, WAKE_ABORT_BIT};

use crate::control::{AbortSpec, NO_RANK};
use crate::error::collective_failed;
use crate::job::Job;
use crate::os::futex;

/// How long and how a rank waits for its peers. One struct, named values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitPolicy {
    /// Busy-poll budget before yielding (zero when ranks outnumber CPUs).
    pub spin: Duration,
    /// `sched_yield` budget after spinning, before sleeping.
    pub yield_for: Duration,
    /// Longest single futex sleep: how often a sleeper re-checks the abort
    /// word, its peers' liveness and the deadline.
    pub check_interval: Duration,
    /// Overall deadline of any single wait.
    pub timeout: Duration,
}

impl WaitPolicy {
    /// Spin budget when every rank has a CPU of its own.
    pub const SPIN: Duration = Duration::from_micros(50);
    /// Yield budget when every rank has a CPU of its own.
    pub const YIELD: Duration = Duration::from_micros(200);
    /// Yield budget when ranks outnumber CPUs (no spinning then).
    pub const OVERSUBSCRIBED_YIELD: Duration = Duration::from_millis(2);
    /// Sleep slice between liveness checks.
    pub const CHECK_INTERVAL: Duration = Duration::from_millis(20);
    /// Default overall deadline.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// The policy for `world_size` ranks on a machine with `cpus` online CPUs.
    #[must_use]
    pub fn for_world(world_size: usize, cpus: usize, timeout: Duration) -> Self {
        let oversubscribed = world_size > cpus.max(1);
        Self {
            spin: if oversubscribed {
                Duration::ZERO
            } else {
                Self::SPIN
            },
            yield_for: if oversubscribed {
                Self::OVERSUBSCRIBED_YIELD
            } else {
                Self::YIELD
            },
            check_interval: Self::CHECK_INTERVAL,
            timeout,
        }
    }
}

/// Kinds of synchronising operation, mixed into barrier signatures.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum OpKind {
    /// The attach handshake.
    Attach = 1,
    /// `barrier()`.
    Barrier = 2,
    /// `allgatherv`.
    Allgatherv = 3,
    /// `allreduce`.
    Allreduce = 4,
    /// `broadcast`.
    Broadcast = 5,
    /// Shared region creation steps.
    Region = 6,
    /// `SharedRegion::fence`.
    Fence = 7,
}

/// Running FNV-1a hash that builds a barrier signature.
#[derive(Clone, Copy, Debug)]
pub struct Signature(u64);

impl Signature {
    /// Start a signature for `kind`.
    #[must_use]
    pub fn new(kind: OpKind) -> Self {
        Self(0xcbf2_9ce4_8422_2325).mix(kind as u64)
    }

    /// Mix one value in.
    #[must_use]
    pub fn mix(self, v: u64) -> Self {
        self.mix_bytes(&v.to_le_bytes())
    }

    /// Mix in the element type: its name and size.
    #[must_use]
    pub fn element<T>(self) -> Self {
        self.mix(std::mem::size_of::<T>() as u64)
            .mix_bytes(std::any::type_name::<T>().as_bytes())
    }

    fn mix_bytes(self, bytes: &[u8]) -> Self {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self(h)
    }

    /// The 32-bit signature stored in the arrival word.
    #[must_use]
    pub fn finish(self) -> u32 {
        (self.0 ^ (self.0 >> 32)) as u32
    }
}

/// Where a wait stands: spinning, yielding or sleeping.
struct Backoff<'p> {
    policy: &'p WaitPolicy,
    polls: u32,
    spinning: bool,
    start: Option<Instant>,
}

enum Phase {
    Spin,
    Yield,
    Sleep { deadline: Instant },
}

impl<'p> Backoff<'p> {
    fn new(policy: &'p WaitPolicy) -> Self {
        Self {
            policy,
            polls: 0,
            spinning: !policy.spin.is_zero(),
            start: None,
        }
    }

    fn next(&mut self) -> Phase {
        self.polls = self.polls.wrapping_add(1);
        // While spinning, read the clock only every 64 polls.
        if self.spinning && self.start.is_some() && self.polls % 64 != 0 {
            return Phase::Spin;
        }
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let waited = now - start;
        if waited < self.policy.spin {
            Phase::Spin
        } else if waited < self.policy.spin + self.policy.yield_for {
            self.spinning = false;
            Phase::Yield
        } else {
            self.spinning = false;
            Phase::Sleep {
                deadline: start + self.policy.timeout,
            }
        }
    }
}

impl Job {
    /// Barrier number `epoch + 1` with signature `sig`; `op` names the
    /// collective in errors.
    ///
    /// # Errors
    /// `CollectiveFailed` when the job is aborted, a peer died, the
    /// signatures disagree, or the deadline passes.
    pub(crate) fn barrier(&self, sig: u32, op: &'static str) -> Result<(), CommError> {
        let ctl = &self.control;
        let epoch = self.epoch.load(Relaxed).wrapping_add(1);
        ctl.arrival(self.rank)
            .store(pack_arrival(epoch, sig), SeqCst);
        let mut next = 0;
        let mut backoff = Backoff::new(&self.policy);
        loop {
            next = self.scan(next, epoch, sig, op)?;
            if next == self.size {
                break;
            }
            if ctl.wake().load(Relaxed) & WAKE_ABORT_BIT != 0 {
                return Err(self.aborted_error(op));
            }
            match backoff.next() {
                Phase::Spin => std::hint::spin_loop(),
                Phase::Yield => std::thread::yield_now(),
                Phase::Sleep { deadline } => {
                    next = self.sleep_once(next, epoch, sig, op, deadline)?;
                    if next == self.size {
                        break;
                    }
                }
            }
        }
        self.epoch.store(epoch, Relaxed);
        if ctl.sleepers().load(SeqCst) != 0 {
            self.wake_sleepers();
        }
        Ok(())
    }

    /// Advance past every peer (from `from`) that arrived at `epoch`; returns
    /// the first peer still missing, or `size`.
    fn scan(
        &self,
        from: usize,
        epoch: u32,
        sig: u32,
        op: &'static str,
    ) -> Result<usize, CommError> {
        let mut r = from;
        while r < self.size {
            if r != self.rank {
                let (e, s) = unpack_arrival(self.control.arrival(r).load(SeqCst));
                let ahead = e.wrapping_sub(epoch) as i32;
                if ahead < 0 {
                    return Ok(r);
                }
                if ahead == 0 && s != sig {
                    return Err(self.mismatch(op, r));
                }
            }
            r += 1;
        }
        Ok(r)
    }

    fn sleep_once(
        &self,
        next: usize,
        epoch: u32,
        sig: u32,
        op: &'static str,
        deadline: Instant,
    ) -> Result<usize, CommError> {
        let ctl = &self.control;
        ctl.sleepers().fetch_add(1, SeqCst);
        let w = ctl.wake().load(SeqCst);
        let rescanned = self.scan(next, epoch, sig, op);
        if matches!(rescanned, Ok(n) if n < self.size) && w & WAKE_ABORT_BIT == 0 {
            let now = Instant::now();
            let slice = self
                .policy
                .check_interval
                .min(deadline.saturating_duration_since(now));
            if let Err(e) = futex::wait(ctl.wake(), w, slice) {
                ctl.sleepers().fetch_sub(1, SeqCst);
                return Err(collective_failed(op, format!("futex wait failed: {e}")));
            }
        }
        ctl.sleepers().fetch_sub(1, SeqCst);
        let next = self.scan(rescanned?, epoch, sig, op)?;
        if next == self.size {
            return Ok(next);
        }
        if ctl.is_aborted() {
            return Err(self.aborted_error(op));
        }
        self.check_peers_alive(op)?;
        if Instant::now() >= deadline {
            let missing = self.missing_ranks(next, epoch);
            let reason = format!(
                "{op} timed out after {:.1} s at rank {}: ranks {missing:?} never arrived",
                self.policy.timeout.as_secs_f64(),
                self.rank
            );
            self.raise(AbortKind::Timeout, NO_RANK, 0, 0, &reason);
            return Err(collective_failed(op, reason));
        }
        Ok(next)
    }

    /// Fail if any rank that attached has died. While this barrier is
    /// incomplete no peer can have left it cleanly — not even one that
    /// already arrived — so a dead peer means the job cannot finish.
    fn check_peers_alive(&self, op: &'static str) -> Result<(), CommError> {
        for r in (0..self.size).filter(|&r| r != self.rank) {
            let pid = self.control.slot_pid(r).load(Acquire);
            if pid == 0 {
                continue; // not attached yet: only the deadline applies
            }
            if !self.control.rank_alive(r).unwrap_or(true) {
                let reason = format!(
                    "rank {r} (pid {pid}) died while rank {} waited in {op}",
                    self.rank
                );
                self.raise(AbortKind::RankDied, r as u32, pid, 0, &reason);
                return Err(collective_failed(op, self.control.abort_message()));
            }
        }
        Ok(())
    }

    fn missing_ranks(&self, from: usize, epoch: u32) -> Vec<usize> {
        (from..self.size)
            .filter(|&r| r != self.rank)
            .filter(|&r| {
                let (e, _) = unpack_arrival(self.control.arrival(r).load(SeqCst));
                (e.wrapping_sub(epoch) as i32) < 0
            })
            .collect()
    }

    fn mismatch(&self, op: &'static str, peer: usize) -> CommError {
        let reason = format!(
            "collective mismatch: rank {} called {op} while rank {peer} called a different \
             collective or passed different arguments (counts, length, root, op or element type)",
            self.rank
        );
        self.raise(AbortKind::Mismatch, peer as u32, 0, 0, &reason);
        collective_failed(op, self.control.abort_message())
    }

    pub(crate) fn aborted_error(&self, op: &'static str) -> CommError {
        collective_failed(op, self.control.abort_message())
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
        self.control.raise_abort(&AbortSpec {
            kind,
            subject_rank,
            raised_by: self.rank as u32,
            subject_pid,
            code,
            reason,
        });
    }

    fn wake_sleepers(&self) {
        let wake = self.control.wake();
        let _ = wake.fetch_update(SeqCst, SeqCst, |w| {
            Some((w & WAKE_ABORT_BIT) | (w.wrapping_add(1) & !WAKE_ABORT_BIT))
        });
        futex::wake_all(wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_spinning_when_oversubscribed() {
        let p = WaitPolicy::for_world(8, 2, WaitPolicy::DEFAULT_TIMEOUT);
        assert!(p.spin.is_zero());
        assert_eq!(p.yield_for, WaitPolicy::OVERSUBSCRIBED_YIELD);
        let p = WaitPolicy::for_world(2, 2, WaitPolicy::DEFAULT_TIMEOUT);
        assert_eq!(p.spin, WaitPolicy::SPIN);
    }

    #[test]
    fn signatures_separate_kinds_types_and_arguments() {
        let a = Signature::new(OpKind::Allreduce)
            .element::<f64>()
            .mix(4)
            .finish();
        let b = Signature::new(OpKind::Allreduce)
            .element::<u64>()
            .mix(4)
            .finish();
        let c = Signature::new(OpKind::Allreduce)
            .element::<f64>()
            .mix(5)
            .finish();
        let d = Signature::new(OpKind::Broadcast)
            .element::<f64>()
            .mix(4)
            .finish();
        assert!(a != b && a != c && a != d && b != c);
    }
}
