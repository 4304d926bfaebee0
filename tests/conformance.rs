//! Backend conformance suite (the cases C1–C28 of §1.1–§1.8 of upstream's
//! backend testing spec, `src/specs/hpc/backend-testing.md` in
//! <https://github.com/cobre-rs/cobre-docs>, plus cobre-shm's own cases), one generic body run against `ShmBackend` at 1, 2
//! and 4 ranks and against `cobre_comm::LocalBackend`, each rank a real
//! process (this test binary re-executed through the ignored `rank_entry`).

// The literals 3.14, 2.72, 1.41 are the test data of that spec's §1.3.
#![allow(clippy::approx_constant)]

mod common;

use std::time::{Duration, Instant};

use cobre_comm::{
    CommData, CommError, Communicator, LocalCommunicator, ReduceOp, SharedMemoryProvider,
    SharedRegion,
};
#[cfg(not(feature = "mpi"))]
use cobre_shm::plain::MPI_ERR_TYPE;
use cobre_shm::{create_communicator, BlockPublish, Comm};

/// What a backend promises beyond the common contract.
#[derive(Clone, Copy)]
struct Caps {
    /// Regions are real shared memory (not a private heap copy).
    shared: bool,
    /// allreduce rejects unsupported element types and operations.
    checks_types: bool,
}

fn counts_displs(counts: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let displs = cobre_comm::prefix_displs(counts);
    (counts.to_vec(), displs)
}

fn gather_f64<C: Communicator>(c: &C, send: &[f64], counts: &[usize]) -> Vec<f64> {
    let (counts, displs) = counts_displs(counts);
    let mut recv = vec![f64::NAN; counts.iter().sum()];
    c.allgatherv(send, &mut recv, &counts, &displs)
        .expect("allgatherv");
    recv
}

macro_rules! check_reduce_type {
    ($c:expr, $t:ty, $bitwise:expr) => {{
        let c = $c;
        let (r, n) = (c.rank(), c.size());
        let v = |rank: usize, k: usize| (rank * 3 + k + 1) as $t;
        let send: Vec<$t> = (0..3).map(|k| v(r, k)).collect();
        let mut ops = vec![ReduceOp::Sum, ReduceOp::Min, ReduceOp::Max];
        if $bitwise {
            ops.push(ReduceOp::BitwiseOr);
        }
        for op in ops {
            let mut recv = vec![<$t>::default(); 3];
            c.allreduce(&send, &mut recv, op).expect("allreduce");
            for k in 0..3 {
                let want = (0..n).map(|q| v(q, k)).fold(None, |acc: Option<$t>, x| {
                    Some(match (acc, op) {
                        (None, _) => x,
                        (Some(a), ReduceOp::Sum) => a + x,
                        (Some(a), ReduceOp::Min) => {
                            if x < a {
                                x
                            } else {
                                a
                            }
                        }
                        (Some(a), ReduceOp::Max) => {
                            if x > a {
                                x
                            } else {
                                a
                            }
                        }
                        (Some(a), ReduceOp::BitwiseOr) => or_any(a, x),
                    })
                });
                assert_eq!(Some(recv[k]), want, "{} {op:?} element {k}", stringify!($t));
            }
        }
    }};
}

trait OrAny {
    fn or_any(self, other: Self) -> Self;
}
macro_rules! or_int {
    ($($t:ty),*) => {$(impl OrAny for $t { fn or_any(self, o: Self) -> Self { self | o } })*};
}
or_int!(i32, i64, u8, u32, u64, usize);
impl OrAny for f32 {
    fn or_any(self, _: Self) -> Self {
        unreachable!("BitwiseOr is not used on floats")
    }
}
impl OrAny for f64 {
    fn or_any(self, _: Self) -> Self {
        unreachable!("BitwiseOr is not used on floats")
    }
}
fn or_any<T: OrAny>(a: T, b: T) -> T {
    a.or_any(b)
}

fn expect_unsupported<C: Communicator, T: CommData>(c: &C, op: ReduceOp, caps: Caps, what: &str) {
    let send = vec![T::default(); 2];
    let mut recv = vec![T::default(); 2];
    let res = c.allreduce(&send, &mut recv, op);
    if caps.checks_types {
        match res {
            Err(CommError::CollectiveFailed {
                operation, message, ..
            }) => {
                assert_eq!(operation, "allreduce");
                assert!(
                    message.contains(what),
                    "message should name {what}: {message}"
                );
                assert!(
                    message.contains(&format!("{op:?}")),
                    "message should name {op:?}: {message}"
                );
            }
            other => panic!("{what} {op:?}: expected CollectiveFailed, got {other:?}"),
        }
    } else {
        // LocalBackend copies without looking at the type.
        res.expect("local allreduce is an identity copy");
    }
}

/// Expect `res` to be the shm backend's refusal of a type that is not plain
/// data, for `operation`, naming `what`.
#[cfg(not(feature = "mpi"))]
fn expect_refused<T: std::fmt::Debug>(res: Result<T, CommError>, operation: &str, what: &str) {
    match res {
        Err(CommError::CollectiveFailed {
            operation: op,
            mpi_error_code,
            message,
        }) => {
            assert_eq!((op, mpi_error_code), (operation, MPI_ERR_TYPE), "{message}");
            assert!(
                message.contains(what) && message.contains("not plain data"),
                "{operation}: message should name {what}: {message}"
            );
        }
        other => panic!("{operation} of {what}: expected a refusal, got {other:?}"),
    }
}

/// A plain-data record a program registers with `register_plain_data`.
#[cfg(not(feature = "mpi"))]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct Record {
    value: f64,
    slot: u64,
}

/// Holds a pointer: must never reach another process.
#[cfg(not(feature = "mpi"))]
#[derive(Clone, Copy, Debug, Default)]
#[allow(dead_code)] // the field exists to hold a pointer
struct HoldsRef {
    name: &'static str,
}

/// A reference to a `Vec` (`Vec` itself is not `Copy`, so not `CommData`).
#[cfg(not(feature = "mpi"))]
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // the field exists to hold a pointer
struct HoldsVec(&'static Vec<u64>);

#[cfg(not(feature = "mpi"))]
impl Default for HoldsVec {
    fn default() -> Self {
        static EMPTY: Vec<u64> = Vec::new();
        Self(&EMPTY)
    }
}

/// A reference to a `Box` (`Box` itself is not `Copy`, so not `CommData`).
#[cfg(not(feature = "mpi"))]
#[derive(Clone, Copy, Debug)]
#[allow(dead_code, clippy::borrowed_box)] // the field exists to hold a pointer to a Box
struct HoldsBox(&'static Box<u64>);

#[cfg(not(feature = "mpi"))]
impl Default for HoldsBox {
    fn default() -> Self {
        Self(Box::leak(Box::new(Box::new(7))))
    }
}

/// Every collective and `create_shared_region` refuse `T` on every rank.
#[cfg(not(feature = "mpi"))]
fn refuse_everywhere<C: Communicator + SharedMemoryProvider, T: CommData + std::fmt::Debug>(
    c: &C,
    what: &str,
) {
    let n = c.size();
    let mut buf = [T::default(); 2];
    expect_refused(c.broadcast(&mut buf, 0), "broadcast", what);
    let (counts, displs) = counts_displs(&vec![2; n]);
    let mut all = vec![T::default(); 2 * n];
    expect_refused(
        c.allgatherv(&buf, &mut all, &counts, &displs),
        "allgatherv",
        what,
    );
    let mut out = [T::default(); 2];
    expect_refused(
        c.allreduce(&buf, &mut out, ReduceOp::Sum),
        "allreduce",
        what,
    );
    expect_refused(
        c.create_shared_region::<T>(8).map(|_| ()),
        "create_shared_region",
        what,
    );
}

/// The generic body: one case, any backend.
fn run_case<C: BlockPublish>(c: &C, case: &str, caps: Caps) {
    let handled = collective_case(c, case, caps)
        || shared_memory_case(c, case, caps)
        || error_case(c, case, caps)
        || own_case(c, case, caps);
    assert!(handled, "unknown case {case}");
}

/// The collectives, rank and size, and their sequencing (§1.1–§1.6). Whether `case` is one of them.
fn collective_case<C: BlockPublish>(c: &C, case: &str, caps: Caps) -> bool {
    let (r, n) = (c.rank(), c.size());
    match case {
        // ---- §1.1 allgatherv (C1–C5)
        "allgatherv_heterogeneous" => {
            let counts: Vec<usize> = (0..n)
                .map(|q| match q {
                    0 => 3,
                    1 => 5,
                    q => q + 1,
                })
                .collect();
            let data = |q: usize| -> Vec<f64> {
                match q {
                    0 => vec![1.0, 2.0, 3.0],
                    1 => vec![4.0, 5.0, 6.0, 7.0, 8.0],
                    q => (0..=q).map(|k| (100 * q + k) as f64).collect(),
                }
            };
            let recv = gather_f64(c, &data(r), &counts);
            let want: Vec<f64> = (0..n).flat_map(data).collect();
            assert_eq!(recv, want);
        }
        "allgatherv_identity_size1" => {
            if n == 1 {
                let recv = gather_f64(c, &[10.0, 20.0, 30.0], &[3]);
                assert_eq!(recv, vec![10.0, 20.0, 30.0]);
            } else {
                let recv = gather_f64(c, &[10.0 * r as f64], &vec![1; n]);
                assert_eq!(recv, (0..n).map(|q| 10.0 * q as f64).collect::<Vec<_>>());
            }
        }
        "allgatherv_empty_send" => {
            // The last rank sends nothing; gaps of one element between
            // blocks must stay untouched.
            let counts: Vec<usize> = (0..n).map(|q| if q == n - 1 { 0 } else { q + 2 }).collect();
            let mut displs = vec![0; n];
            for q in 1..n {
                displs[q] = displs[q - 1] + counts[q - 1] + 1;
            }
            let len = displs[n - 1] + counts[n - 1] + 1;
            let send: Vec<f64> = (0..counts[r]).map(|k| (r * 10 + k) as f64).collect();
            let mut recv = vec![-1.0; len];
            c.allgatherv(&send, &mut recv, &counts, &displs)
                .expect("allgatherv");
            let mut want = vec![-1.0; len];
            for q in 0..n {
                for k in 0..counts[q] {
                    want[displs[q] + k] = (q * 10 + k) as f64;
                }
            }
            assert_eq!(recv, want);
        }
        "allgatherv_single_element" => {
            let recv = gather_f64(c, &[r as f64], &vec![1; n]);
            assert_eq!(recv, (0..n).map(|q| q as f64).collect::<Vec<_>>());
        }
        "allgatherv_large_payload" => {
            let recv = gather_f64(c, &vec![r as f64; 100_000], &vec![100_000; n]);
            for q in 0..n {
                assert!(recv[q * 100_000..(q + 1) * 100_000]
                    .iter()
                    .all(|&x| x == q as f64));
            }
        }
        // ---- §1.2 allreduce (C6–C10)
        "allreduce_sum" => {
            let mut recv = [0.0; 4];
            c.allreduce(&[1.0, 2.0, 3.0, 4.0], &mut recv, ReduceOp::Sum)
                .expect("allreduce");
            let k = n as f64;
            assert_eq!(recv, [k, 2.0 * k, 3.0 * k, 4.0 * k]);
        }
        "allreduce_min" => {
            let mut recv = [0.0; 2];
            c.allreduce(&[r as f64, (n - r) as f64], &mut recv, ReduceOp::Min)
                .expect("allreduce");
            assert_eq!(recv, [0.0, 1.0]);
        }
        "allreduce_identity_size1" => {
            let mut recv = [0.0; 2];
            c.allreduce(&[42.0, 99.0], &mut recv, ReduceOp::Sum)
                .expect("allreduce");
            assert_eq!(recv, [42.0 * n as f64, 99.0 * n as f64]);
        }
        "allreduce_single_element" => {
            let mut recv = [0.0];
            c.allreduce(&[r as f64], &mut recv, ReduceOp::Sum)
                .expect("allreduce");
            assert_eq!(recv[0], (0..n).sum::<usize>() as f64);
        }
        "allreduce_max" => {
            let mut recv = [0.0; 2];
            c.allreduce(&[r as f64, (n - 1 - r) as f64], &mut recv, ReduceOp::Max)
                .expect("allreduce");
            assert_eq!(recv, [(n - 1) as f64, (n - 1) as f64]);
        }
        // ---- §1.3 broadcast (C11–C13)
        "broadcast_root0" => {
            let mut buf = if r == 0 {
                vec![3.14, 2.72, 1.41]
            } else {
                vec![0.0; 3]
            };
            c.broadcast(&mut buf, 0).expect("broadcast");
            assert_eq!(buf, vec![3.14, 2.72, 1.41]);
        }
        "broadcast_root_last" => {
            let mut buf = if r == n - 1 {
                vec![100.0, 200.0]
            } else {
                vec![0.0; 2]
            };
            c.broadcast(&mut buf, n - 1).expect("broadcast");
            assert_eq!(buf, vec![100.0, 200.0]);
        }
        "broadcast_data_integrity" => {
            let mut buf: Vec<f64> = if r == 0 {
                (0..10_000).map(|i| i as f64).collect()
            } else {
                vec![0.0; 10_000]
            };
            c.broadcast(&mut buf, 0).expect("broadcast");
            assert!(buf.iter().enumerate().all(|(i, &x)| x == i as f64));
        }
        // ---- §1.4 barrier (C14–C15)
        "barrier_write_before_read_after" => {
            // The leader writes (cobre-comm's contract), a barrier orders
            // the writes before every rank's reads.
            let mut region = c.create_shared_region::<u64>(n).expect("region");
            for (i, x) in region.as_mut_slice().iter_mut().enumerate() {
                *x = i as u64 + 1;
            }
            c.barrier().expect("barrier");
            if caps.shared || c.is_leader() {
                let seen: Vec<u64> = region.as_slice().to_vec();
                assert_eq!(seen, (1..=n as u64).collect::<Vec<_>>());
            }
        }
        "barrier_repeated" => {
            for _ in 0..3 {
                c.barrier().expect("barrier");
            }
        }
        // ---- §1.5 rank and size (C16–C18)
        "rank_in_range" => assert!(r < n),
        "size_consistent" => {
            for root in 0..n {
                let mut v = [if r == root { n as u64 } else { 0 }];
                c.broadcast(&mut v, root).expect("broadcast");
                assert_eq!(v[0], n as u64);
            }
        }
        "rank_unique" => {
            let mut ranks = vec![0u64; n];
            let (counts, displs) = counts_displs(&vec![1; n]);
            c.allgatherv(&[r as u64], &mut ranks, &counts, &displs)
                .expect("allgatherv");
            ranks.sort_unstable();
            assert_eq!(ranks, (0..n as u64).collect::<Vec<_>>());
        }
        // ---- §1.6 sequencing (C19)
        "collective_sequence" => {
            let first = gather_f64(c, &[r as f64, r as f64 + 0.5], &vec![2; n]);
            let mut sum = [0.0];
            c.allreduce(&[1.0], &mut sum, ReduceOp::Sum)
                .expect("allreduce");
            c.barrier().expect("barrier");
            let second = gather_f64(c, &[1000.0 + r as f64], &vec![1; n]);
            assert_eq!(
                first,
                (0..n)
                    .flat_map(|q| [q as f64, q as f64 + 0.5])
                    .collect::<Vec<_>>()
            );
            assert_eq!(sum[0], n as f64);
            assert_eq!(
                second,
                (0..n).map(|q| 1000.0 + q as f64).collect::<Vec<_>>()
            );
        }
        _ => return false,
    }
    true
}

/// `SharedMemoryProvider` (§1.7). Whether `case` is one of them.
fn shared_memory_case<C: BlockPublish>(c: &C, case: &str, caps: Caps) -> bool {
    let (r, n) = (c.rank(), c.size());
    match case {
        // ---- §1.7 SharedMemoryProvider (C20–C23)
        "shared_region_lifecycle" => {
            let mut region = c.create_shared_region::<f64>(100).expect("region");
            if c.is_leader() {
                for (i, x) in region.as_mut_slice().iter_mut().enumerate() {
                    *x = i as f64;
                }
            }
            region.fence().expect("fence");
            if caps.shared || c.is_leader() {
                assert_eq!(
                    region.as_slice(),
                    (0..100).map(|i| i as f64).collect::<Vec<_>>().as_slice()
                );
            }
        }
        "shared_region_is_leader" => {
            let mut flags = vec![0u8; n];
            let (counts, displs) = counts_displs(&vec![1; n]);
            c.allgatherv(&[u8::from(c.is_leader())], &mut flags, &counts, &displs)
                .expect("allgatherv");
            let mut want = vec![0u8; n];
            want[0] = 1;
            assert_eq!(flags, want, "exactly local rank 0 leads");
        }
        "split_local_rank_size" => match c.split_local() {
            Ok(local) => {
                assert_eq!(
                    n, 1,
                    "a multi-rank job must not claim a one-rank local communicator"
                );
                assert_eq!((local.rank(), local.size()), (0, 1));
                local.barrier().expect("local barrier");
            }
            Err(CommError::CollectiveFailed {
                operation, message, ..
            }) => {
                assert!(n > 1);
                assert_eq!(operation, "split_local");
                assert!(message.contains("local_comm"), "{message}");
            }
            Err(other) => panic!("unexpected {other:?}"),
        },
        "shared_region_drop" => {
            for round in 0..3 {
                let mut region = c.create_shared_region::<f64>(1000).expect("region");
                let counts: Vec<usize> = (0..n)
                    .map(|q| {
                        let (lo, hi) = cobre_shm::region::block(1000, n, q);
                        hi - lo
                    })
                    .collect();
                let (lo, hi) = cobre_shm::region::block(1000, n, r);
                let mine: Vec<f64> = (lo..hi).map(|i| (round * 1000 + i) as f64).collect();
                c.publish_blocks(&mut region, 0, &counts, &mine)
                    .expect("publish_blocks");
                assert!(region
                    .as_slice()
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == (round * 1000 + i) as f64));
                drop(region);
            }
        }
        _ => return false,
    }
    true
}

/// Errors for bad arguments (§1.8). Whether `case` is one of them.
fn error_case<C: BlockPublish>(c: &C, case: &str, caps: Caps) -> bool {
    let (r, n) = (c.rank(), c.size());
    match case {
        // ---- §1.8 errors (C24–C28)
        "allreduce_buffer_mismatch" => {
            let mut recv = [0.0; 3];
            match c.allreduce(&[1.0, 2.0, 3.0, 4.0], &mut recv, ReduceOp::Sum) {
                Err(CommError::InvalidBufferSize {
                    operation: "allreduce",
                    expected: 4,
                    actual: 3,
                }) => {}
                other => panic!("unexpected {other:?}"),
            }
            match c.allreduce::<f64>(&[], &mut [], ReduceOp::Sum) {
                Err(CommError::InvalidBufferSize {
                    operation: "allreduce",
                    expected: 1,
                    actual: 0,
                }) => {}
                other => panic!("unexpected {other:?}"),
            }
            c.barrier()
                .expect("the job is still healthy after a rejected call");
        }
        "allgatherv_recv_too_small" => {
            let (counts, displs) = counts_displs(&vec![2; n]);
            let mut recv = vec![0.0; 2 * n - 1];
            match c.allgatherv(&[1.0, 2.0], &mut recv, &counts, &displs) {
                Err(CommError::InvalidBufferSize {
                    operation: "allgatherv",
                    expected,
                    actual,
                }) => {
                    assert_eq!((expected, actual), (2 * n, 2 * n - 1));
                }
                other => panic!("unexpected {other:?}"),
            }
            match c.allgatherv(
                &[1.0, 2.0],
                &mut vec![0.0; 2 * n],
                &counts[..n - 1],
                &displs[..n - 1],
            ) {
                Err(CommError::InvalidBufferSize {
                    operation: "allgatherv",
                    expected,
                    actual,
                }) => {
                    assert_eq!((expected, actual), (n, n - 1));
                }
                other => panic!("unexpected {other:?}"),
            }
            match c.allgatherv(&[1.0], &mut vec![0.0; 2 * n], &counts, &displs) {
                Err(CommError::InvalidBufferSize {
                    operation: "allgatherv",
                    expected: 2,
                    actual: 1,
                }) => {}
                other => panic!("unexpected {other:?}"),
            }
            c.barrier()
                .expect("the job is still healthy after a rejected call");
        }
        "broadcast_invalid_root" => match c.broadcast(&mut [0.0; 2], 5) {
            Err(CommError::InvalidRoot { root: 5, size }) => assert_eq!(size, n),
            other => panic!("unexpected {other:?}"),
        },
        "barrier_timeout" => {
            // Rank 1.. never reach the barrier: they exit. Rank 0 must fail
            // fast (the shm backend sees the dead ranks' lock bytes).
            if r == 0 {
                let t = Instant::now();
                let res = c.barrier();
                if n == 1 {
                    res.expect("a one-rank barrier completes");
                } else {
                    match res {
                        Err(CommError::CollectiveFailed {
                            operation: "barrier",
                            mpi_error_code: 0,
                            message,
                        }) => {
                            assert!(message.contains("died"), "{message}");
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                    assert!(
                        t.elapsed() < Duration::from_secs(2),
                        "took {:?}",
                        t.elapsed()
                    );
                }
            }
        }
        "shared_region_excessive_size" => {
            if caps.shared {
                match c.create_shared_region::<f64>(usize::MAX / 2) {
                    Err(CommError::AllocationFailed {
                        requested_bytes,
                        message,
                    }) => {
                        assert_eq!(requested_bytes, usize::MAX, "saturated byte count");
                        assert!(message.contains("address space"), "{message}");
                    }
                    other => panic!("unexpected {:?}", other.map(|_| "a region")),
                }
                // Fits the address space, not /dev/shm: rank 0's failure reaches everyone.
                match c.create_shared_region::<u8>(1 << 50) {
                    Err(CommError::AllocationFailed {
                        requested_bytes,
                        message,
                    }) => {
                        assert_eq!(requested_bytes, 1 << 50);
                        assert!(message.contains("/dev/shm"), "{message}");
                    }
                    other => panic!("unexpected {:?}", other.map(|_| "a region")),
                }
                c.barrier()
                    .expect("the job is still healthy after failed allocations");
            }
            // HeapFallback aborts on OOM by Rust's rules (the backend testing spec's §1.8.5).
        }
        _ => return false,
    }
    true
}

/// cobre-shm's own cases. Whether `case` is one of them.
fn own_case<C: BlockPublish>(c: &C, case: &str, caps: Caps) -> bool {
    let (r, n) = (c.rank(), c.size());
    match case {
        // ---- cobre-shm's own cases
        "mixed_10000" => mixed_collectives(c, 10_000),
        "allreduce_rank_order" => {
            // Values of very different magnitudes: any other summation order
            // would round differently. Every element must equal the fold in
            // rank order 0, 1, …, R-1, bit for bit, whatever the chunking
            // (staging size) and path (direct or reduce-scatter).
            let v = |q: usize, i: usize| {
                let m = ((q * 7919 + i * 104_729) % 1000) as f64 * 1e-3;
                if (q + i) % 3 == 0 {
                    m * 1e12
                } else {
                    m - 0.5
                }
            };
            for len in [1usize, 7, 4099, 100_003] {
                let send: Vec<f64> = (0..len).map(|i| v(r, i)).collect();
                let mut sum = vec![0.0; len];
                c.allreduce(&send, &mut sum, ReduceOp::Sum)
                    .expect("allreduce");
                let mut hash = 0xcbf2_9ce4_8422_2325u64;
                for (i, x) in sum.iter().enumerate() {
                    let want = (1..n).fold(v(0, i), |a, q| a + v(q, i));
                    assert_eq!(x.to_bits(), want.to_bits(), "len {len} element {i}");
                    hash = (hash ^ x.to_bits()).wrapping_mul(0x100_0000_01b3);
                }
                println!("HASH {len} {hash:016x}");
            }
        }
        "single_copy" | "staged_only" => {
            // COBRE_SHM_CMA_MIN_BYTES=1: every allgatherv of more than one
            // rank reads peers' memory directly; =0: never.
            let per_rank = 3 * 65536 + 5 * r;
            let counts: Vec<usize> = (0..n).map(|q| 3 * 65536 + 5 * q).collect();
            let send: Vec<u32> = (0..per_rank).map(|k| (r * 7_000_000 + k) as u32).collect();
            let displs = cobre_comm::prefix_displs(&counts);
            let mut recv = vec![0u32; counts.iter().sum()];
            c.allgatherv(&send, &mut recv, &counts, &displs)
                .expect("allgatherv");
            for q in 0..n {
                for k in 0..counts[q] {
                    assert_eq!(recv[displs[q] + k], (q * 7_000_000 + k) as u32);
                }
            }
            for root in 0..n {
                let mut buf: Vec<f64> = if r == root {
                    (0..300_001).map(|i| i as f64 + root as f64).collect()
                } else {
                    vec![0.0; 300_001]
                };
                c.broadcast(&mut buf, root).expect("broadcast");
                assert!(buf
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == i as f64 + root as f64));
            }
            mixed_collectives(c, 2000);
        }
        "streaming_broadcast" => {
            // Run with every broadcast piece written by non-temporal stores
            // (COBRE_SHM_STREAM_MIN_BYTES=1, huge maximum) and 64 KiB
            // staging: inline, partial-line, unaligned-tail and multi-window
            // lengths, every root, data that changes every round.
            for round in 0..40u64 {
                for len in [1usize, 24, 25, 63, 65, 4099, 32_771, 65_536, 200_001] {
                    let root = (round as usize + len) % n;
                    let val = |i: usize| (i as u64 * 31 + round * 7 + root as u64) as u8;
                    let mut buf: Vec<u8> = if r == root {
                        (0..len).map(val).collect()
                    } else {
                        vec![0xEE; len]
                    };
                    c.broadcast(&mut buf, root).expect("broadcast");
                    assert!(
                        buf.iter().enumerate().all(|(i, &x)| x == val(i)),
                        "round {round}, {len} bytes from rank {root}"
                    );
                }
            }
            mixed_collectives(c, 2000);
        }
        "staging_4x" => {
            // Run with COBRE_SHM_STAGING_BYTES=65536: four windows and a bit.
            let per_rank = (4 * 65536 / 8 + 77) / n + 1;
            let send: Vec<f64> = (0..per_rank).map(|k| (r * 1_000_000 + k) as f64).collect();
            let recv = gather_f64(c, &send, &vec![per_rank; n]);
            for q in 0..n {
                for k in 0..per_rank {
                    assert_eq!(recv[q * per_rank + k], (q * 1_000_000 + k) as f64);
                }
            }
            let len = 4 * 65536 / 8 + 13;
            let mut buf: Vec<u64> = if r == n - 1 {
                (0..len as u64).collect()
            } else {
                vec![0; len]
            };
            c.broadcast(&mut buf, n - 1).expect("broadcast");
            assert!(buf.iter().enumerate().all(|(i, &x)| x == i as u64));
            let send: Vec<u64> = (0..len as u64).map(|i| i * (r as u64 + 1)).collect();
            let mut sum = vec![0u64; len];
            c.allreduce(&send, &mut sum, ReduceOp::Sum)
                .expect("allreduce");
            let k = (n * (n + 1) / 2) as u64;
            assert!(sum.iter().enumerate().all(|(i, &x)| x == i as u64 * k));
        }
        "allreduce_all_types" => {
            check_reduce_type!(c, f32, false);
            check_reduce_type!(c, f64, false);
            check_reduce_type!(c, i32, true);
            check_reduce_type!(c, i64, true);
            check_reduce_type!(c, u8, true);
            check_reduce_type!(c, u32, true);
            check_reduce_type!(c, u64, true);
            expect_unsupported::<C, f64>(c, ReduceOp::BitwiseOr, caps, "f64");
            expect_unsupported::<C, f32>(c, ReduceOp::BitwiseOr, caps, "f32");
            // With the `mpi` feature, cobre-comm narrows CommData to MPI's
            // primitive types, so these do not even compile then.
            #[cfg(not(feature = "mpi"))]
            {
                check_reduce_type!(c, usize, true);
                expect_unsupported::<C, i16>(c, ReduceOp::Sum, caps, "i16");
                if caps.checks_types {
                    // Not plain data: refused before the reduction is looked at.
                    let mut out = [false; 2];
                    expect_refused(
                        c.allreduce(&[true, false], &mut out, ReduceOp::Max),
                        "allreduce",
                        "bool",
                    );
                    let mut out = [(0.0, 0.0); 2];
                    expect_refused(
                        c.allreduce(&[(1.0, 2.0); 2], &mut out, ReduceOp::Min),
                        "allreduce",
                        "(f64, f64)",
                    );
                }
            }
            c.barrier()
                .expect("the job is still healthy after rejected calls");
        }
        #[cfg(not(feature = "mpi"))]
        "any_commdata" => {
            if caps.checks_types {
                // shm: what may hold a pointer is refused on every rank, and
                // the communicator stays usable.
                refuse_everywhere::<C, &'static str>(c, "&str");
                refuse_everywhere::<C, HoldsVec>(c, "HoldsVec");
                refuse_everywhere::<C, HoldsBox>(c, "HoldsBox");
                refuse_everywhere::<C, HoldsRef>(c, "HoldsRef");
                refuse_everywhere::<C, (u8, u64)>(c, "(u8, u64)");
                refuse_everywhere::<C, bool>(c, "bool");
                refuse_everywhere::<C, ()>(c, "()");
                let mut sum = [0.0];
                c.allreduce(&[1.5], &mut sum, ReduceOp::Sum)
                    .expect("the next collective works");
                assert_eq!(sum[0], 1.5 * n as f64);
            } else {
                // local: one process, so LocalBackend moves any CommData.
                let mut flags = [true, false, true];
                c.broadcast(&mut flags, 0).expect("broadcast");
                let mut names = ["a", "b"];
                c.broadcast(&mut names, 0).expect("broadcast");
                assert_eq!(names, ["a", "b"]);
            }
            registered_pod_record(c);
        }
        #[cfg(feature = "mpi")]
        "any_commdata" => {
            // Under the `mpi` feature CommData is MPI's primitive types only.
            let mut v = if r == 0 { [7u8, 8, 9] } else { [0u8; 3] };
            c.broadcast(&mut v, 0).expect("broadcast");
            assert_eq!(v, [7, 8, 9]);
        }
        "region_ownership" => {
            // cobre-comm's contract: the leader writes the whole region,
            // every other rank gets an empty mutable view.
            let mut region = c.create_shared_region::<u64>(64).expect("region");
            let writable = region.as_mut_slice().len();
            assert_eq!(writable, if c.is_leader() { 64 } else { 0 }, "rank {r}");
            // Blocks: a rank writes exactly its own block, and a block of
            // the wrong length is refused before anything is written.
            let counts = vec![3; n];
            let wrong = c.publish_blocks(&mut region, 0, &counts, &[9, 9]);
            assert!(
                matches!(
                    wrong,
                    Err(CommError::InvalidBufferSize {
                        operation: "publish_blocks",
                        expected: 3,
                        actual: 2
                    })
                ),
                "{wrong:?}"
            );
            let too_far = c.publish_blocks(&mut region, 64 - 3 * n + 1, &counts, &[1, 2, 3]);
            assert!(
                matches!(too_far, Err(CommError::InvalidBufferSize { .. })),
                "{too_far:?}"
            );
            let mine = [r as u64 * 10, r as u64 * 10 + 1, r as u64 * 10 + 2];
            c.publish_blocks(&mut region, 5, &counts, &mine)
                .expect("publish_blocks");
            let seen = region.as_slice();
            for q in 0..n {
                let q = q as u64;
                assert_eq!(
                    &seen[5 + 3 * q as usize..8 + 3 * q as usize],
                    &[q * 10, q * 10 + 1, q * 10 + 2]
                );
            }
            assert!(seen[..5].iter().all(|&x| x == 0), "{seen:?}");
            assert!(seen[5 + 3 * n..].iter().all(|&x| x == 0), "{seen:?}");
            // Lanes: readers see only what was published.
            let mut lanes = cobre_shm::BlockRegion::<f64, C>::new(c, 2, 4 * n).expect("lanes");
            assert!(lanes.lane(0).is_empty() && lanes.lane(1).is_empty());
            let w = lanes
                .append(c, 1, &vec![2; n], &[r as f64, 0.5])
                .expect("append");
            assert_eq!(w, 0..2 * n);
            assert!(lanes.lane(0).is_empty());
            assert_eq!(lanes.lane(1).len(), 2 * n);
            let w = lanes.append(c, 1, &vec![1; n], &[7.0]).expect("append");
            assert_eq!(w, 2 * n..3 * n);
            assert_eq!(lanes.lane(1)[2 * n..], vec![7.0; n][..]);
            let over = lanes.append(c, 1, &vec![2; n], &[0.0, 0.0]);
            assert!(
                matches!(over, Err(CommError::InvalidBufferSize { .. })),
                "{over:?}"
            );
            c.barrier().expect("the job is still healthy");
        }
        "region_distributed_population" => {
            // The opening-tree pattern: each rank fills its own block.
            let count = 10_007;
            let mut region = c.create_shared_region::<f64>(count).expect("region");
            let counts: Vec<usize> = (0..n)
                .map(|q| {
                    let (lo, hi) = cobre_shm::region::block(count, n, q);
                    hi - lo
                })
                .collect();
            let (lo, hi) = cobre_shm::region::block(count, n, r);
            let mine: Vec<f64> = (lo..hi).map(|i| (i * i) as f64).collect();
            c.publish_blocks(&mut region, 0, &counts, &mine)
                .expect("publish_blocks");
            assert!(region
                .as_slice()
                .iter()
                .enumerate()
                .all(|(i, &x)| x == (i * i) as f64));
        }
        _ => return false,
    }
    true
}

/// A registered `Pod` struct crosses processes through every collective and
/// a shared region.
#[cfg(not(feature = "mpi"))]
fn registered_pod_record<C: BlockPublish>(c: &C) {
    let (r, n) = (c.rank(), c.size());
    cobre_shm::register_plain_data::<Record>();
    let rec = |q: usize, k: usize| Record {
        value: q as f64 + 0.25 * k as f64,
        slot: (q * 10 + k) as u64,
    };
    let mine = [rec(r, 0), rec(r, 1)];
    let (counts, displs) = counts_displs(&vec![2; n]);
    let mut all = vec![Record::default(); 2 * n];
    c.allgatherv(&mine, &mut all, &counts, &displs)
        .expect("allgatherv of a registered Pod struct");
    for q in 0..n {
        assert_eq!(all[2 * q..2 * q + 2], [rec(q, 0), rec(q, 1)]);
    }
    let mut b = if r == n - 1 {
        [rec(9, 9)]
    } else {
        [Record::default()]
    };
    c.broadcast(&mut b, n - 1).expect("broadcast");
    assert_eq!(b, [rec(9, 9)]);
    let mut region = c.create_shared_region::<Record>(2 * n).expect("region");
    c.publish_blocks(&mut region, 0, &counts, &mine)
        .expect("publish_blocks");
    assert_eq!(region.as_slice(), &all[..]);
}

/// `steps` collectives of every kind, back to back, each checked exactly.
fn mixed_collectives<C: Communicator>(c: &C, steps: usize) {
    let (r, n) = (c.rank(), c.size());
    let value = |step: usize, q: usize, k: usize| ((step * 131 + q * 17 + k) % 100_003) as f64;
    for step in 0..steps {
        match step % 4 {
            0 => {
                let counts: Vec<usize> = (0..n).map(|q| (step + q) % 5).collect();
                let send: Vec<f64> = (0..counts[r]).map(|k| value(step, r, k)).collect();
                let recv = gather_f64(c, &send, &counts);
                let want: Vec<f64> = (0..n)
                    .flat_map(|q| (0..counts[q]).map(move |k| value(step, q, k)))
                    .collect();
                assert_eq!(recv, want, "allgatherv at step {step}");
            }
            1 => {
                let send = [step as u64 + r as u64, 1];
                let mut recv = [0u64; 2];
                c.allreduce(&send, &mut recv, ReduceOp::Sum)
                    .expect("allreduce");
                let want = (0..n as u64).map(|q| step as u64 + q).sum::<u64>();
                assert_eq!(recv, [want, n as u64], "allreduce at step {step}");
            }
            2 => {
                let root = step % n;
                let mut buf = if r == root {
                    vec![value(step, root, 0); 3]
                } else {
                    vec![0.0; 3]
                };
                c.broadcast(&mut buf, root).expect("broadcast");
                assert_eq!(
                    buf,
                    vec![value(step, root, 0); 3],
                    "broadcast at step {step}"
                );
            }
            _ => c.barrier().expect("barrier"),
        }
    }
}

/// Entry point of rank processes (ignored in normal runs).
#[test]
#[ignore = "rank process entry point; run through the other tests"]
fn rank_entry() {
    let Ok(case) = std::env::var("COBRE_TEST_CASE") else {
        return;
    };
    let comm = create_communicator().expect("create communicator");
    match &comm {
        Comm::Shm(shm) => {
            run_case(
                shm,
                &case,
                Caps {
                    shared: true,
                    checks_types: true,
                },
            );
            shm_only_checks(shm, &case);
        }
        Comm::Local(local) => run_case(
            local,
            &case,
            Caps {
                shared: false,
                checks_types: false,
            },
        ),
        #[cfg(feature = "mpi")]
        Comm::Mpi(_) => panic!("the conformance suite runs the shm and local backends"),
    }
    println!("case {case} ok on rank {}", comm.rank());
}

/// Checks only the shm backend can make.
fn shm_only_checks(c: &cobre_shm::ShmBackend, case: &str) {
    match case {
        "split_local_rank_size" => {
            let local = c.local_comm();
            assert_eq!((local.rank(), local.size()), (c.rank(), c.size()));
            local.barrier().expect("local barrier");
        }
        "single_copy" | "staged_only" => {
            // The probe found cross-memory reads possible (same user, no
            // Yama restriction on siblings) and the threshold is the one set.
            let want = (case == "single_copy" && c.size() > 1).then_some(1);
            assert_eq!(c.single_copy_min_bytes(), want);
        }
        "shared_region_drop" | "shared_region_lifecycle" => {
            // The region is a real shared mapping whose name is already gone.
            let region = c.create_shared_region::<u64>(4096).expect("region");
            let addr = region.as_slice().as_ptr() as usize;
            let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
            let line = maps
                .lines()
                .find(|l| {
                    let range = l.split_whitespace().next().unwrap_or("");
                    let (a, b) = range.split_once('-').unwrap_or(("0", "0"));
                    let (a, b) = (
                        usize::from_str_radix(a, 16).unwrap_or(0),
                        usize::from_str_radix(b, 16).unwrap_or(0),
                    );
                    a <= addr && addr < b
                })
                .expect("region mapping in /proc/self/maps");
            assert!(
                line.contains("/dev/shm/") && line.contains("(deleted)") && line.contains("rw-s"),
                "{line}"
            );
            c.barrier().expect("barrier");
        }
        _ => {}
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod shm {
            $(
                mod $case {
                    #[test]
                    fn ranks_1() { super::super::common::run_case("rank_entry", stringify!($case), 1, "shm", &super::super::extra_env(stringify!($case))); }
                    #[test]
                    fn ranks_2() { super::super::common::run_case("rank_entry", stringify!($case), 2, "shm", &super::super::extra_env(stringify!($case))); }
                    #[test]
                    fn ranks_4() { super::super::common::run_case("rank_entry", stringify!($case), 4, "shm", &super::super::extra_env(stringify!($case))); }
                }
            )*
        }
        mod local {
            $(
                #[test]
                fn $case() { super::common::run_case("rank_entry", stringify!($case), 1, "local", &super::extra_env(stringify!($case))); }
            )*
        }
    };
}

/// `allreduce` folds in rank order at every rank count 1–8 and every
/// chunking (staging buffers of one page, 64 KiB and the default 4 MiB:
/// direct and reduce-scatter paths alike): each rank checks every element
/// against the sequential fold, and the hashes of the results agree across
/// chunkings and ranks.
#[test]
fn allreduce_is_rank_ordered_at_every_rank_count_and_chunking() {
    for ranks in 1..=8 {
        let mut seen: Option<Vec<String>> = None;
        for staging in ["4096", "65536", "4194304"] {
            let out = common::run_case(
                "rank_entry",
                "allreduce_rank_order",
                ranks,
                "shm",
                &[("COBRE_SHM_STAGING_BYTES", staging.to_string())],
            );
            for o in &out {
                let hashes: Vec<String> = o
                    .stdout
                    .lines()
                    .filter(|l| l.starts_with("HASH "))
                    .map(str::to_string)
                    .collect();
                assert_eq!(hashes.len(), 4, "{}", o.describe());
                match &seen {
                    None => seen = Some(hashes),
                    Some(h) => assert_eq!(h, &hashes, "{ranks} ranks, staging {staging}"),
                }
            }
        }
    }
}

fn extra_env(case: &str) -> Vec<(&'static str, String)> {
    match case {
        "staging_4x" => vec![("COBRE_SHM_STAGING_BYTES", "65536".to_string())],
        "single_copy" => vec![("COBRE_SHM_CMA_MIN_BYTES", "1".to_string())],
        "staged_only" => vec![("COBRE_SHM_CMA_MIN_BYTES", "0".to_string())],
        "streaming_broadcast" => vec![
            ("COBRE_SHM_STREAM_MIN_BYTES", "1".to_string()),
            ("COBRE_SHM_STREAM_MAX_BYTES", (1u64 << 40).to_string()),
            ("COBRE_SHM_STAGING_BYTES", "65536".to_string()),
        ],
        _ => vec![],
    }
}

conformance!(
    allgatherv_heterogeneous,
    allgatherv_identity_size1,
    allgatherv_empty_send,
    allgatherv_single_element,
    allgatherv_large_payload,
    allreduce_sum,
    allreduce_min,
    allreduce_identity_size1,
    allreduce_single_element,
    allreduce_max,
    broadcast_root0,
    broadcast_root_last,
    broadcast_data_integrity,
    barrier_write_before_read_after,
    barrier_repeated,
    rank_in_range,
    size_consistent,
    rank_unique,
    collective_sequence,
    shared_region_lifecycle,
    shared_region_is_leader,
    split_local_rank_size,
    shared_region_drop,
    allreduce_buffer_mismatch,
    allgatherv_recv_too_small,
    broadcast_invalid_root,
    barrier_timeout,
    shared_region_excessive_size,
    mixed_10000,
    staging_4x,
    single_copy,
    staged_only,
    streaming_broadcast,
    allreduce_all_types,
    any_commdata,
    region_distributed_population,
    region_ownership,
);
