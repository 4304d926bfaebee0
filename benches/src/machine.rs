//! The hardware floor the collectives are compared with: `memcpy` bandwidth
//! in and beyond the caches (one thread and every CPU at once), and the
//! round trip of one cache line between two CPUs.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Pin the calling thread to `cpu` (best effort).
fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One thread copying `bytes` repeatedly, GB/s (median of 5 runs).
#[must_use]
pub fn memcpy_gbps(bytes: usize, quick: bool) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    let reps = ((if quick { 64 << 20 } else { 512 << 20 }) / bytes.max(1)).max(2);
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        runs.push((bytes * reps) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    median(runs)
}

/// Every CPU copying its own `bytes` at once: summed GB/s.
#[must_use]
pub fn memcpy_all_gbps(cpus: &[usize], bytes: usize, quick: bool) -> f64 {
    let handles: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            std::thread::spawn(move || {
                pin(cpu);
                memcpy_gbps(bytes, quick)
            })
        })
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).sum()
}

/// Round trip of one cache line between threads pinned to `a` and `b`, µs.
#[must_use]
pub fn round_trip_us(a: usize, b: usize, quick: bool) -> f64 {
    let iters: u64 = if quick { 100_000 } else { 1_000_000 };
    // Two words on separate 128-byte lines.
    let words: Arc<[AtomicU64; 32]> = Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let peer = Arc::clone(&words);
    let pong = std::thread::spawn(move || {
        pin(b);
        for i in 1..=iters {
            while peer[0].load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            peer[16].store(i, Ordering::Release);
        }
    });
    let me = nix::unistd::Pid::from_raw(0);
    let before = nix::sched::sched_getaffinity(me).ok();
    pin(a);
    let t = Instant::now();
    for i in 1..=iters {
        words[0].store(i, Ordering::Release);
        while words[16].load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
    let _ = pong.join();
    // Unpin again: the caller goes on with other work.
    if let Some(set) = before {
        let _ = nix::sched::sched_setaffinity(me, &set);
    }
    us
}
