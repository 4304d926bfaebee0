//! `cobre-shm bench`: its arguments; the measuring is `cobre_shm_bench`'s.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use cobre_shm_bench::{Options, Section};

/// `cobre-shm bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Small sizes and a small case: the whole report in a few minutes
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// Every size from 8 B to 64 MiB and a larger case (tens of minutes)
    #[arg(long)]
    pub full: bool,
    /// Report directory (replaced whole) [default: ./cobre-shm-bench]
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Rank counts for the collectives [default: 2, 4, … up to one rank per CPU]
    #[arg(long, value_delimiter = ',', value_name = "N,N,…")]
    pub rank_counts: Vec<usize>,
    /// Message sizes in bytes [default: 8 B and powers of 4 up to 4 MiB
    /// (--quick), 16 MiB, or 64 MiB (--full)]
    #[arg(long, value_delimiter = ',', value_name = "BYTES,…")]
    pub sizes: Vec<u64>,
    /// Senders rewrite their buffers before every collective call (data an
    /// application just produced) instead of reusing them unchanged
    #[arg(long)]
    pub fresh_buffers: bool,
    /// Rounds of the collectives sweeps, taking the backends in turn; each
    /// point is the median over rounds (for shared, noisy machines)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100), value_name = "N")]
    pub repeat: u16,
    /// Only these sections: machine, collectives, sddp, memory, numa, mpi [default: all]
    #[arg(long, value_delimiter = ',', value_name = "SECTION,…", value_parser = |s: &str| s.parse::<Section>())]
    pub only: Vec<Section>,
}

/// Measure and write the report.
///
/// # Errors
/// As [`cobre_shm_bench::report`].
pub fn report(args: &BenchArgs, quiet: bool) -> Result<i32, String> {
    let opts = Options {
        quick: args.quick,
        full: args.full,
        output: args.output.clone(),
        rank_counts: args.rank_counts.clone(),
        sizes: args.sizes.clone(),
        fresh_buffers: args.fresh_buffers,
        repeat: args.repeat,
        only: args.only.clone(),
    };
    cobre_shm_bench::report(&opts, quiet).map(|()| 0)
}
