//! Measuring cobre-shm: the `cobre-shm bench` workstation report in
//! minutes — the machine's copy bandwidth and cache-line latency, collective
//! latency and bandwidth against message size at several rank counts (next
//! to every installed MPI), SDDP scaling over the ranks × threads splits of
//! the cores, node memory shared against replicated, and NUMA placements.
//! [`report`] writes `report.md`, SVG plots and `results.json` into one
//! directory, atomically. The launcher's `bench` subcommand parses its
//! arguments into [`Options`] and calls [`report`]; the cargo benches in
//! `benches/` call the same code.
//!
//! Modules: `machine` (the copy and cache-line probes), `collectives` (the
//! measuring rank body, the sweeps over backends, the C program for native
//! MPI), `mpi` (which MPIs are installed), `training` (SDDP runs of the
//! launcher) and `document` (report.md, results.json and the charts, drawn
//! by `cobre-shm-plot`).
#![forbid(unsafe_code)]

mod collectives;
mod document;
mod machine;
mod mpi;
mod training;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use collectives::{rank_main, Kernel};

use cobre_shm::machine::Topology;
use collectives::Sweep;
use training::{Study, TrainRun};

/// Parts of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// Copy bandwidth and cache-line round trip.
    Machine,
    /// Collective latency and bandwidth.
    Collectives,
    /// SDDP time per iteration over the splits of the cores.
    Sddp,
    /// Node memory, shared against --replicate.
    Memory,
    /// --bind and --mempolicy placements.
    Numa,
    /// The SDDP case under mpiexec next to shm.
    Mpi,
}

impl Section {
    /// Every section, in report order.
    pub const ALL: [Self; 6] = [
        Self::Machine,
        Self::Collectives,
        Self::Sddp,
        Self::Memory,
        Self::Numa,
        Self::Mpi,
    ];

    /// The name `--only` takes.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Collectives => "collectives",
            Self::Sddp => "sddp",
            Self::Memory => "memory",
            Self::Numa => "numa",
            Self::Mpi => "mpi",
        }
    }
}

impl std::str::FromStr for Section {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|x| x.name()).collect();
                format!("unknown section '{s}' (sections: {})", names.join(", "))
            })
    }
}

/// What `cobre-shm bench` was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Small sizes and a small case: the whole report in a few minutes.
    pub quick: bool,
    /// Every size from 8 B to 64 MiB and a larger case.
    pub full: bool,
    /// Report directory (replaced whole) [default: ./cobre-shm-bench].
    pub output: Option<PathBuf>,
    /// Rank counts for the collectives [default: 2, 4, … one rank per CPU].
    pub rank_counts: Vec<usize>,
    /// Message sizes in bytes [default: by mode].
    pub sizes: Vec<u64>,
    /// Senders rewrite their buffers before every collective call.
    pub fresh_buffers: bool,
    /// Rounds of the collectives sweeps (each point the median over them).
    pub repeat: u16,
    /// Only these sections [default: all].
    pub only: Vec<Section>,
}

/// How long a run takes: sizes, case and repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A few minutes.
    Quick,
    /// Between.
    Standard,
    /// Everything.
    Full,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Quick => "quick",
            Self::Standard => "standard",
            Self::Full => "full",
        }
    }

    fn max_bytes(self) -> u64 {
        match self {
            Self::Quick => 4 << 20,
            Self::Standard => 16 << 20,
            Self::Full => 64 << 20,
        }
    }

    /// 8 B, then powers of 4 from 16 B up to the mode's largest size.
    fn sizes(self) -> Vec<u64> {
        let mut v = vec![8];
        let mut b = 16;
        while b <= self.max_bytes() {
            // --quick keeps every other power of 4.
            if self != Self::Quick || b.trailing_zeros() % 4 == 0 || b == self.max_bytes() {
                v.push(b);
            }
            b *= 4;
        }
        v
    }

    /// (hydros, stages, openings, thermals, iterations, forward passes).
    fn case(self) -> (usize, usize, usize, usize, usize, usize) {
        match self {
            Self::Quick => (20, 24, 10, 5, 4, 32),
            Self::Standard => (40, 24, 10, 5, 8, 64),
            Self::Full => (60, 48, 10, 5, 12, 128),
        }
    }
}

/// A line on stderr per step, or one bar redrawn on a terminal.
struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    quiet: bool,
    start: Instant,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        if self.quiet {
            return;
        }
        let width = 24;
        let filled = (self.done.saturating_sub(1) * width / self.total.max(1)).min(width);
        let line = format!(
            "[{}{}] {}/{} {what} ({:.0} s)",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total,
            self.start.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "bench: {line}");
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty && !self.quiet {
            eprintln!();
        }
    }
}

/// What the machine offers for the runs.
pub struct Machine {
    /// Topology found.
    pub topology: Topology,
    /// CPUs this process may use.
    pub cpus: usize,
    /// One-thread memcpy GB/s at [`MACHINE_MEMCPY_SIZES`] and every
    /// collective message size, ascending.
    pub memcpy: Vec<(u64, f64)>,
    /// Every CPU copying 64 MiB at once, summed GB/s.
    pub memcpy_all: Option<f64>,
    /// Cache-line round trip between the first two CPUs, µs.
    pub round_trip_us: Option<f64>,
}

/// Everything measured.
pub struct Results {
    /// The command that produced them.
    pub command: String,
    /// Mode.
    pub mode: Mode,
    /// Start, UTC.
    pub started: String,
    /// Machine facts, when measured.
    pub machine: Option<Machine>,
    /// Message sizes.
    pub sizes: Vec<u64>,
    /// Collective sweeps.
    pub sweeps: Vec<Sweep>,
    /// Case of the SDDP sections.
    pub case: String,
    /// Scaling runs (the first is 1×1).
    pub scaling: Vec<TrainRun>,
    /// Shared and replicated.
    pub memory: Vec<TrainRun>,
    /// Placements.
    pub numa: Vec<TrainRun>,
    /// shm and MPI.
    pub mpi: Vec<TrainRun>,
    /// Why MPI columns are missing, if they are.
    pub mpi_note: Option<String>,
    /// Senders rewrote their buffers before every collective call.
    pub fresh_buffers: bool,
}

/// CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    cobre_shm::machine::allowed_cpus()
        .map_or_else(|| vec![0], |v| v.into_iter().map(|c| c as usize).collect())
}

/// UTC now as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Rank counts: 2, 4, … up to one rank per CPU (and the CPU count).
fn default_rank_counts(cpus: usize, mode: Mode) -> Vec<usize> {
    let mut v = vec![2];
    let mut r = 4;
    while r <= cpus {
        if mode != Mode::Quick || r == cpus || r * 4 > cpus {
            v.push(r);
        }
        r *= 2;
    }
    if cpus > 2 && !v.contains(&cpus) {
        v.push(cpus);
    }
    v
}

/// Every (ranks, threads) with ranks × threads = `cpus`, and 1×1 first.
fn splits(cpus: usize) -> Vec<(usize, usize)> {
    let mut v = vec![(1, 1)];
    for r in 1..=cpus {
        if cpus % r == 0 && (r, cpus / r) != (1, 1) {
            v.push((r, cpus / r));
        }
    }
    v
}

/// Measure this machine as `args` asks and write the report.
///
/// # Errors
/// A message when the arguments are unusable or the report cannot be
/// written.
pub fn report(args: &Options, quiet: bool) -> Result<(), String> {
    let mode = if args.quick {
        Mode::Quick
    } else if args.full {
        Mode::Full
    } else {
        Mode::Standard
    };
    let want = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let cpu_list = allowed_cpus();
    let cpus = cpu_list.len();
    let limit = cobre_shm_layout::MAX_RANKS.min(cobre_shm::launch::MAX_THREADS_PER_CPU * cpus);
    let rank_counts = if args.rank_counts.is_empty() {
        default_rank_counts(cpus, mode)
    } else {
        args.rank_counts.clone()
    };
    if let Some(&bad) = rank_counts.iter().find(|&&r| r < 1 || r > limit) {
        return Err(format!(
            "--rank-counts: {bad} is outside 1..={limit} on this machine ({cpus} CPUs)"
        ));
    }
    let sizes = if args.sizes.is_empty() {
        mode.sizes()
    } else {
        args.sizes.clone()
    };
    if let Some(&bad) = sizes.iter().find(|&&b| b == 0 || b > 1 << 30) {
        return Err(format!("--sizes: {bad} bytes is outside 1 B..=1 GiB"));
    }
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("cobre-shm-bench"));
    cobre_shm_sddp::atomic_dir::check_writable(&out).map_err(|e| e.to_string())?;
    let scratch = std::env::temp_dir().join(format!("cobre-shm-bench.{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let result = measure(&Plan {
        mode,
        want: &want,
        exe: &exe,
        cpu_list: &cpu_list,
        rank_counts: &rank_counts,
        sizes: &sizes,
        scratch: &scratch,
        quiet,
        fresh: args.fresh_buffers,
        repeat: usize::from(args.repeat.max(1)),
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let results = result?;
    document::write(&out, &results)?;
    if !quiet {
        println!("report written to {}/report.md", out.display());
    }
    Ok(())
}

/// What to measure, decided from the arguments.
struct Plan<'a> {
    mode: Mode,
    want: &'a dyn Fn(Section) -> bool,
    exe: &'a Path,
    cpu_list: &'a [usize],
    rank_counts: &'a [usize],
    sizes: &'a [u64],
    scratch: &'a Path,
    quiet: bool,
    fresh: bool,
    repeat: usize,
}

/// Sizes the one-thread memcpy is measured at: the machine table's three
/// and, when collectives run, every message size (their ceiling column).
fn memcpy_sizes(p: &Plan<'_>) -> Vec<u64> {
    let mut sizes: Vec<u64> = MACHINE_MEMCPY_SIZES.to_vec();
    if (p.want)(Section::Collectives) {
        sizes.extend_from_slice(p.sizes);
    }
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The memcpy sizes of the machine table: in L2, in L3, beyond the caches.
pub const MACHINE_MEMCPY_SIZES: [u64; 3] = [256 << 10, 4 << 20, 64 << 20];

/// Every backend's collectives sweep at every rank count, in `p.repeat`
/// rounds that take the backends in turn (a slow spell of a shared machine
/// then hits every column alike), merged point by point into medians. The
/// order changes from round to round ([`sweep_order`]): with one fixed
/// order the same backend always ran right after Open MPI's largest sweep,
/// and measured up to 35 % (in one run 3–4×) slower than the identical
/// code in the next column.
fn collective_sweeps(
    p: &Plan<'_>,
    kernel: Kernel,
    mpis: &[mpi::Mpi],
    linked: Option<&mpi::Mpi>,
    progress: &mut Progress,
) -> Vec<Sweep> {
    let natives: Vec<(mpi::Mpi, Result<PathBuf, String>)> = mpis
        .iter()
        .map(|m| (m.clone(), collectives::build_native(m, p.scratch)))
        .collect();
    let mut out = Vec::new();
    for &r in p.rank_counts {
        let backends = sweep_runners(p, kernel, &natives, linked, r);
        let mut rounds = Vec::with_capacity(p.repeat);
        for round in 1..=p.repeat {
            let of = if p.repeat > 1 {
                format!(" (round {round} of {})", p.repeat)
            } else {
                String::new()
            };
            let n = backends.len();
            let mut one: Vec<Option<Sweep>> = vec![None; n];
            for k in 0..n {
                let at = sweep_order(n, round, k);
                let (label, run) = &backends[at];
                progress.step(&format!("collectives: {r} ranks, {label}{of}"));
                one[at] = Some(run());
            }
            rounds.push(one.into_iter().flatten().collect());
        }
        out.extend(collectives::merge_rounds(rounds));
    }
    out
}

/// Which of `n` backends runs `k`-th in round `round` (from 1): each round
/// starts one backend later, and every other round runs backwards, so no
/// backend always follows the same one (a slow spell set off by one
/// backend's large run would otherwise always hit its successor).
fn sweep_order(n: usize, round: usize, k: usize) -> usize {
    let start = (round - 1) % n;
    if round % 2 == 1 {
        (start + k) % n
    } else {
        (start + n - k % n) % n
    }
}

/// A labelled sweep still to run.
type Runner<'a> = (String, Box<dyn Fn() -> Sweep + 'a>);

/// The sweeps of one rank count, in the order of the report's columns.
fn sweep_runners<'a>(
    p: &'a Plan<'_>,
    kernel: Kernel,
    natives: &'a [(mpi::Mpi, Result<PathBuf, String>)],
    linked: Option<&'a mpi::Mpi>,
    r: usize,
) -> Vec<Runner<'a>> {
    let mut v: Vec<Runner<'a>> = vec![
        (
            "shm".into(),
            Box::new(move || collectives::shm(p.exe, r, p.sizes, kernel)),
        ),
        (
            "shm staged".into(),
            Box::new(move || collectives::shm_staged(p.exe, r, p.sizes, kernel)),
        ),
    ];
    if r > 1 {
        for shape in collectives::other_barrier_shapes(r, p.cpu_list.len()) {
            v.push((
                format!("{shape} barrier"),
                Box::new(move || collectives::shm_barrier(p.exe, shape, r, p.sizes, kernel)),
            ));
        }
    }
    if let Some(m) = linked {
        v.push((
            format!("{} via cobre-comm", m.label),
            Box::new(move || collectives::cobre_comm_mpi(p.exe, m, r, p.sizes, kernel)),
        ));
    }
    for (m, built) in natives {
        v.push((
            format!("{} (C)", m.label),
            Box::new(move || match built {
                Ok(prog) => collectives::native(prog, m, r, p.sizes, kernel),
                Err(e) => Sweep {
                    backend: collectives::Backend::Native(m.label.to_string()),
                    ranks: r,
                    command: String::new(),
                    points: Vec::new(),
                    error: Some(e.clone()),
                    barrier: Vec::new(),
                },
            }),
        ));
    }
    v
}

fn measure(p: &Plan<'_>) -> Result<Results, String> {
    let cpus = p.cpu_list.len();
    let mpis = mpi::installed();
    let linked = mpi::linked().and_then(|l| mpis.iter().find(|m| m.label == l).cloned());
    let (h, t, o, j, iterations, passes) = p.mode.case();
    let mut progress = Progress {
        total: step_count(p, cpus, mpis.len(), linked.is_some()),
        done: 0,
        tty: std::io::stderr().is_terminal(),
        quiet: p.quiet,
        start: Instant::now(),
    };
    let mut results = Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        mode: p.mode,
        started: utc_now(),
        machine: None,
        sizes: p.sizes.to_vec(),
        sweeps: Vec::new(),
        case: format!(
            "cobre-shm generate --hydros {h} --stages {t} --openings {o} --thermals {j} --seed 1; \
             train --iterations {iterations} --forward-passes {passes}"
        ),
        scaling: Vec::new(),
        memory: Vec::new(),
        numa: Vec::new(),
        mpi: Vec::new(),
        mpi_note: mpi_note(&mpis, linked.as_ref()),
        fresh_buffers: p.fresh,
    };
    let quick = p.mode == Mode::Quick;
    let kernel = Kernel {
        quick,
        fresh: p.fresh,
    };
    if (p.want)(Section::Machine) {
        progress.step("machine: memcpy and cache-line round trip");
        results.machine = Some(Machine {
            topology: Topology::discover(),
            cpus,
            memcpy: memcpy_sizes(p)
                .into_iter()
                .map(|b| (b, machine::memcpy_gbps(b as usize, quick)))
                .collect(),
            memcpy_all: (cpus > 1).then(|| machine::memcpy_all_gbps(p.cpu_list, 64 << 20, quick)),
            round_trip_us: (cpus > 1)
                .then(|| machine::round_trip_us(p.cpu_list[0], p.cpu_list[1], quick)),
        });
    }
    if (p.want)(Section::Collectives) {
        results.sweeps = collective_sweeps(p, kernel, &mpis, linked.as_ref(), &mut progress);
    }
    let case = p.scratch.join("case.json");
    let spec = cobre_shm_sddp::hydrothermal::generate::GenerateSpec {
        hydros: h,
        stages: t,
        openings: o,
        thermals: j,
        seed: 1,
    };
    let text =
        serde_json::to_string_pretty(&cobre_shm_sddp::hydrothermal::generate::generate(&spec))
            .map_err(|e| format!("cannot write the case: {e}"))?;
    std::fs::write(&case, text).map_err(|e| format!("cannot write {}: {e}", case.display()))?;
    let study = Study {
        case: &case,
        iterations,
        passes,
    };
    training_sections(p, &study, linked.as_ref(), &mut progress, &mut results);
    progress.finish();
    Ok(results)
}

/// Why the report has no MPI columns, when it has none.
fn mpi_note(mpis: &[mpi::Mpi], linked: Option<&mpi::Mpi>) -> Option<String> {
    if mpis.is_empty() {
        Some("no MPI installed (scripts/install-mpi.sh installs Open MPI and MPICH)".to_string())
    } else if linked.is_none() {
        Some(
            "this binary was built without the `mpi` feature: the cobre-comm MPI column and \
             the MPI SDDP runs are skipped (cargo build --release --features mpi)"
                .to_string(),
        )
    } else {
        None
    }
}

/// Steps of the whole measurement, for the progress bar.
fn step_count(p: &Plan<'_>, cpus: usize, mpis: usize, linked: bool) -> usize {
    let per_count = 2 + mpis + usize::from(linked);
    let want = |s| usize::from((p.want)(s));
    let multi = p.rank_counts.iter().filter(|&&r| r > 1).count();
    want(Section::Machine)
        + want(Section::Collectives) * (p.rank_counts.len() * per_count + multi) * p.repeat
        + want(Section::Sddp) * splits(cpus).len()
        + want(Section::Memory) * 2
        + want(Section::Numa) * 4
        + want(Section::Mpi) * usize::from(linked) * 2
}

/// The sections that train `study`: scaling over rank × thread splits,
/// memory with and without `--replicate`, NUMA placements, shm against MPI.
fn training_sections(
    p: &Plan<'_>,
    study: &Study<'_>,
    linked: Option<&mpi::Mpi>,
    progress: &mut Progress,
    results: &mut Results,
) {
    let cpus = p.cpu_list.len();
    let study_ranks = cpus.max(2);
    let numa_ranks = Topology::discover_allowed()
        .0
        .nodes
        .iter()
        .filter(|n| !n.cpus.is_empty())
        .count()
        .max(2);
    let numa_threads = (cpus / numa_ranks).max(1);
    let dir = |tag: &str| p.scratch.join(tag);
    if (p.want)(Section::Sddp) {
        for (r, th) in splits(cpus) {
            progress.step(&format!("SDDP: {r} ranks × {th} threads"));
            let d = dir(&format!("split_{r}x{th}"));
            results
                .scaling
                .push(training::shm(p.exe, study, &d, (r, th), &[], &[]));
        }
    }
    if (p.want)(Section::Memory) {
        for extra in [&[][..], &["--replicate"][..]] {
            progress.step(&format!("memory: {study_ranks} ranks {}", extra.join(" ")));
            let d = dir(&format!("memory_{}", extra.len()));
            results.memory.push(training::shm(
                p.exe,
                study,
                &d,
                (study_ranks, 1),
                &[],
                extra,
            ));
        }
    }
    if (p.want)(Section::Numa) {
        for (k, launcher_args) in [
            ["--bind", "numa", "--mempolicy", "first-touch"],
            ["--bind", "none", "--mempolicy", "first-touch"],
            ["--bind", "numa", "--mempolicy", "interleave"],
            ["--bind", "none", "--mempolicy", "interleave"],
        ]
        .iter()
        .enumerate()
        {
            progress.step(&format!("NUMA: {}", launcher_args.join(" ")));
            let d = dir(&format!("numa_{k}"));
            let split = (numa_ranks, numa_threads);
            results
                .numa
                .push(training::shm(p.exe, study, &d, split, launcher_args, &[]));
        }
    }
    if let (true, Some(m)) = ((p.want)(Section::Mpi), linked) {
        progress.step(&format!("SDDP: {study_ranks} shm ranks"));
        let split = (study_ranks, 1);
        results.mpi.push(training::shm(
            p.exe,
            study,
            &dir("mpi_shm"),
            split,
            &[],
            &[],
        ));
        progress.step(&format!("SDDP: {study_ranks} {} ranks", m.label));
        results
            .mpi
            .push(training::mpi(p.exe, m, study, &dir("mpi_mpi"), study_ranks));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_orders_are_permutations_with_changing_predecessors() {
        for n in 1..=6 {
            let mut before_first = std::collections::HashSet::new();
            for round in 1..=5 {
                let order: Vec<usize> = (0..n).map(|k| sweep_order(n, round, k)).collect();
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "n={n} round={round}");
                let p = order.iter().position(|&b| b == 0).unwrap_or(0);
                if p > 0 {
                    before_first.insert(order[p - 1]);
                }
            }
            if n >= 3 {
                assert!(before_first.len() >= 2, "n={n}: {before_first:?}");
            }
        }
    }

    #[test]
    fn sizes_rank_counts_and_splits() {
        assert_eq!(
            Mode::Full.sizes(),
            [
                8,
                16,
                64,
                256,
                1 << 10,
                4 << 10,
                16 << 10,
                64 << 10,
                256 << 10,
                1 << 20,
                4 << 20,
                16 << 20,
                64 << 20
            ]
        );
        assert_eq!(
            Mode::Quick.sizes(),
            [8, 16, 256, 4 << 10, 64 << 10, 1 << 20, 4 << 20]
        );
        assert_eq!(default_rank_counts(2, Mode::Full), [2]);
        assert_eq!(default_rank_counts(16, Mode::Full), [2, 4, 8, 16]);
        assert_eq!(default_rank_counts(12, Mode::Standard), [2, 4, 8, 12]);
        assert_eq!(default_rank_counts(64, Mode::Quick), [2, 32, 64]);
        assert_eq!(splits(2), [(1, 1), (1, 2), (2, 1)]);
        assert_eq!(splits(6), [(1, 1), (1, 6), (2, 3), (3, 2), (6, 1)]);
        assert_eq!(splits(1), [(1, 1)]);
    }

    #[test]
    fn dates() {
        let s = utc_now();
        assert!(s.ends_with(" UTC") && s.len() == 23, "{s}");
    }
}
