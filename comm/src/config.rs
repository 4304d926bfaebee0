//! Configuration of one rank, from the environment or built in code.
#![forbid(unsafe_code)]

use std::time::Duration;

use cobre_comm::BackendError;
use cobre_shm_layout::{DEFAULT_STAGING_BYTES, EAGER_BYTES, MIN_STAGING_BYTES, PAGE};

pub use crate::mempolicy::MemPolicy;
use crate::wait::WaitPolicy;

/// Name of the job's control segment (must start with `/`).
pub const ENV_NAME: &str = "COBRE_SHM_NAME";
/// Rank of this process, `0..COBRE_SHM_SIZE`.
pub const ENV_RANK: &str = "COBRE_SHM_RANK";
/// Number of ranks.
pub const ENV_SIZE: &str = "COBRE_SHM_SIZE";
/// Hard bound on any wait between ranks, in seconds (default: none — wait
/// while every peer is alive and running).
pub const ENV_TIMEOUT: &str = "COBRE_SHM_TIMEOUT_SECS";
/// How long ranks wait for every rank to attach, in seconds (default 120):
/// a rank that never starts cannot be told from a slow one otherwise.
pub const ENV_ATTACH_TIMEOUT: &str = "COBRE_SHM_ATTACH_TIMEOUT_SECS";
/// How long a peer may stay stopped (SIGSTOP) before the job is aborted
/// naming it, in seconds (default 10).
pub const ENV_STOPPED: &str = "COBRE_SHM_STOPPED_SECS";
/// Largest number of seconds any of the timing variables accepts (a year).
pub const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;
/// Pid of the launcher that created the control segment; when set, no rank creates it.
pub const ENV_CREATOR_PID: &str = "COBRE_SHM_CREATOR_PID";
/// Bytes of each staging buffer (read by the creator only; default by the
/// machine, [`ShmConfig::staging`]).
pub const ENV_STAGING: &str = "COBRE_SHM_STAGING_BYTES";
/// Staging bytes per rank asked for when ranks outnumber CPUs: every chunk
/// of a large collective costs each rank one turn on a CPU per barrier, so
/// oversubscribed jobs move fewer, larger chunks (`benches/README.md`,
/// "Staging buffers when ranks outnumber CPUs").
pub const OVERSUBSCRIBED_SLOT_BYTES: usize = 1 << 20;
/// Largest staging buffer chosen without [`ENV_STAGING`].
pub const MAX_AUTO_STAGING_BYTES: usize = 64 << 20;
/// Number of CPUs the whole job may run on (set by the launcher from its
/// affinity mask, so a cpuset or `taskset` counts; default: ranks started by
/// hand settle it at attach from their affinity masks).
pub const ENV_JOB_CPUS: &str = "COBRE_SHM_JOB_CPUS";
/// Memory policy of shared regions: `first-touch`, `interleave` or `node:K`.
pub const ENV_MEMPOLICY: &str = "COBRE_SHM_MEMPOLICY";
/// Override of the spin budget in microseconds.
pub const ENV_SPIN_US: &str = "COBRE_SHM_SPIN_US";
/// Override of the yield budget in microseconds.
pub const ENV_YIELD_US: &str = "COBRE_SHM_YIELD_US";
/// Smallest `allgatherv` (bytes gathered) moved by single-copy
/// cross-memory reads instead of the staging buffers; `0` turns
/// cross-memory reads off.
pub const ENV_CMA_MIN: &str = "COBRE_SHM_CMA_MIN_BYTES";
/// Default of [`ENV_CMA_MIN`], measured: below it two copies through the
/// staging buffers are faster (see `benches/README.md`, "Collectives").
pub const DEFAULT_CMA_MIN_BYTES: usize = 8 << 20;

/// Smallest broadcast piece (bytes) a root writes into a staging buffer
/// with non-temporal stores; `0` turns them off.
pub const ENV_STREAM_MIN: &str = "COBRE_SHM_STREAM_MIN_BYTES";
/// Largest broadcast piece (bytes) written with non-temporal stores
/// (default: an eighth of this CPU's L2 cache).
pub const ENV_STREAM_MAX: &str = "COBRE_SHM_STREAM_MAX_BYTES";
/// Default of [`ENV_STREAM_MIN`], measured: below it a peer reads the lines
/// out of the writer's cache faster than from memory (`benches/README.md`,
/// "Streaming stores"); from a quarter of the L2 size up, the writer's
/// lines leave its cache anyway and memory bandwidth makes streaming level
/// or slower, so the default maximum is an eighth.
pub const DEFAULT_STREAM_MIN_BYTES: usize = 32 << 10;
/// [`ENV_STREAM_MAX`] when the L2 size cannot be read from sysfs.
pub const FALLBACK_STREAM_MAX_BYTES: usize = 128 << 10;

/// Largest broadcast (bytes) sent eagerly through the ring of slots (the
/// root returns without waiting for the receivers); `0` turns it off, at
/// most [`cobre_shm_layout::EAGER_BYTES`]. Default: see [`ShmConfig::eager_max`].
pub const ENV_EAGER_MAX: &str = "COBRE_SHM_EAGER_MAX_BYTES";
/// Default of [`ENV_EAGER_MAX`] when every rank has a CPU, measured: from
/// 1 KiB the staged broadcast, whose root waits for its receivers, was
/// faster at 2 ranks (0.34 against 0.51 µs at 1 KiB); up to 256 bytes the
/// eager one was (`benches/README.md`, "Eager broadcasts"). When ranks
/// outnumber CPUs the default is the whole slot: there eager broadcasts of
/// 1–4 KiB were 1.7–5.6× faster than staged ones.
pub const DEFAULT_EAGER_MAX_BYTES: usize = 256;

/// Barrier structure: `flat`, `tree`, `measure` or `auto` (see [`BarrierShape`]).
pub const ENV_BARRIER: &str = "COBRE_SHM_BARRIER";

/// How the ranks of a job meet at a barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BarrierShape {
    /// [`Self::Flat`] at 1–2 ranks and when ranks outnumber CPUs,
    /// [`Self::Measure`] otherwise. At 2 ranks the tree costs two line
    /// transfers where the flat barrier costs one (measured 0.13 against
    /// 0.06 µs); with more ranks than CPUs each level of the tree waits for
    /// one more process to be scheduled, and the flat barrier measured
    /// 1.4–2.4× faster at 4–32 ranks on 2 CPUs (benches/README.md, "Barrier
    /// shapes"). Between those, which one wins depends on the machine's
    /// cache-line transfer costs, so the job measures.
    #[default]
    Auto,
    /// Every rank stores its arrival word and reads every peer's: one line
    /// transfer on the critical path, R-1 reads per rank.
    Flat,
    /// Arrivals combine up a tree of fan-in [`BarrierShape::TREE_FAN_IN`],
    /// rank 0 stores one release word everyone reads: about
    /// log4(R) + 1 line transfers on the critical path, at most 4 reads per rank.
    Tree,
    /// Time both shapes when the job starts (alternating batches of
    /// barriers, the fastest batch of each) and meet at the faster one from
    /// then on; rank 0's timing decides for every rank.
    Measure,
}

impl BarrierShape {
    /// Children per parent in the tree barrier.
    pub const TREE_FAN_IN: usize = 4;

    /// Parse `auto`, `flat`, `tree` or `measure`.
    ///
    /// # Errors
    /// A message listing the accepted values.
    pub fn parse(v: &str) -> Result<Self, String> {
        match v {
            "auto" => Ok(Self::Auto),
            "flat" => Ok(Self::Flat),
            "tree" => Ok(Self::Tree),
            "measure" => Ok(Self::Measure),
            _ => Err(format!("'{v}' is not one of auto, flat, tree, measure")),
        }
    }

    /// What a job of `size` ranks on a machine with `cpus` online CPUs
    /// does: [`Self::Flat`], [`Self::Tree`] or [`Self::Measure`] (the same
    /// answer on every rank of a node). One rank never measures.
    #[must_use]
    pub fn resolve(self, size: usize, cpus: usize) -> Self {
        match self {
            Self::Auto if size <= 2 || size > cpus => Self::Flat,
            Self::Auto | Self::Measure if size > 1 => Self::Measure,
            Self::Auto | Self::Measure | Self::Flat => Self::Flat,
            Self::Tree => Self::Tree,
        }
    }
}

/// The barrier shape a job meets at, and what the start-up measurement
/// found when it made one (`COBRE_SHM_BARRIER=measure`, or `auto` with 3 or
/// more ranks and a CPU each).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BarrierChoice {
    /// The tree barrier (`false`: the flat one).
    pub tree: bool,
    /// Rank 0's fastest µs per barrier, (flat, tree), when measured.
    pub measured: Option<(f64, f64)>,
}

impl std::fmt::Display for BarrierChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tree { "tree" } else { "flat" })?;
        match self.measured {
            Some((flat, tree)) => write!(
                f,
                " (measured at start-up: flat {flat:.3} µs, tree {tree:.3} µs per barrier)"
            ),
            None => Ok(()),
        }
    }
}

/// Everything a rank needs to attach to a job.
#[derive(Clone, Debug, PartialEq)]
pub struct ShmConfig {
    /// Control segment name, e.g. `/cobre-shm.4711.0`.
    pub name: String,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// Hard bound on any wait between ranks (`None`: liveness only).
    pub timeout: Option<Duration>,
    /// How long to wait for every rank to attach.
    pub attach_timeout: Duration,
    /// How long a peer may stay stopped before the job is aborted.
    pub stopped_grace: Duration,
    /// Pid of the launcher that created the segment, if any.
    pub creator_pid: Option<u32>,
    /// Staging buffer size, used when this rank creates the segment
    /// (`None`: by the machine, [`Self::staging`]).
    pub staging_bytes: Option<usize>,
    /// CPUs the whole job may run on, which decide whether ranks outnumber
    /// CPUs; every rank must be given the same (`None`: the ranks settle it
    /// at attach from their affinity masks, [`crate::ShmBackend::job_cpus`]).
    pub job_cpus: Option<usize>,
    /// Memory policy, used when this rank creates the segment.
    pub mempolicy: MemPolicy,
    /// Spin budget override.
    pub spin: Option<Duration>,
    /// Yield budget override.
    pub yield_for: Option<Duration>,
    /// Smallest message moved by cross-memory reads (0: never).
    pub cma_min_bytes: usize,
    /// Broadcast staging writes of at least this many bytes use non-temporal stores
    /// (0: never).
    pub stream_min_bytes: usize,
    /// … and of at most this many (`None`: an eighth of this CPU's L2 cache).
    pub stream_max_bytes: Option<usize>,
    /// Barrier structure.
    pub barrier: BarrierShape,
    /// Broadcasts of at most this many bytes are eager (0: none; `None`:
    /// by the machine, [`Self::eager_max`]).
    pub eager_max_bytes: Option<usize>,
}

/// `InitializationFailed` of the shm backend with `msg`.
fn invalid(msg: String) -> BackendError {
    BackendError::InitializationFailed {
        backend: "shm".to_string(),
        source: msg.into(),
    }
}

/// The non-negative integer in variable `key` (unset or empty: `None`).
fn env_number(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
) -> Result<Option<u64>, BackendError> {
    match get(key) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| invalid(format!("{key}='{v}' is not a non-negative integer"))),
    }
}

/// `v` as a `usize`, `usize::MAX` when it does not fit (sizes that large
/// are refused later with numbers).
fn saturating_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Parse a positive number of seconds up to [`MAX_SECS`].
///
/// # Errors
/// A message naming `what` and the accepted range.
pub fn parse_secs(what: &str, v: &str) -> Result<Duration, String> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= MAX_SECS)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!("{what}='{v}' is not a number of seconds in (0, {MAX_SECS}] (at most a year)")
        })
}

impl ShmConfig {
    /// Default wait for every rank to attach.
    pub const DEFAULT_ATTACH_TIMEOUT: Duration = Duration::from_secs(120);

    /// A configuration with defaults for everything but name, rank and size.
    #[must_use]
    pub fn new(name: impl Into<String>, rank: usize, size: usize) -> Self {
        Self {
            name: name.into(),
            rank,
            size,
            timeout: None,
            attach_timeout: Self::DEFAULT_ATTACH_TIMEOUT,
            stopped_grace: WaitPolicy::STOPPED_GRACE,
            creator_pid: None,
            staging_bytes: None,
            job_cpus: None,
            mempolicy: MemPolicy::FirstTouch,
            spin: None,
            yield_for: None,
            cma_min_bytes: DEFAULT_CMA_MIN_BYTES,
            stream_min_bytes: DEFAULT_STREAM_MIN_BYTES,
            stream_max_bytes: None,
            barrier: BarrierShape::Auto,
            eager_max_bytes: None,
        }
    }

    /// Read the `COBRE_SHM_*` variables.
    ///
    /// # Errors
    /// `MissingConfiguration` naming every missing required variable;
    /// `InitializationFailed` for a malformed value.
    pub fn from_env() -> Result<Self, BackendError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Self::from_env`], reading variables through `get`.
    ///
    /// # Errors
    /// As [`Self::from_env`].
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, BackendError> {
        let missing: Vec<String> = [ENV_NAME, ENV_RANK, ENV_SIZE]
            .into_iter()
            .filter(|k| get(k).is_none_or(|v| v.is_empty()))
            .map(str::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(BackendError::MissingConfiguration {
                backend: "shm".to_string(),
                missing_vars: missing,
            });
        }
        let num = |key: &str| env_number(&get, key);
        let name = get(ENV_NAME).unwrap_or_default();
        validate_name(&name).map_err(invalid)?;
        let rank = num(ENV_RANK)?.map_or(0, saturating_usize);
        let size = num(ENV_SIZE)?.map_or(0, saturating_usize);
        if size == 0 {
            return Err(invalid(format!("{ENV_SIZE} must be at least 1")));
        }
        if rank >= size {
            return Err(invalid(format!(
                "{ENV_RANK}={rank} is not below {ENV_SIZE}={size}"
            )));
        }
        let mut cfg = Self::new(name, rank, size);
        cfg.read_waits(&get)?;
        cfg.read_sizes(&get)?;
        if let Some(p) = get(ENV_MEMPOLICY).filter(|v| !v.is_empty()) {
            cfg.mempolicy =
                MemPolicy::parse(p.trim()).map_err(|e| invalid(format!("{ENV_MEMPOLICY}: {e}")))?;
        }
        if let Some(v) = get(ENV_BARRIER).filter(|v| !v.is_empty()) {
            cfg.barrier = BarrierShape::parse(v.trim())
                .map_err(|e| invalid(format!("{ENV_BARRIER}: {e}")))?;
        }
        Ok(cfg)
    }

    /// The time limits, wait policy and creator of [`Self::from_lookup`].
    fn read_waits(&mut self, get: &impl Fn(&str) -> Option<String>) -> Result<(), BackendError> {
        let secs = |key: &str| -> Result<Option<Duration>, BackendError> {
            match get(key).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => parse_secs(key, &v).map(Some).map_err(invalid),
            }
        };
        self.timeout = secs(ENV_TIMEOUT)?;
        if let Some(t) = secs(ENV_ATTACH_TIMEOUT)? {
            self.attach_timeout = t;
        }
        if let Some(t) = secs(ENV_STOPPED)? {
            self.stopped_grace = t;
        }
        if let Some(pid) = env_number(get, ENV_CREATOR_PID)? {
            self.creator_pid = Some(
                u32::try_from(pid)
                    .map_err(|_| invalid(format!("{ENV_CREATOR_PID}={pid} is not a pid")))?,
            );
        }
        self.spin = env_number(get, ENV_SPIN_US)?.map(Duration::from_micros);
        self.yield_for = env_number(get, ENV_YIELD_US)?.map(Duration::from_micros);
        if let Some(n) = env_number(get, ENV_JOB_CPUS)? {
            if n == 0 {
                return Err(invalid(format!("{ENV_JOB_CPUS}=0: give at least 1 CPU")));
            }
            self.job_cpus = Some(saturating_usize(n));
        }
        Ok(())
    }

    /// The byte sizes and thresholds of [`Self::from_lookup`].
    fn read_sizes(&mut self, get: &impl Fn(&str) -> Option<String>) -> Result<(), BackendError> {
        let bytes = |key: &str| env_number(get, key).map(|v| v.map(saturating_usize));
        if let Some(b) = bytes(ENV_STAGING)? {
            if b < MIN_STAGING_BYTES || b % PAGE != 0 {
                return Err(invalid(format!(
                    "{ENV_STAGING}={b} must be a multiple of {PAGE} and at least {MIN_STAGING_BYTES}"
                )));
            }
            self.staging_bytes = Some(b);
        }
        if let Some(b) = bytes(ENV_CMA_MIN)? {
            self.cma_min_bytes = b;
        }
        if let Some(b) = bytes(ENV_STREAM_MIN)? {
            self.stream_min_bytes = b;
        }
        self.stream_max_bytes = bytes(ENV_STREAM_MAX)?;
        if let Some(b) = bytes(ENV_EAGER_MAX)? {
            if b > EAGER_BYTES {
                return Err(invalid(format!(
                    "{ENV_EAGER_MAX}={b} is above the {EAGER_BYTES}-byte ring slot: give at most \
                     {EAGER_BYTES}, or 0 to turn eager broadcasts off"
                )));
            }
            self.eager_max_bytes = Some(b);
        }
        Ok(())
    }

    /// Sizes of the broadcast staging writes made with non-temporal stores, given
    /// this CPU's L2 size (`None`: unknown); empty when turned off.
    #[must_use]
    pub fn stream_range(&self, l2_bytes: Option<usize>) -> std::ops::RangeInclusive<usize> {
        let max = self
            .stream_max_bytes
            .or(l2_bytes.map(|b| b / 8))
            .unwrap_or(FALLBACK_STREAM_MAX_BYTES);
        // `0` turns streaming off: an empty range (start above end).
        let min = if self.stream_min_bytes == 0 {
            usize::MAX
        } else {
            self.stream_min_bytes
        };
        min..=max
    }

    /// Largest eager broadcast on a machine with `cpus` CPUs: the
    /// configured one, else [`DEFAULT_EAGER_MAX_BYTES`] when every rank has
    /// a CPU and the whole ring slot ([`EAGER_BYTES`]) when ranks outnumber
    /// CPUs (the same on every rank of a node).
    #[must_use]
    pub fn eager_max(&self, cpus: usize) -> usize {
        self.eager_max_bytes.unwrap_or(if self.size > cpus {
            EAGER_BYTES
        } else {
            DEFAULT_EAGER_MAX_BYTES
        })
    }

    /// CPUs the whole job may run on: [`Self::job_cpus`] (the launcher sets
    /// it), else the CPUs of this process's cpuset (a container's or batch
    /// job's, which every rank started inside it shares even when each is
    /// bound to one CPU), else the online CPUs. A job's ranks settle on one
    /// figure at attach, from this and their affinity masks
    /// ([`crate::ShmBackend::job_cpus`]).
    #[must_use]
    pub fn cpus(&self) -> usize {
        self.job_cpus
            .unwrap_or_else(|| {
                let online = crate::machine::online_cpus();
                crate::machine::cpuset_cpus().map_or(online, |n| n.min(online))
            })
            .max(1)
    }

    /// Bytes of each staging buffer of a job created on a machine with
    /// `cpus` CPUs and `shm_free` bytes free in `/dev/shm`: the configured
    /// size; else [`DEFAULT_STAGING_BYTES`] when every rank has a CPU (chunks
    /// that stay in cache); else [`OVERSUBSCRIBED_SLOT_BYTES`] per rank, at
    /// most [`MAX_AUTO_STAGING_BYTES`] and an eighth of the free space (both
    /// buffers a quarter), never below the default. Unknown free space keeps
    /// the default.
    #[must_use]
    pub fn staging(&self, cpus: usize, shm_free: Option<u64>) -> usize {
        if let Some(b) = self.staging_bytes {
            return b;
        }
        let Some(free) = shm_free.filter(|_| self.size > cpus) else {
            return DEFAULT_STAGING_BYTES;
        };
        let room = usize::try_from(free / 8).unwrap_or(usize::MAX);
        let want = self
            .size
            .saturating_mul(OVERSUBSCRIBED_SLOT_BYTES)
            .min(MAX_AUTO_STAGING_BYTES)
            .min(room);
        (want & !(PAGE - 1)).max(DEFAULT_STAGING_BYTES)
    }

    /// The wait policy this configuration asks for on a machine with `cpus` CPUs.
    #[must_use]
    pub fn wait_policy(&self, cpus: usize) -> WaitPolicy {
        let mut p = WaitPolicy::for_world(self.size, cpus, self.timeout);
        p.stopped_grace = self.stopped_grace;
        if let Some(s) = self.spin {
            p.spin = s;
        }
        if let Some(y) = self.yield_for {
            p.yield_for = y;
        }
        p
    }
}

/// Check a POSIX shared-memory name: `/` then 1..=250 bytes without `/` or NUL.
///
/// # Errors
/// A message saying what is wrong.
pub fn validate_name(name: &str) -> Result<(), String> {
    let rest = name
        .strip_prefix('/')
        .ok_or_else(|| format!("{ENV_NAME}='{name}' must start with '/'"))?;
    if rest.is_empty() || rest.len() > 200 || rest.contains(['/', '\0']) {
        return Err(format!(
            "{ENV_NAME}='{name}' must be '/' followed by 1 to 200 characters without '/' or NUL"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn missing_variables_are_all_named() {
        let err = ShmConfig::from_lookup(lookup(&[(ENV_RANK, "0")])).expect_err("must be rejected");
        match err {
            BackendError::MissingConfiguration {
                backend,
                missing_vars,
            } => {
                assert_eq!(backend, "shm");
                assert_eq!(
                    missing_vars,
                    vec![ENV_NAME.to_string(), ENV_SIZE.to_string()]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn full_configuration_parses() {
        let cfg = ShmConfig::from_lookup(lookup(&[
            (ENV_NAME, "/job"),
            (ENV_RANK, "1"),
            (ENV_SIZE, "4"),
            (ENV_TIMEOUT, "2.5"),
            (ENV_CREATOR_PID, "77"),
            (ENV_STAGING, "65536"),
            (ENV_JOB_CPUS, "3"),
            (ENV_MEMPOLICY, "node:3"),
            (ENV_BARRIER, "tree"),
        ]))
        .expect("valid configuration");
        assert_eq!((cfg.job_cpus, cfg.cpus()), (Some(3), 3));
        assert_eq!((cfg.rank, cfg.size), (1, 4));
        assert_eq!(cfg.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(cfg.creator_pid, Some(77));
        assert_eq!(cfg.staging_bytes, Some(65536));
        assert_eq!(cfg.mempolicy, MemPolicy::Node(3));
        assert_eq!(cfg.barrier, BarrierShape::Tree);
    }

    /// Rank 0 of 2 with `extra` variables set.
    fn two_ranks_with(extra: &[(&str, &str)]) -> Result<ShmConfig, BackendError> {
        let base = [(ENV_NAME, "/job"), (ENV_RANK, "0"), (ENV_SIZE, "2")];
        let pairs: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        ShmConfig::from_lookup(lookup(&pairs))
    }

    #[test]
    fn eager_limit_follows_oversubscription_and_refuses_more_than_the_slot() {
        let parse = |v: &str| two_ranks_with(&[(ENV_EAGER_MAX, v)]);
        // 2 ranks: 256 bytes with 2 CPUs or more, the whole slot on 1 CPU.
        let auto = parse("").expect("unset");
        assert_eq!(auto.eager_max(2), DEFAULT_EAGER_MAX_BYTES);
        assert_eq!(auto.eager_max(64), DEFAULT_EAGER_MAX_BYTES);
        assert_eq!(auto.eager_max(1), EAGER_BYTES);
        assert_eq!(parse("0").expect("off").eager_max(1), 0);
        assert_eq!(parse("64").expect("smaller").eager_max(1), 64);
        assert_eq!(parse("4096").expect("the slot").eager_max(8), 4096);
        let err = parse("4097").expect_err("above the slot").to_string();
        assert!(
            err.contains(ENV_EAGER_MAX) && err.contains("at most 4096"),
            "{err}"
        );
    }

    #[test]
    fn staging_grows_with_oversubscription_within_the_free_space() {
        const MIB: usize = 1 << 20;
        let ranks = |n: usize| ShmConfig::new("/job", 0, n);
        let plenty = Some(1 << 40);
        // A CPU per rank: the default, whatever the free space.
        assert_eq!(ranks(64).staging(64, plenty), DEFAULT_STAGING_BYTES);
        assert_eq!(ranks(2).staging(2, plenty), DEFAULT_STAGING_BYTES);
        // Oversubscribed: 1 MiB per rank between the default and the cap.
        assert_eq!(ranks(3).staging(2, plenty), DEFAULT_STAGING_BYTES);
        assert_eq!(ranks(8).staging(2, plenty), 8 * MIB);
        assert_eq!(ranks(64).staging(16, plenty), 64 * MIB);
        assert_eq!(ranks(1000).staging(2, plenty), MAX_AUTO_STAGING_BYTES);
        // An eighth of the free space, page-aligned, never below the default.
        assert_eq!(ranks(64).staging(2, Some(128 * MIB as u64)), 16 * MIB);
        let odd = ranks(64).staging(2, Some(100 * MIB as u64 + 12_345));
        assert_eq!(odd, 100 * MIB / 8);
        assert_eq!(
            ranks(64).staging(2, Some(8 * MIB as u64)),
            DEFAULT_STAGING_BYTES
        );
        assert_eq!(ranks(64).staging(2, None), DEFAULT_STAGING_BYTES);
        // The variable wins in every case.
        let set = two_ranks_with(&[(ENV_STAGING, "65536")]).expect("valid");
        assert_eq!(set.staging(1, Some(0)), 65536);
        assert_eq!(set.staging(64, plenty), 65536);
    }

    #[test]
    fn streaming_stores_cover_the_configured_sizes() {
        let cfg = |extra: &[(&str, &str)]| two_ranks_with(extra).expect("valid configuration");
        let l2 = Some(1 << 20);
        assert_eq!(
            cfg(&[]).stream_range(l2),
            DEFAULT_STREAM_MIN_BYTES..=128 << 10
        );
        assert_eq!(
            *cfg(&[]).stream_range(None).end(),
            FALLBACK_STREAM_MAX_BYTES
        );
        let set = cfg(&[(ENV_STREAM_MIN, "4096"), (ENV_STREAM_MAX, "65536")]);
        assert_eq!(set.stream_range(l2), 4096..=65536);
        assert!(cfg(&[(ENV_STREAM_MIN, "0")]).stream_range(l2).is_empty());
        assert!(two_ranks_with(&[(ENV_STREAM_MAX, "lots")]).is_err());
    }

    #[test]
    fn auto_measures_from_three_ranks_when_each_has_a_cpu() {
        use BarrierShape::{Auto, Flat, Measure, Tree};
        assert_eq!(Auto.resolve(1, 64), Flat);
        assert_eq!(Auto.resolve(2, 64), Flat);
        assert_eq!(Auto.resolve(3, 64), Measure);
        assert_eq!(Auto.resolve(64, 64), Measure);
        assert_eq!(Auto.resolve(65, 64), Flat);
        assert_eq!(Auto.resolve(16, 2), Flat);
        assert_eq!(Measure.resolve(2, 2), Measure);
        assert_eq!(Measure.resolve(16, 2), Measure);
        assert_eq!(Measure.resolve(1, 2), Flat);
        assert_eq!(Tree.resolve(2, 2), Tree);
        assert_eq!(Flat.resolve(64, 64), Flat);
        assert_eq!(BarrierShape::parse("measure"), Ok(Measure));
        assert!(
            BarrierShape::parse("fastest").is_err_and(|e| e.contains("auto, flat, tree, measure"))
        );
    }

    #[test]
    fn malformed_values_are_rejected_with_the_variable_named() {
        for (k, v) in [
            (ENV_RANK, "x"),
            (ENV_RANK, "4"),
            (ENV_SIZE, "0"),
            (ENV_TIMEOUT, "-1"),
            (ENV_TIMEOUT, "1e300"),
            (ENV_ATTACH_TIMEOUT, "0"),
            (ENV_STOPPED, "nan"),
            (ENV_STAGING, "100"),
            (ENV_JOB_CPUS, "0"),
            (ENV_JOB_CPUS, "two"),
            (ENV_MEMPOLICY, "numa"),
            (ENV_BARRIER, "ring"),
            (ENV_NAME, "job"),
            (ENV_NAME, "/a/b"),
        ] {
            let mut pairs = vec![(ENV_NAME, "/job"), (ENV_RANK, "0"), (ENV_SIZE, "4")];
            pairs.retain(|(key, _)| *key != k);
            pairs.push((k, v));
            let err = ShmConfig::from_lookup(lookup(&pairs))
                .expect_err("must be rejected")
                .to_string();
            assert!(err.contains(k), "{k}={v}: {err}");
        }
    }

    #[test]
    fn mempolicy_round_trips() {
        for p in [
            MemPolicy::FirstTouch,
            MemPolicy::Interleave,
            MemPolicy::Node(5),
        ] {
            assert_eq!(MemPolicy::parse(&p.to_string()), Ok(p));
            let (c, n) = p.code();
            assert_eq!(MemPolicy::from_code(c as u32, n), Some(p));
        }
    }
}
