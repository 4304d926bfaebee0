//! The crate's only `SYS_futex` calls: shared (not private) futexes, because
//! the words live in `MAP_SHARED` memory used by several processes, and a
//! private futex never wakes a waiter in another process.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a `FUTEX_WAIT` ended. Every outcome means "re-check the word".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken by `FUTEX_WAKE` (or spuriously).
    Woken,
    /// The word no longer held the expected value when the call started.
    Changed,
    /// The timeout passed.
    TimedOut,
    /// A signal interrupted the wait.
    Interrupted,
}

/// Sleep while `word == expected`, for at most `timeout`.
///
/// # Errors
/// `EFAULT`, `EINVAL`, `ENOSYS` and other unexpected errnos, which mean the
/// word is not usable for waiting (a bug, or a kernel without futexes).
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> std::io::Result<WaitOutcome> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos().min(999_999_999) as i32),
    };
    // SAFETY: `word` is a live, 4-aligned `AtomicU32` (a reference), and `ts`
    // is a valid timespec that outlives the call. FUTEX_WAIT without
    // FUTEX_PRIVATE_FLAG keys the wait on the physical page, which is what
    // makes it work across processes sharing the mapping. The kernel only
    // reads the word.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return Ok(WaitOutcome::Woken);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) => Ok(WaitOutcome::Changed),
        Some(libc::ETIMEDOUT) => Ok(WaitOutcome::TimedOut),
        Some(libc::EINTR) => Ok(WaitOutcome::Interrupted),
        _ => Err(err),
    }
}

/// Wake every process sleeping on `word`. Returns how many were woken.
///
/// Errors are ignored, as glibc does: `EFAULT`/`EINVAL` can only mean the
/// memory behind the word is already gone, and then nobody sleeps on it.
pub fn wake_all(word: &AtomicU32) -> usize {
    // SAFETY: `word` is a live, aligned `AtomicU32`; FUTEX_WAKE does not
    // access the word's value, it only uses its address as the key.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    usize::try_from(rc).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wait_returns_changed_when_value_differs() {
        let w = AtomicU32::new(5);
        let out = wait(&w, 4, Duration::from_secs(1)).expect("futex wait");
        assert_eq!(out, WaitOutcome::Changed);
    }

    #[test]
    fn wait_times_out() {
        let w = AtomicU32::new(0);
        let t = Instant::now();
        let out = wait(&w, 0, Duration::from_millis(20)).expect("futex wait");
        assert_eq!(out, WaitOutcome::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn wake_reaches_a_sleeper() {
        // The word never changes: only FUTEX_WAKE can end the wait before
        // its 5 s timeout, so a wake that reaches nobody fails the test.
        let w = Arc::new(AtomicU32::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w2, done2) = (Arc::clone(&w), Arc::clone(&done));
        let h = std::thread::spawn(move || {
            let t = Instant::now();
            let out = wait(&w2, 0, Duration::from_secs(5)).expect("futex wait");
            done2.store(true, Ordering::Release);
            (out, t.elapsed())
        });
        // Wake until the waiter is gone (it may not be asleep yet at the
        // first wake); count the sleepers reached.
        let mut woken = 0;
        let t = Instant::now();
        while !done.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(6) {
            std::thread::sleep(Duration::from_millis(20));
            woken += wake_all(&w);
        }
        let (out, slept) = h.join().expect("waiter thread");
        assert_eq!(out, WaitOutcome::Woken, "slept {slept:?}");
        assert!(slept < Duration::from_secs(2), "slept {slept:?}");
        assert_eq!(woken, 1, "FUTEX_WAKE reports the one sleeper it woke");
    }
}
