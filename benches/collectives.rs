//! Collective latency/bandwidth of the shm backend at 2, 4 and 8 ranks (real
//! processes), next to the hardware floor measured in the same run: the
//! round trip of one cache line between two processes spinning on it, and
//! `memcpy` bandwidth.
//!
//! Run: `cargo bench --bench collectives` (add `-- --quick` for fewer
//! repetitions). The same binary is re-executed as each rank.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cobre_comm::{Communicator, ReduceOp};
use cobre_shm::os::segment::Segment;
use cobre_shm::ShmBackend;

const ROLE: &str = "COBRE_BENCH_ROLE";

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if set.set(cpu % cpus).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick") || std::env::var("COBRE_BENCH_QUICK").is_ok()
}

/// Median over `batches` of the mean time per call within a batch, in µs.
fn measure<C: Communicator>(c: &C, batch: usize, batches: usize, mut op: impl FnMut()) -> f64 {
    c.barrier().expect("barrier");
    for _ in 0..batch.min(50) {
        op();
    }
    let mut per_call = Vec::with_capacity(batches);
    for _ in 0..batches {
        c.barrier().expect("barrier");
        let t = Instant::now();
        for _ in 0..batch {
            op();
        }
        per_call.push(t.elapsed().as_secs_f64() * 1e6 / batch as f64);
    }
    median(per_call)
}

fn rank_main() {
    let c = ShmBackend::from_env().expect("attach");
    let (r, n) = (c.rank(), c.size());
    pin(r);
    let q = quick();
    let scale = |full: usize| if q { (full / 5).max(3) } else { full };
    let mut results: Vec<(String, f64)> = Vec::new();

    let t = measure(&c, 1000, scale(30), || c.barrier().expect("barrier"));
    results.push(("barrier".into(), t));

    let send = [1.0f64, 2.0, 3.0, 4.0];
    let mut recv = [0.0f64; 4];
    let t = measure(&c, 1000, scale(30), || {
        c.allreduce(&send, &mut recv, ReduceOp::Sum)
            .expect("allreduce");
    });
    results.push(("allreduce 4 x f64".into(), t));

    let send = vec![1.0f64; 4096];
    let mut recv = vec![0.0f64; 4096];
    let t = measure(&c, 100, scale(30), || {
        c.allreduce(&send, &mut recv, ReduceOp::Sum)
            .expect("allreduce");
    });
    results.push(("allreduce 4096 x f64".into(), t));

    for (label, total_bytes, batch) in [
        ("allgatherv 64 KiB", 64 << 10, 100),
        ("allgatherv 16 MiB", 16 << 20, 2),
    ] {
        let per = total_bytes / 8 / n;
        let counts = vec![per; n];
        let displs = cobre_comm::prefix_displs(&counts);
        let send = vec![r as f64; per];
        let mut recv = vec![0.0f64; per * n];
        let t = measure(&c, batch, scale(20), || {
            c.allgatherv(&send, &mut recv, &counts, &displs)
                .expect("allgatherv");
        });
        results.push((label.into(), t));
    }

    let mut buf = vec![1.5f64; (1 << 20) / 8];
    let t = measure(&c, 20, scale(20), || {
        c.broadcast(&mut buf, 0).expect("broadcast")
    });
    results.push(("broadcast 1 MiB".into(), t));

    if r == 0 {
        for (op, us) in results {
            println!("RESULT\t{n}\t{op}\t{us:.3}");
        }
    }
}

/// One side of the raw cache-line ping-pong.
fn pingpong_main(ping: bool) {
    let name = std::env::var("COBRE_BENCH_SEGMENT").expect("segment name");
    let iters: u64 = std::env::var("COBRE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    pin(usize::from(!ping));
    let seg = loop {
        if let Ok(cobre_shm::os::segment::Opened::Ready(s)) = Segment::open(&name, 4096) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let (a, b) = (seg.atomic_u64(0), seg.atomic_u64(128));
    let ready = seg.atomic_u64(256);
    ready.fetch_add(1, Ordering::SeqCst);
    while ready.load(Ordering::SeqCst) < 2 {
        std::hint::spin_loop();
    }
    let t = Instant::now();
    for i in 1..=iters {
        if ping {
            a.store(i, Ordering::Release);
            while b.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
        } else {
            while a.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            b.store(i, Ordering::Release);
        }
    }
    if ping {
        println!(
            "PINGPONG\t{:.4}",
            t.elapsed().as_secs_f64() * 1e6 / iters as f64
        );
    }
}

fn spawn_self(envs: &[(&str, String)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().expect("bench binary"));
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if quick() {
        cmd.env("COBRE_BENCH_QUICK", "1");
    }
    cmd.spawn().expect("spawn")
}

fn raw_round_trip_us() -> f64 {
    let name = format!("/cobre-shm-bench.pingpong.{}", std::process::id());
    let seg = Segment::create_exclusive(&name, 4096).expect("segment");
    let iters = if quick() { 200_000 } else { 2_000_000 };
    let kids: Vec<_> = ["ping", "pong"]
        .iter()
        .map(|role| {
            spawn_self(&[
                (ROLE, (*role).to_string()),
                ("COBRE_BENCH_SEGMENT", name.clone()),
                ("COBRE_BENCH_ITERS", iters.to_string()),
            ])
        })
        .collect();
    let mut us = f64::NAN;
    for k in kids {
        let out = k.wait_with_output().expect("ping-pong process");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(v) = line.strip_prefix("PINGPONG\t") {
                us = v.parse().unwrap_or(f64::NAN);
            }
        }
    }
    drop(seg);
    let _ = Segment::unlink(&name);
    us
}

fn memcpy_gbps(bytes: usize, reps: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    let mut best = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        best.push((bytes * reps) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    median(best)
}

fn run_ranks(n: usize) -> Vec<(String, f64)> {
    let name = format!("/cobre-shm-bench.{}.{n}", std::process::id());
    let kids: Vec<_> = (0..n)
        .map(|r| {
            spawn_self(&[
                (ROLE, "rank".into()),
                ("COBRE_SHM_NAME", name.clone()),
                ("COBRE_SHM_RANK", r.to_string()),
                ("COBRE_SHM_SIZE", n.to_string()),
            ])
        })
        .collect();
    let mut res = Vec::new();
    for k in kids {
        let out = k.wait_with_output().expect("rank");
        assert!(out.status.success(), "a rank failed: {}", out.status);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() == 4 && f[0] == "RESULT" {
                res.push((f[2].to_string(), f[3].parse().unwrap_or(f64::NAN)));
            }
        }
    }
    res
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("rank") => return rank_main(),
        Ok("ping") => return pingpong_main(true),
        Ok("pong") => return pingpong_main(false),
        _ => {}
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!("# cobre-shm collectives benchmark ({cpus} CPUs)\n");
    let rt = raw_round_trip_us();
    let in_cache = memcpy_gbps(256 << 10, 2000);
    let beyond = memcpy_gbps(64 << 20, 10);
    println!("raw cache-line round trip between two processes: {rt:.3} µs");
    println!("memcpy: {in_cache:.1} GB/s (256 KiB, in cache), {beyond:.1} GB/s (64 MiB)\n");
    let sizes = [2usize, 4, 8];
    let per_size: Vec<Vec<(String, f64)>> = sizes.iter().map(|&n| run_ranks(n)).collect();
    print!("| operation |");
    for n in sizes {
        print!(" {n} ranks |");
    }
    println!("\n|---|{}", "---:|".repeat(sizes.len()));
    for (i, (op, _)) in per_size[0].iter().enumerate() {
        print!("| {op} |");
        for res in &per_size {
            let us = res.get(i).map_or(f64::NAN, |x| x.1);
            print!(" {us:.2} µs |");
        }
        println!();
    }
    println!();
    if let Some((_, b2)) = per_size[0].iter().find(|(op, _)| op == "barrier") {
        println!("barrier at 2 ranks / raw round trip: {:.2}x", b2 / rt);
    }
    // Bytes every rank must copy: allgatherv writes its share to staging,
    // copies it to its own `recv` and reads everyone else's share, (1 + 1/R)
    // of the payload; broadcast: the root writes it, every other rank reads
    // it. Summed over ranks and compared with memcpy on the cores in use.
    for (&n, res) in sizes.iter().zip(&per_size) {
        for (op, bytes, copies) in [
            ("allgatherv 16 MiB", 16u64 << 20, n as f64 + 1.0),
            ("broadcast 1 MiB", 1 << 20, n as f64),
        ] {
            if let Some((_, us)) = res.iter().find(|(o, _)| o == op) {
                let gbps = bytes as f64 * copies / (us * 1e-6) / 1e9;
                let floor = beyond * n.min(cpus) as f64;
                println!(
                    "{op} at {n} ranks: {gbps:.1} GB/s copied over all ranks = {:.0}% of memcpy on {} core(s)",
                    100.0 * gbps / floor,
                    n.min(cpus)
                );
            }
        }
    }
}
