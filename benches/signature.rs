//! Cost of a collective's barrier signature, computed on every call.
//!
//! `cargo bench -p cobre-shm-bench --bench signature` prints nanoseconds
//! per signature for a broadcast and for allgatherv at 2–64 ranks (one
//! count per rank is mixed in), beside the byte-wise FNV-1a hash the
//! signature used before (kept here only as the reference).

use std::hint::black_box;
use std::time::Instant;

use cobre_shm::sync::{OpKind, Signature};

/// The steps both signatures offer, so one body measures either.
trait Sig: Copy {
    fn start(kind: OpKind) -> Self;
    fn element<T>(self) -> Self;
    fn mix(self, v: u64) -> Self;
    fn done(self) -> u32;
}

impl Sig for Signature {
    fn start(kind: OpKind) -> Self {
        Signature::new(kind)
    }
    fn element<T>(self) -> Self {
        Signature::element::<T>(self)
    }
    fn mix(self, v: u64) -> Self {
        Signature::mix(self, v)
    }
    fn done(self) -> u32 {
        self.finish()
    }
}

/// The former signature: FNV-1a over every byte of every mixed value.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn bytes(self, b: &[u8]) -> Self {
        Self(b.iter().fold(self.0, |h, &x| {
            (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
        }))
    }
}

impl Sig for Fnv {
    fn start(kind: OpKind) -> Self {
        Self(0xcbf2_9ce4_8422_2325).mix(kind as u64)
    }
    fn element<T>(self) -> Self {
        self.mix(std::mem::size_of::<T>() as u64)
            .bytes(std::any::type_name::<T>().as_bytes())
    }
    fn mix(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }
    fn done(self) -> u32 {
        (self.0 ^ (self.0 >> 32)) as u32
    }
}

/// A broadcast's signature: element type, length, root.
fn broadcast<S: Sig>(len: u64) -> u32 {
    S::start(OpKind::Broadcast)
        .element::<f64>()
        .mix(len)
        .mix(0)
        .done()
}

/// An allgatherv's signature: element type and every rank's count.
fn allgatherv<S: Sig>(counts: &[u64], i: u64) -> u32 {
    counts
        .iter()
        .fold(S::start(OpKind::Allgatherv).element::<f64>(), |s, &c| {
            s.mix(c ^ (i & 1))
        })
        .done()
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
    let fnv = ns_per_call(2_000_000, broadcast::<Fnv>);
    let now = ns_per_call(2_000_000, broadcast::<Signature>);
    println!("| broadcast | {fnv:.1} | {now:.1} | {:.1} |", fnv / now);
    for ranks in [2u64, 8, 16, 64] {
        let counts: Vec<u64> = (0..ranks).map(|r| 1000 + r).collect();
        let fnv = ns_per_call(200_000, |i| allgatherv::<Fnv>(&counts, i));
        let now = ns_per_call(200_000, |i| allgatherv::<Signature>(&counts, i));
        println!(
            "| allgatherv, {ranks} ranks | {fnv:.1} | {now:.1} | {:.1} |",
            fnv / now
        );
    }
}
