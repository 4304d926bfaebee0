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
//! That is the *flat* shape. The *tree* shape (`COBRE_SHM_BARRIER=tree`,
//! or where the start-up measurement found it faster) uses the same words
//! differently: rank r waits for its children 4r+1…4r+4 and compares their
//! signatures, then stores its arrival — "my subtree is here" — for its
//! parent; rank 0 then stores the release word everyone else waits for.
//!
//! Waiting follows [`crate::wait::Backoff`]: spin, yield, then sleep on the
//! shared futex word `wake`. Sleepers register in `sleepers`; a rank that
//! sees the barrier complete wakes them only if that count is non-zero
//! (store-then-load on both sides with `SeqCst`, so either the sleeper sees
//! the last arrival or the waker sees the sleeper). Between sleeps a sleeper
//! checks the abort word, the liveness of every rank that has attached
//! (their lock bytes) and the job deadline.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::{Duration, Instant};

use cobre_comm::CommError;
use cobre_shm_layout::{pack_arrival, unpack_arrival, AbortKind, WAKE_ABORT_BIT};

use crate::control::{AbortSpec, Control, NO_RANK};
use crate::error::collective_failed;
use crate::os::{futex, process};
use crate::wait::{Backoff, Phase, WaitPolicy};

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
    /// Rank-owned blocks written into a region and published.
    Blocks = 8,
}

/// Running hash that builds a barrier signature: one multiply–xorshift per
/// 64-bit word, so the few words of a collective's arguments cost a few
/// nanoseconds (the signature is computed on every call, on the critical
/// path of small collectives).
#[derive(Clone, Copy, Debug)]
pub struct Signature(u64);

impl Signature {
    /// Odd multiplier of the mix (2^64 / golden ratio).
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    /// Start a signature for `kind`.
    #[must_use]
    pub fn new(kind: OpKind) -> Self {
        Self(0xcbf2_9ce4_8422_2325).mix(kind as u64)
    }

    /// Mix one value in.
    #[must_use]
    pub fn mix(self, v: u64) -> Self {
        let h = (self.0 ^ v).wrapping_mul(Self::K);
        Self(h ^ (h >> 29))
    }

    /// Mix in the element type: its name and size.
    #[must_use]
    pub fn element<T>(self) -> Self {
        self.mix(std::mem::size_of::<T>() as u64)
            .mix_bytes(std::any::type_name::<T>().as_bytes())
    }

    /// Mix in `bytes` eight at a time, after their length.
    fn mix_bytes(self, bytes: &[u8]) -> Self {
        let mut s = self.mix(bytes.len() as u64);
        let mut word = 0u64;
        for (i, &b) in bytes.iter().enumerate() {
            word |= u64::from(b) << (8 * (i % 8));
            if i % 8 == 7 {
                s = s.mix(word);
                word = 0;
            }
        }
        if bytes.len() % 8 == 0 {
            s
        } else {
            s.mix(word)
        }
    }

    /// The 32-bit signature stored in the arrival word.
    #[must_use]
    pub fn finish(self) -> u32 {
        (self.0 ^ (self.0 >> 32)) as u32
    }
}

/// Why a barrier failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The job was aborted (by anyone, for any reason).
    Aborted,
    /// A peer that attached has died.
    PeerDied,
    /// A peer called another collective at the same step.
    Mismatch,
    /// The job's deadline passed.
    Timeout,
    /// The futex call failed (a bug or a kernel without futexes).
    Futex,
}

/// A failed barrier: what went wrong, in which operation, in one line.
#[derive(Clone, Debug)]
pub(crate) struct BarrierError {
    pub(crate) failure: Failure,
    pub(crate) op: &'static str,
    pub(crate) message: String,
}

impl From<BarrierError> for CommError {
    fn from(e: BarrierError) -> Self {
        collective_failed(e.op, e.message)
    }
}

/// Which words one wait polls.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The arrival words of ranks `lo..hi` (this rank's own is skipped).
    Ranks { lo: usize, hi: usize },
    /// The tree barrier's release word.
    Release,
}

impl Target {
    /// The position `scan` returns once every polled word is there.
    fn end(self) -> usize {
        match self {
            Self::Ranks { hi, .. } => hi,
            Self::Release => 1,
        }
    }
}

/// Where one wait stands, for `sleep_once`.
#[derive(Clone, Copy)]
struct Step {
    target: Target,
    next: usize,
    epoch: u32,
    sig: u32,
    op: &'static str,
}

/// What a long wait remembers about its peers.
#[derive(Default)]
struct Watch {
    /// Since when each peer has been seen stopped.
    stopped: Vec<Option<Instant>>,
    /// When peers' process states were last read.
    last_check: Option<Instant>,
}

/// One rank's side of the barrier: its rank, the job size, its wait policy,
/// its shape and how many barriers it has completed.
#[derive(Debug)]
pub(crate) struct Barrier {
    pub(crate) rank: usize,
    pub(crate) size: usize,
    pub(crate) policy: WaitPolicy,
    /// Arrivals combine up a tree (`BarrierShape::Tree`) instead of every
    /// rank reading every peer. Changed only between barriers, by every
    /// rank at the same epoch (the start-up measurement of both shapes).
    tree: AtomicBool,
    /// Barriers this rank has completed.
    epoch: AtomicU32,
}

impl Barrier {
    pub(crate) fn new(rank: usize, size: usize, policy: WaitPolicy, tree: bool) -> Self {
        Self {
            rank,
            size,
            policy,
            tree: AtomicBool::new(tree),
            epoch: AtomicU32::new(0),
        }
    }

    /// Whether arrivals combine up the tree.
    pub(crate) fn is_tree(&self) -> bool {
        self.tree.load(Relaxed)
    }

    /// Meet at the tree (`true`) or the flat barrier from the next barrier
    /// on. Every rank must switch between the same two barriers: a flat
    /// barrier followed by a tree one (or the reverse) is safe because both
    /// accept peers that are already ahead and the release word only grows.
    pub(crate) fn set_tree(&self, tree: bool) {
        self.tree.store(tree, Relaxed);
    }

    /// The epoch reached so far (completed barriers).
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Relaxed)
    }

    /// Barrier number `epoch + 1` with signature `sig` on `ctl`; `op` names
    /// the collective in errors.
    ///
    /// # Errors
    /// When the job is aborted, a peer died, the signatures disagree, or the
    /// deadline passes (each also aborts the job for everyone).
    pub(crate) fn wait(
        &self,
        ctl: &Control,
        sig: u32,
        op: &'static str,
    ) -> Result<(), BarrierError> {
        if self.is_tree() {
            self.tree_wait(ctl, sig, op)
        } else {
            self.wait_until(ctl, sig, op, None)
        }
    }

    /// The flat barrier, with `deadline` instead of the policy's timeout
    /// when given. The attach handshake always uses it: it works before the
    /// ranks have agreed on a shape.
    pub(crate) fn wait_until(
        &self,
        ctl: &Control,
        sig: u32,
        op: &'static str,
        deadline: Option<Instant>,
    ) -> Result<(), BarrierError> {
        let epoch = self.epoch.load(Relaxed).wrapping_add(1);
        ctl.arrival(self.rank)
            .store(pack_arrival(epoch, sig), SeqCst);
        let all = Target::Ranks {
            lo: 0,
            hi: self.size,
        };
        self.await_words(ctl, all, epoch, sig, op, deadline)?;
        self.epoch.store(epoch, Relaxed);
        wake_if_sleeping(ctl);
        Ok(())
    }

    /// The tree barrier: wait for this rank's children (ranks
    /// `4r+1 ..= 4r+4`) to report their subtrees, compare their
    /// signatures, report this subtree to the parent through the own
    /// arrival word; rank 0 then stores the release word the others wait
    /// for. Every parent–child pair is compared at the same epoch (a child
    /// cannot pass the release its parent has not reported to), so a
    /// mismatch anywhere is found; the release/acquire chain up the tree and
    /// back through the release word publishes every rank's staged data to
    /// every other rank.
    fn tree_wait(&self, ctl: &Control, sig: u32, op: &'static str) -> Result<(), BarrierError> {
        let epoch = self.epoch.load(Relaxed).wrapping_add(1);
        let fan = crate::config::BarrierShape::TREE_FAN_IN;
        let first = self.rank.saturating_mul(fan).saturating_add(1);
        let children = Target::Ranks {
            lo: first.min(self.size),
            hi: first.saturating_add(fan).min(self.size),
        };
        self.await_words(ctl, children, epoch, sig, op, None)?;
        ctl.arrival(self.rank)
            .store(pack_arrival(epoch, sig), SeqCst);
        if self.rank == 0 {
            ctl.release().store(epoch, SeqCst);
            wake_if_sleeping(ctl);
        } else {
            // The parent may be asleep waiting for this arrival.
            wake_if_sleeping(ctl);
            self.await_words(ctl, Target::Release, epoch, sig, op, None)?;
        }
        self.epoch.store(epoch, Relaxed);
        Ok(())
    }

    /// Poll the words of `target` until all show `epoch`, backing off by
    /// the policy (spin, yield, sleep on the futex with liveness checks).
    fn await_words(
        &self,
        ctl: &Control,
        target: Target,
        epoch: u32,
        sig: u32,
        op: &'static str,
        deadline: Option<Instant>,
    ) -> Result<(), BarrierError> {
        let end = target.end();
        let mut next = 0;
        let mut backoff = Backoff::new(&self.policy);
        let mut watch = Watch::default();
        loop {
            next = self.scan(ctl, target, next, epoch, sig, op)?;
            if next == end {
                return Ok(());
            }
            if ctl.wake().load(Relaxed) & WAKE_ABORT_BIT != 0 {
                return Err(self.aborted(ctl, op));
            }
            match backoff.step() {
                Phase::Spin => std::hint::spin_loop(),
                Phase::Yield => std::thread::yield_now(),
                Phase::Sleep(nap) => {
                    let deadline = deadline.or_else(|| backoff.deadline());
                    let at = Step {
                        target,
                        next,
                        epoch,
                        sig,
                        op,
                    };
                    next = self.sleep_once(ctl, at, nap, deadline, &mut watch)?;
                    if next == end {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Advance past every word of `target` (from `from`) that shows
    /// `epoch`; returns the first one still missing, or `target.end()`.
    fn scan(
        &self,
        ctl: &Control,
        target: Target,
        from: usize,
        epoch: u32,
        sig: u32,
        op: &'static str,
    ) -> Result<usize, BarrierError> {
        let (lo, hi) = match target {
            Target::Release => {
                let behind = (ctl.release().load(SeqCst).wrapping_sub(epoch) as i32) < 0;
                return Ok(usize::from(!behind));
            }
            Target::Ranks { lo, hi } => (lo, hi),
        };
        let mut r = from.max(lo);
        while r < hi {
            if r != self.rank {
                let (e, s) = unpack_arrival(ctl.arrival(r).load(SeqCst));
                let ahead = e.wrapping_sub(epoch) as i32;
                if ahead < 0 {
                    return Ok(r);
                }
                if ahead == 0 && s != sig {
                    return Err(self.mismatch(ctl, op, r));
                }
            }
            r += 1;
        }
        Ok(r)
    }

    fn sleep_once(
        &self,
        ctl: &Control,
        at: Step,
        nap: Duration,
        deadline: Option<Instant>,
        watch: &mut Watch,
    ) -> Result<usize, BarrierError> {
        let Step {
            target,
            next,
            epoch,
            sig,
            op,
        } = at;
        let end = target.end();
        ctl.sleepers().fetch_add(1, SeqCst);
        let w = ctl.wake().load(SeqCst);
        let rescanned = self.scan(ctl, target, next, epoch, sig, op);
        if matches!(rescanned, Ok(n) if n < end) && w & WAKE_ABORT_BIT == 0 {
            let slice = deadline.map_or(nap, |d| {
                nap.min(d.saturating_duration_since(Instant::now()))
            });
            if let Err(e) = futex::wait(ctl.wake(), w, slice) {
                ctl.sleepers().fetch_sub(1, SeqCst);
                return Err(BarrierError {
                    failure: Failure::Futex,
                    op,
                    message: format!("futex wait failed: {e}"),
                });
            }
        }
        ctl.sleepers().fetch_sub(1, SeqCst);
        let next = self.scan(ctl, target, rescanned?, epoch, sig, op)?;
        if next == end {
            return Ok(next);
        }
        if ctl.is_aborted() {
            return Err(self.aborted(ctl, op));
        }
        self.check_peers_alive(ctl, op)?;
        let missing = self.missing_ranks(ctl, epoch);
        self.check_peers_running(ctl, op, &missing, watch)?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let reason = format!(
                "{op} timed out at rank {}: ranks {missing:?} never arrived (they are alive: raise \
                 or unset COBRE_SHM_TIMEOUT_SECS / --timeout if they are just busy)",
                self.rank
            );
            self.raise(ctl, AbortKind::Timeout, NO_RANK, 0, 0, &reason);
            return Err(BarrierError {
                failure: Failure::Timeout,
                op,
                message: reason,
            });
        }
        Ok(next)
    }

    /// Fail if a peer this barrier waits for has been stopped (SIGSTOP, a
    /// debugger) for longer than the policy's grace: it cannot arrive until
    /// someone continues it, so say so instead of waiting silently.
    fn check_peers_running(
        &self,
        ctl: &Control,
        op: &'static str,
        missing: &[usize],
        watch: &mut Watch,
    ) -> Result<(), BarrierError> {
        let now = Instant::now();
        if watch
            .last_check
            .is_some_and(|t| now - t < Duration::from_millis(200))
        {
            return Ok(());
        }
        watch.last_check = Some(now);
        watch.stopped.resize(self.size, None);
        for &r in missing {
            let pid = ctl.slot_pid(r).load(Acquire);
            if pid == 0 || !process::is_stopped(pid) {
                watch.stopped[r] = None;
                continue;
            }
            let since = *watch.stopped[r].get_or_insert(now);
            if now - since >= self.policy.stopped_grace {
                let reason = format!(
                    "rank {r} (pid {pid}) has been stopped for {:.0} s (SIGSTOP or a debugger) while \
                     rank {} waited for it in {op}",
                    (now - since).as_secs_f64(),
                    self.rank
                );
                self.raise(ctl, AbortKind::RankStopped, r as u32, pid, 0, &reason);
                return Err(BarrierError {
                    failure: Failure::PeerDied,
                    op,
                    message: ctl.abort_message(),
                });
            }
        }
        Ok(())
    }

    /// Fail if any rank that attached has died. While this barrier is
    /// incomplete no peer can have left it cleanly — not even one that
    /// already arrived — so a dead peer means the job cannot finish.
    fn check_peers_alive(&self, ctl: &Control, op: &'static str) -> Result<(), BarrierError> {
        for r in (0..self.size).filter(|&r| r != self.rank) {
            let pid = ctl.slot_pid(r).load(Acquire);
            if pid == 0 {
                continue; // not attached yet: only the deadline applies
            }
            if !ctl.rank_alive(r).unwrap_or(true) {
                let reason = format!(
                    "rank {r} (pid {pid}) died while rank {} waited in {op}",
                    self.rank
                );
                self.raise(ctl, AbortKind::RankDied, r as u32, pid, 0, &reason);
                return Err(BarrierError {
                    failure: Failure::PeerDied,
                    op,
                    message: ctl.abort_message(),
                });
            }
        }
        Ok(())
    }

    /// Ranks that have not reported barrier `epoch` (under the tree
    /// barrier a rank reports once its whole subtree arrived, so the
    /// culprit is among them too).
    fn missing_ranks(&self, ctl: &Control, epoch: u32) -> Vec<usize> {
        (0..self.size)
            .filter(|&r| r != self.rank)
            .filter(|&r| {
                let (e, _) = unpack_arrival(ctl.arrival(r).load(SeqCst));
                (e.wrapping_sub(epoch) as i32) < 0
            })
            .collect()
    }

    fn mismatch(&self, ctl: &Control, op: &'static str, peer: usize) -> BarrierError {
        let reason = format!(
            "collective mismatch: rank {} called {op} while rank {peer} called a different \
             collective or passed different arguments (counts, length, root, op or element type)",
            self.rank
        );
        self.raise(ctl, AbortKind::Mismatch, peer as u32, 0, 0, &reason);
        BarrierError {
            failure: Failure::Mismatch,
            op,
            message: ctl.abort_message(),
        }
    }

    fn aborted(&self, ctl: &Control, op: &'static str) -> BarrierError {
        BarrierError {
            failure: Failure::Aborted,
            op,
            message: ctl.abort_message(),
        }
    }

    /// Raise the job's abort record from this rank.
    pub(crate) fn raise(
        &self,
        ctl: &Control,
        kind: AbortKind,
        subject_rank: u32,
        subject_pid: u32,
        code: i32,
        reason: &str,
    ) {
        ctl.raise_abort(&AbortSpec {
            kind,
            subject_rank,
            raised_by: self.rank as u32,
            subject_pid,
            code,
            reason,
        });
    }
}

/// Wake every sleeper if there is one: called after a store a sleeper may
/// wait for (store, then `SeqCst` load of the count, against the sleeper's
/// increment, then re-check).
fn wake_if_sleeping(ctl: &Control) {
    if ctl.sleepers().load(SeqCst) == 0 {
        return;
    }
    let wake = ctl.wake();
    let _ = wake.fetch_update(SeqCst, SeqCst, |w| {
        Some((w & WAKE_ABORT_BIT) | (w.wrapping_add(1) & !WAKE_ABORT_BIT))
    });
    futex::wake_all(wake);
}

#[cfg(test)]
mod tests {
    use super::*;

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
