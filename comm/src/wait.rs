//! How every wait of the crate passes time: spin, then yield, then sleep —
//! one policy struct with named values and one backoff, used by the barrier
//! (which sleeps on a futex), by attaching ranks waiting for a segment, and
//! by anyone polling a condition ([`poll_until`]).
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// How long and how a rank waits for its peers. One struct, named values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitPolicy {
    /// Busy-poll budget before yielding (zero when ranks outnumber CPUs).
    pub spin: Duration,
    /// `sched_yield` budget after spinning, before sleeping.
    pub yield_for: Duration,
    /// Longest single sleep: how often a sleeper re-checks the abort word,
    /// its peers' liveness and the deadline.
    pub check_interval: Duration,
    /// Hard bound on any single wait; `None`: wait as long as every peer is
    /// alive and running (MPI's behaviour), failing fast only when one died
    /// or stays stopped.
    pub timeout: Option<Duration>,
    /// How long a peer may stay stopped (SIGSTOP, a debugger) while others
    /// wait for it before the job is aborted naming it.
    pub stopped_grace: Duration,
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
    /// Default grace for a stopped peer.
    pub const STOPPED_GRACE: Duration = Duration::from_secs(10);

    /// The policy for `world_size` ranks on a machine with `cpus` online CPUs.
    #[must_use]
    pub fn for_world(world_size: usize, cpus: usize, timeout: Option<Duration>) -> Self {
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
            stopped_grace: Self::STOPPED_GRACE,
        }
    }

    /// A policy that never spins and sleeps in growing naps up to
    /// `check_interval`: for waits measured in milliseconds (a segment to
    /// appear, a record to be published, output to drain).
    #[must_use]
    pub fn sleepy(check_interval: Duration, timeout: Duration) -> Self {
        Self {
            spin: Duration::ZERO,
            yield_for: Duration::ZERO,
            check_interval,
            timeout: Some(timeout),
            stopped_grace: Self::STOPPED_GRACE,
        }
    }
}

/// What a waiter should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Poll again at once (`spin_loop` hint).
    Spin,
    /// Give the CPU away once.
    Yield,
    /// Sleep (or block) for at most this long, then check again.
    Sleep(Duration),
}

/// Where one wait stands: spinning, yielding or sleeping, with naps that
/// double from 50 µs up to the policy's `check_interval`.
#[derive(Debug)]
pub struct Backoff<'p> {
    policy: &'p WaitPolicy,
    polls: u32,
    spinning: bool,
    start: Option<Instant>,
    nap: Duration,
}

impl<'p> Backoff<'p> {
    /// Shortest sleep.
    const FIRST_NAP: Duration = Duration::from_micros(50);

    /// Start a wait.
    #[must_use]
    pub fn new(policy: &'p WaitPolicy) -> Self {
        Self {
            policy,
            polls: 0,
            spinning: !policy.spin.is_zero(),
            start: None,
            nap: Self::FIRST_NAP,
        }
    }

    /// When the wait started (the first call to [`Self::step`]).
    #[must_use]
    pub fn started(&self) -> Option<Instant> {
        self.start
    }

    /// Deadline of the wait by the policy's timeout (`None`: no deadline).
    #[must_use]
    pub fn deadline(&mut self) -> Option<Instant> {
        let start = *self.start.get_or_insert_with(Instant::now);
        self.policy.timeout.and_then(|t| start.checked_add(t))
    }

    /// The next step after a poll that found the condition false.
    pub fn step(&mut self) -> Phase {
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
            let nap = self.nap.min(self.policy.check_interval);
            self.nap = (self.nap * 2).min(self.policy.check_interval);
            Phase::Sleep(nap)
        }
    }
}

/// Poll `ready` until it returns `Some`, backing off by `policy`; `None`
/// when `policy.timeout` passes first.
pub fn poll_until<T>(policy: &WaitPolicy, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let mut backoff = Backoff::new(policy);
    let deadline = backoff.deadline();
    loop {
        if let Some(v) = ready() {
            return Some(v);
        }
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        if left.is_some_and(|l| l.is_zero()) {
            return None;
        }
        match backoff.step() {
            Phase::Spin => std::hint::spin_loop(),
            Phase::Yield => std::thread::yield_now(),
            Phase::Sleep(nap) => std::thread::sleep(left.map_or(nap, |l| nap.min(l))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_spinning_when_oversubscribed() {
        let p = WaitPolicy::for_world(8, 2, None);
        assert!(p.spin.is_zero());
        assert_eq!(p.yield_for, WaitPolicy::OVERSUBSCRIBED_YIELD);
        let p = WaitPolicy::for_world(2, 2, None);
        assert_eq!(p.spin, WaitPolicy::SPIN);
    }

    #[test]
    fn phases_go_spin_yield_sleep_with_growing_naps() {
        let p = WaitPolicy {
            spin: Duration::from_millis(2),
            yield_for: Duration::from_millis(2),
            check_interval: Duration::from_millis(1),
            timeout: Some(Duration::from_secs(1)),
            stopped_grace: WaitPolicy::STOPPED_GRACE,
        };
        let mut b = Backoff::new(&p);
        assert_eq!(b.step(), Phase::Spin);
        let mut seen_yield = false;
        let naps: Vec<Duration> = std::iter::from_fn(|| match b.step() {
            Phase::Spin => Some(None),
            Phase::Yield => {
                seen_yield = true;
                Some(None)
            }
            Phase::Sleep(n) => Some(Some(n)),
        })
        .flatten()
        .take(6)
        .collect();
        assert!(seen_yield);
        assert_eq!(naps[0], Duration::from_micros(50));
        assert!(naps.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*naps.last().expect("naps"), Duration::from_millis(1));
    }

    #[test]
    fn poll_until_returns_the_value_or_times_out() {
        let p = WaitPolicy::sleepy(Duration::from_millis(2), Duration::from_millis(30));
        let mut n = 0;
        assert_eq!(
            poll_until(&p, || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
        let t = Instant::now();
        assert_eq!(poll_until(&p, || None::<()>), None);
        assert!(t.elapsed() >= Duration::from_millis(25));
    }
}
