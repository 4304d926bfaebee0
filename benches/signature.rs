//! Cost of a collective's barrier signature, computed on every call.
//!
//! `cargo bench -p cobre-shm-benches --bench signature` prints nanoseconds
//! per signature for a broadcast and for allgatherv at 2–64 ranks (one
//! count per rank is mixed in), beside the byte-wise FNV-1a hash the
//! signature used before (kept here only as the reference).

use std::hint::black_box;
use std::time::Instant;

use cobre_shm::sync::{OpKind, Signature};

/// The former signature: FNV-1a over every byte of every mixed value.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new(kind: OpKind) -> Self {
        Self(0xcbf2_9ce4_8422_2325).mix(kind as u64)
    }

    fn mix(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    fn element<T>(self) -> Self {
        self.mix(std::mem::size_of::<T>() as u64)
            .bytes(std::any::type_name::<T>().as_bytes())
    }

    fn bytes(self, b: &[u8]) -> Self {
        Self(b.iter().fold(self.0, |h, &x| {
            (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
        }))
    }

    fn finish(self) -> u32 {
        (self.0 ^ (self.0 >> 32)) as u32
    }
}

/// Median over 7 runs of `calls` calls of `f`, in ns per call.
fn ns_per_call(calls: u64, mut f: impl FnMut(u64) -> u32) -> f64 {
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let mut acc = 0u32;
            for i in 0..calls {
                acc ^= f(black_box(i));
            }
            black_box(acc);
            t.elapsed().as_secs_f64() * 1e9 / calls as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    println!("| signature | FNV-1a ns | now ns | FNV / now |");
    println!("|---|---:|---:|---:|");
    let fnv = ns_per_call(2_000_000, |len| {
        Fnv::new(OpKind::Broadcast)
            .element::<f64>()
            .mix(len)
            .mix(0)
            .finish()
    });
    let now = ns_per_call(2_000_000, |len| {
        Signature::new(OpKind::Broadcast)
            .element::<f64>()
            .mix(len)
            .mix(0)
            .finish()
    });
    println!("| broadcast | {fnv:.1} | {now:.1} | {:.1} |", fnv / now);
    for ranks in [2u64, 8, 16, 64] {
        let counts: Vec<u64> = (0..ranks).map(|r| 1000 + r).collect();
        let counts = &counts;
        let fnv = ns_per_call(200_000, |i| {
            counts
                .iter()
                .fold(Fnv::new(OpKind::Allgatherv).element::<f64>(), |s, &c| {
                    s.mix(c ^ (i & 1))
                })
                .finish()
        });
        let now = ns_per_call(200_000, |i| {
            counts
                .iter()
                .fold(
                    Signature::new(OpKind::Allgatherv).element::<f64>(),
                    |s, &c| s.mix(c ^ (i & 1)),
                )
                .finish()
        });
        println!(
            "| allgatherv, {ranks} ranks | {fnv:.1} | {now:.1} | {:.1} |",
            fnv / now
        );
    }
}
