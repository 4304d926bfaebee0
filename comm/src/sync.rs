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
//! Small broadcasts are *eager* (see `Barrier::eager_publish`): the root
//! writes the payload into the ring slot of its epoch (`EagerSlot`) and
//! returns; receivers wait for that slot only. A rank may then be several
//! epochs ahead of its peers, so before it next writes staging or inline
//! areas it *settles* (`Barrier::settle`): it waits until every rank has
//! arrived past the last full barrier, that is finished reading it. A full
//! barrier that finds a peer ahead, or waits for the release, also checks
//! the ring slot of its epoch: a broadcast published there is a mismatch.
//!
//! Waiting follows [`crate::wait::Backoff`]: spin, yield, then sleep on the
//! shared futex word `wake`. Sleepers register in `sleepers`; a rank that
//! sees the barrier complete wakes them only if that count is non-zero
//! (store-then-load on both sides with `SeqCst`, so either the sleeper sees
//! the last arrival or the waker sees the sleeper). Between sleeps a sleeper
//! checks the abort word, the liveness of every rank that has attached
//! (their lock bytes) and the job deadline.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::{Duration, Instant};

use cobre_comm::CommError;
use cobre_shm_layout::{pack_arrival, unpack_arrival, AbortKind, EAGER_SLOTS, WAKE_ABORT_BIT};

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
    /// The eager-broadcast slot of the epoch, published by `root`.
    Eager { root: usize },
    /// Every peer's arrival word, whatever its signature (settling and
    /// ring reuse: only that a peer got there counts).
    Reached,
}

/// The op name of the attach handshake and the exchanges that follow it:
/// a mismatch there is a disagreement on the job's settings.
pub(crate) const ATTACH_OP: &str = "attach";

/// How many epochs `e` is past `epoch` (negative: behind), across the
/// wrap of the 32-bit counter.
fn epochs_past(e: u32, epoch: u32) -> i32 {
    e.wrapping_sub(epoch) as i32
}

impl Target {
    /// The position `scan` returns once every polled word is there.
    fn end(self, size: usize) -> usize {
        match self {
            Self::Ranks { hi, .. } => hi,
            Self::Release | Self::Eager { .. } => 1,
            Self::Reached => size,
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
    /// Collectives this rank has completed (barriers and eager broadcasts).
    epoch: AtomicU32,
    /// The epoch of this rank's last full barrier: every peer had finished
    /// reading everything before it. Behind `epoch` after eager broadcasts.
    settled: AtomicU32,
    /// A lower bound of every rank's arrival epoch, seen at the last check
    /// of the eager ring (saves reading every peer's word per broadcast).
    floor_seen: AtomicU32,
}

impl Barrier {
    pub(crate) fn new(rank: usize, size: usize, policy: WaitPolicy, tree: bool) -> Self {
        Self {
            rank,
            size,
            policy,
            tree: AtomicBool::new(tree),
            epoch: AtomicU32::new(0),
            settled: AtomicU32::new(0),
            floor_seen: AtomicU32::new(0),
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
        self.passed(epoch);
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
        self.passed(epoch);
        Ok(())
    }

    /// Record full barrier `epoch` as passed: every peer arrived at it.
    fn passed(&self, epoch: u32) {
        self.epoch.store(epoch, Relaxed);
        self.settled.store(epoch, Relaxed);
    }

    /// Broadcast number `epoch + 1` as its root, eagerly: claim the ring
    /// slot of that epoch, let `write` fill its payload (given the payload's
    /// offset in `ctl`), publish it and return without waiting for the
    /// receivers. Waits only when the ring is full, until every rank has
    /// arrived past the broadcast that used the slot last.
    ///
    /// # Errors
    /// When the job is aborted, another rank also claimed this broadcast as
    /// its root, or the wait for the ring fails (as [`Self::wait`]).
    pub(crate) fn eager_publish(
        &self,
        ctl: &Control,
        sig: u32,
        op: &'static str,
        write: impl FnOnce(usize),
    ) -> Result<(), BarrierError> {
        let epoch = self.epoch().wrapping_add(1);
        if ctl.is_aborted() {
            return Err(self.aborted(ctl, op));
        }
        // The slot last carried epoch - EAGER_SLOTS; a rank that arrived
        // at the collective after it has finished reading it.
        let ring = EAGER_SLOTS as u32;
        self.await_floor(ctl, epoch.wrapping_sub(ring - 1), op)?;
        if ctl.eager_claim(epoch).swap(epoch, AcqRel) == epoch {
            let other = ctl.eager_root(epoch).load(Relaxed) as usize;
            return Err(self.mismatch(ctl, op, other));
        }
        ctl.eager_root(epoch).store(self.rank as u32, Relaxed);
        write(ctl.eager_payload(epoch));
        ctl.eager_ready(epoch)
            .store(pack_arrival(epoch, sig), Release);
        ctl.arrival(self.rank)
            .store(pack_arrival(epoch, sig), SeqCst);
        self.epoch.store(epoch, Relaxed);
        wake_if_sleeping(ctl);
        Ok(())
    }

    /// Broadcast number `epoch + 1` from `root`, received eagerly: arrive,
    /// wait for the root's ring slot of that epoch (and only for it), and
    /// let `read` copy its payload (given the payload's offset in `ctl`).
    ///
    /// # Errors
    /// As [`Self::wait`]; a slot or a root showing another signature is a
    /// collective mismatch.
    pub(crate) fn eager_receive(
        &self,
        ctl: &Control,
        root: usize,
        sig: u32,
        op: &'static str,
        read: impl FnOnce(usize),
    ) -> Result<(), BarrierError> {
        let epoch = self.epoch().wrapping_add(1);
        ctl.arrival(self.rank)
            .store(pack_arrival(epoch, sig), SeqCst);
        // A root may be waiting for this arrival to reuse a ring slot.
        wake_if_sleeping(ctl);
        self.await_words(ctl, Target::Eager { root }, epoch, sig, op, None)?;
        read(ctl.eager_payload(epoch));
        self.epoch.store(epoch, Relaxed);
        Ok(())
    }

    /// Before writing staging or inline areas after eager broadcasts: wait
    /// until every rank has arrived past this rank's last full barrier, so
    /// nobody still reads what was published before it. Free when the last
    /// collective was a full barrier.
    ///
    /// # Errors
    /// As [`Self::wait`].
    pub(crate) fn settle(&self, ctl: &Control, op: &'static str) -> Result<(), BarrierError> {
        let (last, now) = (self.settled.load(Relaxed), self.epoch());
        if last == now {
            return Ok(());
        }
        self.await_floor(ctl, last.wrapping_add(1), op)?;
        self.settled.store(now, Relaxed);
        Ok(())
    }

    /// Wait until every rank's arrival epoch is at least `floor` (whatever
    /// its signature), reading the peers' words only when the last bound
    /// seen is below it.
    fn await_floor(&self, ctl: &Control, floor: u32, op: &'static str) -> Result<(), BarrierError> {
        let reached = |e: u32| epochs_past(e, floor) >= 0;
        if reached(self.floor_seen.load(Relaxed)) {
            return Ok(());
        }
        self.await_words(ctl, Target::Reached, floor, 0, op, None)?;
        // Every peer is at `floor` or later; keep the lowest for next time
        // (Acquire: a later skip relies on the peers' reads before these
        // arrivals happening before this rank's next writes).
        let lowest = (0..self.size)
            .filter(|&r| r != self.rank)
            .map(|r| unpack_arrival(ctl.arrival(r).load(Acquire)).0)
            .min_by_key(|&e| epochs_past(e, floor))
            .unwrap_or(floor);
        self.floor_seen.store(lowest, Relaxed);
        Ok(())
    }

    /// A full barrier at `epoch` found a peer ahead or waits for the
    /// release: if a broadcast was published eagerly at `epoch`, its root
    /// and this rank called different collectives.
    fn check_no_eager(
        &self,
        ctl: &Control,
        epoch: u32,
        op: &'static str,
    ) -> Result<(), BarrierError> {
        let (e, _) = unpack_arrival(ctl.eager_ready(epoch).load(Acquire));
        if e == epoch {
            let root = ctl.eager_root(epoch).load(Relaxed) as usize;
            return Err(self.mismatch(ctl, op, root));
        }
        Ok(())
    }

    /// Whether the eager broadcast `epoch` from `root` is published (1) or
    /// not yet (0).
    fn scan_eager(
        &self,
        ctl: &Control,
        root: usize,
        epoch: u32,
        sig: u32,
        op: &'static str,
    ) -> Result<usize, BarrierError> {
        let (e, s) = unpack_arrival(ctl.eager_ready(epoch).load(Acquire));
        if e == epoch {
            if s != sig {
                let publisher = ctl.eager_root(epoch).load(Relaxed) as usize;
                return Err(self.mismatch(ctl, op, publisher));
            }
            return Ok(1);
        }
        if epochs_past(e, epoch) > 0 {
            // Reused for a later broadcast before this rank arrived past
            // this one: cannot happen while roots wait for the ring.
            let publisher = ctl.eager_root(epoch).load(Relaxed) as usize;
            return Err(self.mismatch(ctl, op, publisher));
        }
        // Not published (yet): a root that arrived at this epoch in another
        // collective never will.
        let (e, s) = unpack_arrival(ctl.arrival(root).load(SeqCst));
        if e == epoch && s != sig {
            return Err(self.mismatch(ctl, op, root));
        }
        Ok(0)
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
        let end = target.end(self.size);
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
        let (lo, hi, check) = match target {
            Target::Release => {
                let behind = epochs_past(ctl.release().load(SeqCst), epoch) < 0;
                if behind {
                    self.check_no_eager(ctl, epoch, op)?;
                }
                return Ok(usize::from(!behind));
            }
            Target::Eager { root } => return self.scan_eager(ctl, root, epoch, sig, op),
            Target::Ranks { lo, hi } => (lo, hi, true),
            Target::Reached => (0, self.size, false),
        };
        let mut r = from.max(lo);
        while r < hi {
            if r != self.rank {
                let (e, s) = unpack_arrival(ctl.arrival(r).load(SeqCst));
                let ahead = epochs_past(e, epoch);
                if ahead < 0 {
                    return Ok(r);
                }
                if check && ahead == 0 && s != sig {
                    return Err(self.mismatch(ctl, op, r));
                }
                if check && ahead > 0 {
                    self.check_no_eager(ctl, epoch, op)?;
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
        let end = target.end(self.size);
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
        let missing = self.missing_ranks(ctl, target, epoch);
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
    /// culprit is among them too); for an eager broadcast, its root.
    fn missing_ranks(&self, ctl: &Control, target: Target, epoch: u32) -> Vec<usize> {
        if let Target::Eager { root } = target {
            return vec![root];
        }
        (0..self.size)
            .filter(|&r| r != self.rank)
            .filter(|&r| {
                let (e, _) = unpack_arrival(ctl.arrival(r).load(SeqCst));
                epochs_past(e, epoch) < 0
            })
            .collect()
    }

    fn mismatch(&self, ctl: &Control, op: &'static str, peer: usize) -> BarrierError {
        // Ranks meet at the attach handshake with a signature of the job's
        // settings; a mismatch there is a settings disagreement. (The
        // record holds 224 bytes: these stay below.)
        let reason = if op == ATTACH_OP {
            format!(
                "settings mismatch at attach: ranks {} and {peer} disagree on COBRE_SHM_BARRIER, \
                 COBRE_SHM_EAGER_MAX_BYTES or COBRE_SHM_JOB_CPUS; give every rank the same values \
                 (or set them on none)",
                self.rank
            )
        } else {
            format!(
                "collective mismatch: rank {} called {op} while rank {peer} called a different \
                 collective or passed different arguments (counts, length, root, op or element \
                 type)",
                self.rank
            )
        };
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
