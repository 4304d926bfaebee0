//! Checkpoints: everything a run needs to continue exactly where it was —
//! the completed iterations (their convergence rows), every cut and trial
//! point they produced, and the basis each warm group left at each stage.
//! The sampling needs nothing: every random number is a pure function of
//! (seed, iteration, trajectory, stage). A run resumed from iteration `i`
//! therefore gives the same cuts, bounds and policy as the uninterrupted run,
//! on any ranks × threads split.
//!
//! Format (`checkpoint.bin`, little-endian): magic `COBRECKP`, version, a
//! fingerprint of the case and of the options the results depend on, then
//! the rows, the pool lanes, the trial points and the bases. Checked when
//! read: another case, other options or another version are refused, naming
//! which.
#![forbid(unsafe_code)]

use cobre_solver::BasisStatus;

use crate::basis::Entry;
use crate::case::Case;
use crate::engine::{IterationRow, TrainOptions};

/// First bytes of a checkpoint.
pub const MAGIC: &[u8; 8] = b"COBRECKP";
/// Version of the format.
pub const VERSION: u32 = 1;
/// File name inside an output directory.
pub const FILE: &str = "checkpoint.bin";

/// Why a checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file cannot be read.
    #[error("cannot read checkpoint {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a checkpoint, or cut short.
    #[error("{path} is not a complete cobre-shm checkpoint ({what})")]
    Corrupt {
        /// Path.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// Written by another format version.
    #[error("{path} is a version {found} checkpoint; this build reads version {VERSION}")]
    Version {
        /// Path.
        path: String,
        /// Version found.
        found: u32,
    },
    /// Of another case or other options.
    #[error(
        "{path} belongs to another study: {what}. Resume with the case and the options it was \
         written with (--seed, --forward-passes, --warm-group, --cut-selection)"
    )]
    Mismatch {
        /// Path.
        path: String,
        /// What differs.
        what: String,
    },
    /// The run asked for fewer iterations than the checkpoint holds.
    #[error(
        "{path} already holds {done} iterations; ask for more than that with --iterations \
         (asked: {asked})"
    )]
    Done {
        /// Path.
        path: String,
        /// Iterations in the checkpoint.
        done: usize,
        /// Iterations asked for.
        asked: usize,
    },
}

/// What a checkpoint holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// Completed iterations.
    pub iterations: usize,
    /// Their convergence rows.
    pub rows: Vec<IterationRow>,
    /// Per lane, the cut records (record-major).
    pub cuts: Vec<Vec<f64>>,
    /// Trial points (`states × lanes × hydros`).
    pub states: Vec<f64>,
    /// `(group, stage, basis)` of every cached basis.
    pub bases: Vec<(u32, u32, Entry)>,
    /// The lower bound's basis.
    pub lb_basis: Entry,
    /// Penalised slack so far.
    pub slack: f64,
}

/// FNV-1a over bytes.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What the results depend on: the case and the options that change them
/// (not the iteration limit, the time limit or the layout).
#[must_use]
pub fn fingerprint(case: &Case, opts: &TrainOptions) -> (u64, u64) {
    let c = fnv(0xcbf2_9ce4_8422_2325, format!("{case:?}").as_bytes());
    let o = fnv(
        0xcbf2_9ce4_8422_2325,
        format!(
            "seed={} passes={} group={} selection={} stall={:?}",
            opts.seed,
            opts.forward_passes,
            opts.warm_group,
            opts.cut_selection.as_str(),
            opts.stall
        )
        .as_bytes(),
    );
    (c, o)
}

/// A little-endian writer.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// `v` with its length, passed on to `w` as the buffer fills.
    fn f64s_to(&mut self, v: &[f64], w: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.u64(v.len() as u64);
        for chunk in v.chunks(CHUNK / 8) {
            for &x in chunk {
                self.f64(x);
            }
            self.drain(w, CHUNK)?;
        }
        Ok(())
    }
    /// Pass the buffer on to `w` once it holds more than `above` bytes.
    fn drain(&mut self, w: &mut dyn std::io::Write, above: usize) -> std::io::Result<()> {
        if self.0.len() > above {
            w.write_all(&self.0)?;
            self.0.clear();
        }
        Ok(())
    }
    fn statuses(&mut self, v: &[BasisStatus]) {
        self.u64(v.len() as u64);
        self.0.extend(v.iter().map(|s| s.to_discriminant_code()));
    }
    fn entry(&mut self, e: &Entry) {
        self.statuses(&e.cols);
        self.statuses(&e.rows);
        self.u64(e.cuts.len() as u64);
        for &(slot, st) in &e.cuts {
            self.u32(slot);
            self.0.push(st.to_discriminant_code());
        }
    }
}

/// Serialise one basis entry (for gathering entries from every rank).
#[must_use]
pub fn encode_entry(group: u32, stage: u32, e: &Entry) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(group);
    o.u32(stage);
    o.entry(e);
    o.0
}

/// Parse entries that [`encode_entry`] wrote back to back.
///
/// # Errors
/// A description when the bytes are cut short.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<(u32, u32, Entry)>, String> {
    let mut r = In { b: bytes, at: 0 };
    let mut out = Vec::new();
    while r.at < bytes.len() {
        let g = r.u32()?;
        let t = r.u32()?;
        out.push((g, t, r.entry()?));
    }
    Ok(out)
}

/// A checkpoint to write, borrowing its parts from wherever they live.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// Completed iterations.
    pub iterations: usize,
    /// Their convergence rows.
    pub rows: &'a [IterationRow],
    /// Per lane, the cut records of the completed iterations.
    pub cuts: &'a [&'a [f64]],
    /// Their trial points.
    pub states: &'a [f64],
    /// `(group, stage, basis)` of every cached basis.
    pub bases: &'a [(u32, u32, Entry)],
    /// The lower bound's basis.
    pub lb_basis: &'a Entry,
    /// Penalised slack so far.
    pub slack: f64,
}

/// What a checkpoint holds beyond a report's rows and policy (rank 0 copies
/// it when a checkpoint is due; the cuts are the policy's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Completed iterations.
    pub iterations: usize,
    /// Lanes of the pool (stages with a future cost).
    pub lanes: usize,
    /// Cuts per lane those iterations produced.
    pub cuts_per_lane: usize,
    /// Their trial points.
    pub states: Vec<f64>,
    /// `(group, stage, basis)` of every cached basis.
    pub bases: Vec<(u32, u32, Entry)>,
    /// The lower bound's basis.
    pub lb_basis: Entry,
    /// Penalised slack so far.
    pub slack: f64,
}

/// Bytes buffered before they go to the writer.
const CHUNK: usize = 1 << 16;

/// Write the checkpoint `view` of `case` and `opts` to `w`, streaming (no
/// second copy of the cuts is made).
///
/// # Errors
/// The writer's.
pub fn write_to(
    w: &mut dyn std::io::Write,
    case: &Case,
    opts: &TrainOptions,
    view: &View<'_>,
) -> std::io::Result<()> {
    let mut o = Out::default();
    o.0.extend_from_slice(MAGIC);
    o.u32(VERSION);
    let (c, p) = fingerprint(case, opts);
    o.u64(c);
    o.u64(p);
    o.u64(view.iterations as u64);
    o.u64(view.rows.len() as u64);
    for r in view.rows {
        o.u64(r.iteration as u64);
        o.f64(r.lower_bound);
        o.f64(r.upper_bound_mean);
        o.f64(r.upper_bound_ci95);
        o.f64(r.gap);
        o.u64(r.cuts as u64);
        o.f64(r.elapsed_secs);
    }
    o.u64(view.cuts.len() as u64);
    for lane in view.cuts {
        o.f64s_to(lane, w)?;
    }
    o.f64s_to(view.states, w)?;
    o.u64(view.bases.len() as u64);
    for (g, t, e) in view.bases {
        o.u32(*g);
        o.u32(*t);
        o.entry(e);
        o.drain(w, CHUNK)?;
    }
    o.entry(view.lb_basis);
    o.f64(view.slack);
    o.drain(w, 0)
}

/// Serialise `state` for `case` and `opts`.
#[must_use]
pub fn encode(case: &Case, opts: &TrainOptions, state: &State) -> Vec<u8> {
    let cuts: Vec<&[f64]> = state.cuts.iter().map(Vec::as_slice).collect();
    let view = View {
        iterations: state.iterations,
        rows: &state.rows,
        cuts: &cuts,
        states: &state.states,
        bases: &state.bases,
        lb_basis: &state.lb_basis,
        slack: state.slack,
    };
    let mut bytes = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_to(&mut bytes, case, opts, &view);
    bytes
}

/// A little-endian reader that fails instead of panicking.
struct In<'b> {
    b: &'b [u8],
    at: usize,
}

impl In<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("cut short at byte {}", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self, unit: usize) -> Result<usize, String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "length out of range".to_string())?;
        if n.checked_mul(unit)
            .is_none_or(|b| b > self.b.len() - self.at)
        {
            return Err(format!(
                "a length of {n} at byte {} runs past the end",
                self.at
            ));
        }
        Ok(n)
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn f64s(&mut self) -> Result<Vec<f64>, String> {
        let n = self.len(8)?;
        (0..n).map(|_| self.f64()).collect()
    }
    fn statuses(&mut self) -> Result<Vec<BasisStatus>, String> {
        let n = self.len(1)?;
        Ok(self
            .take(n)?
            .iter()
            .map(|&c| BasisStatus::from_discriminant_code(c))
            .collect())
    }
    fn entry(&mut self) -> Result<Entry, String> {
        let cols = self.statuses()?;
        let rows = self.statuses()?;
        let n = self.len(5)?;
        let mut cuts = Vec::with_capacity(n);
        for _ in 0..n {
            let slot = self.u32()?;
            let st = BasisStatus::from_discriminant_code(self.take(1)?[0]);
            cuts.push((slot, st));
        }
        Ok(Entry { cols, rows, cuts })
    }
}

/// Read and check the checkpoint at `path` for `case` and `opts`.
///
/// # Errors
/// [`CheckpointError`] saying why it cannot be used.
pub fn read(
    path: &std::path::Path,
    case: &Case,
    opts: &TrainOptions,
) -> Result<State, CheckpointError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: shown.clone(),
        source,
    })?;
    let corrupt = |what: String| CheckpointError::Corrupt {
        path: shown.clone(),
        what,
    };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(corrupt("no checkpoint magic".into()));
    }
    let mut r = In { b: &bytes, at: 8 };
    let version = r.u32().map_err(corrupt)?;
    if version != VERSION {
        return Err(CheckpointError::Version {
            path: shown,
            found: version,
        });
    }
    let (c, p) = fingerprint(case, opts);
    let (fc, fp) = (r.u64().map_err(corrupt)?, r.u64().map_err(corrupt)?);
    if fc != c {
        return Err(CheckpointError::Mismatch {
            path: shown,
            what: format!("it was written for another case (not {})", case.name),
        });
    }
    if fp != p {
        return Err(CheckpointError::Mismatch {
            path: shown,
            what: "it was written with other training options".into(),
        });
    }
    let state = decode_body(&mut r).map_err(corrupt)?;
    if state.iterations >= opts.iterations {
        return Err(CheckpointError::Done {
            path: shown,
            done: state.iterations,
            asked: opts.iterations,
        });
    }
    Ok(state)
}

fn decode_body(r: &mut In<'_>) -> Result<State, String> {
    let iterations = usize::try_from(r.u64()?).map_err(|e| e.to_string())?;
    let nrows = r.len(56)?;
    let mut rows = Vec::with_capacity(nrows);
    for _ in 0..nrows {
        rows.push(IterationRow {
            iteration: r.u64()? as usize,
            lower_bound: r.f64()?,
            upper_bound_mean: r.f64()?,
            upper_bound_ci95: r.f64()?,
            gap: r.f64()?,
            cuts: r.u64()? as usize,
            elapsed_secs: r.f64()?,
        });
    }
    let lanes = r.len(8)?;
    let cuts = (0..lanes).map(|_| r.f64s()).collect::<Result<_, _>>()?;
    let states = r.f64s()?;
    let nb = r.len(16)?;
    let mut bases = Vec::with_capacity(nb);
    for _ in 0..nb {
        let g = r.u32()?;
        let t = r.u32()?;
        bases.push((g, t, r.entry()?));
    }
    let lb_basis = r.entry()?;
    let slack = r.f64()?;
    if rows.len() != iterations {
        return Err(format!("{} rows for {iterations} iterations", rows.len()));
    }
    Ok(State {
        iterations,
        rows,
        cuts,
        states,
        bases,
        lb_basis,
        slack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::TUTORIAL_CASE;

    #[test]
    fn round_trip_and_refusals() {
        let case = Case::parse(TUTORIAL_CASE, "t", "t").expect("case");
        let mut opts = TrainOptions::from_case(&case, 1);
        opts.iterations = 10;
        let state = State {
            iterations: 1,
            rows: vec![IterationRow {
                iteration: 1,
                lower_bound: 1.5,
                upper_bound_mean: 2.5,
                upper_bound_ci95: 0.1,
                gap: 0.4,
                cuts: 3,
                elapsed_secs: 0.01,
            }],
            cuts: vec![vec![1.0, 2.0, 3.0, 4.0], vec![]],
            states: vec![5.0, 6.0],
            bases: vec![(
                2,
                1,
                Entry {
                    cols: vec![BasisStatus::Basic, BasisStatus::Upper],
                    rows: vec![BasisStatus::Lower],
                    cuts: vec![(7, BasisStatus::Lower)],
                },
            )],
            lb_basis: Entry::default(),
            slack: 0.0,
        };
        let dir = std::env::temp_dir().join(format!("cobre-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(FILE);
        std::fs::write(&path, encode(&case, &opts, &state)).expect("write");
        assert_eq!(read(&path, &case, &opts).expect("read"), state);
        let mut other = opts.clone();
        other.seed += 1;
        assert!(matches!(
            read(&path, &case, &other),
            Err(CheckpointError::Mismatch { .. })
        ));
        let mut few = opts.clone();
        few.iterations = 1;
        assert!(matches!(
            read(&path, &case, &few),
            Err(CheckpointError::Done { .. })
        ));
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        assert!(matches!(
            read(&path, &case, &opts),
            Err(CheckpointError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
