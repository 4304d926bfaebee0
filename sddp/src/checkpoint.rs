//! Checkpoints: everything a run needs to continue exactly where it was —
//! the completed iterations (their convergence rows), every cut they
//! produced with its active flag, the trial points cut selection reads, the
//! basis each trajectory left at each stage, and the lower bound's basis.
//! The sampling needs nothing: every draw is a pure function of (iteration,
//! trajectory, stage). A run resumed from iteration `i` therefore gives the
//! same cuts, bounds and policy as the uninterrupted run, on any ranks ×
//! threads split.
//!
//! Format (`checkpoint.bin`, little-endian): magic `COBRECKP`, version, the
//! fingerprints of the model and of the options the results depend on, the
//! rows, the pool lanes (stride, records, active flags), the trial points,
//! the bases, and last an XXH3-128 digest of every byte before it. Checked
//! when read, before anything else is trusted: a damaged file, another
//! version, another study or other options are refused, naming which.
#![forbid(unsafe_code)]

use std::io::Write;

use cobre_solver::BasisStatus;
use xxhash_rust::xxh3::Xxh3;

use crate::iteration::IterationRow;
use crate::solve::basis::Entry;

/// First bytes of a checkpoint.
pub const MAGIC: &[u8; 8] = b"COBRECKP";
/// Version of the format (2: per-lane strides, active flags, full bases,
/// a closing digest).
pub const VERSION: u32 = 2;
/// File name inside an output directory.
pub const FILE: &str = "checkpoint.bin";
/// The checkpoint a newer one replaced, kept beside it in the same directory.
pub const PREVIOUS_FILE: &str = "checkpoint.previous.bin";
/// Bytes of the closing digest.
pub const DIGEST_BYTES: usize = 16;

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
    /// Its bytes do not match the digest it was written with.
    #[error(
        "{path} is damaged (its contents do not match the digest written with it){}",
        previous.as_ref().map_or_else(
            || ": resume from an intact copy of the study's outputs, or start the study again \
                without --resume".to_string(),
            |p| format!(": the checkpoint before it is intact: resume with --resume {p}, or start \
                         the study again without --resume")
        )
    )]
    Damaged {
        /// Path.
        path: String,
        /// An intact earlier checkpoint beside it, if there is one.
        previous: Option<String>,
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
    /// Of another study or other options.
    #[error(
        "{path} belongs to another study: {what}. Resume with the case and the options it was \
         written with (--seed, --forward-passes, --cut-selection)"
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

/// One lane of the pool in a checkpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaneState {
    /// Values per record.
    pub stride: usize,
    /// The records of the completed iterations (record-major).
    pub records: Vec<f64>,
    /// Active flags, one bit per slot.
    pub active: Vec<u64>,
}

/// What a checkpoint holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// Completed iterations.
    pub iterations: usize,
    /// Their convergence rows.
    pub rows: Vec<IterationRow>,
    /// The pool lanes.
    pub lanes: Vec<LaneState>,
    /// Trial points (`states × lanes × state`), when kept.
    pub states: Vec<f64>,
    /// `(trajectory, stage, basis)` of every stored basis.
    pub bases: Vec<(u32, u32, Entry)>,
    /// The lower bound's basis.
    pub lb_basis: Entry,
    /// Penalised slack so far.
    pub slack: f64,
}

/// What the results depend on besides the model: fingerprints of both,
/// written into a checkpoint and compared when it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// [`crate::model::Model::fingerprint`].
    pub model: u64,
    /// [`crate::model::Model::seed`].
    pub seed: u64,
    /// [`options_fingerprint`].
    pub options: u64,
}

/// What the results depend on among the options (not the iteration limit,
/// the stop rules or the layout).
#[must_use]
pub fn options_fingerprint(opts: &crate::options::TrainOptions) -> u64 {
    let mut h = crate::model::Fnv::default();
    let s = &opts.cut_selection;
    h.bytes(
        format!(
            "passes={} selection={} every={} tolerance={:e}",
            opts.forward_passes,
            s.as_str(),
            s.every,
            s.tolerance
        )
        .as_bytes(),
    );
    h.0
}

/// A little-endian writer that hashes what it writes.
struct Out<'w> {
    buf: Vec<u8>,
    hash: Xxh3,
    w: &'w mut dyn Write,
}

/// Bytes buffered before they go to the writer.
const CHUNK: usize = 1 << 16;

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() > CHUNK {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.hash.update(&self.buf);
        self.w.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
    fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn f64(&mut self, v: f64) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn f64s(&mut self, v: &[f64]) -> std::io::Result<()> {
        self.u64(v.len() as u64)?;
        v.iter().try_for_each(|&x| self.f64(x))
    }
    fn u64s(&mut self, v: &[u64]) -> std::io::Result<()> {
        self.u64(v.len() as u64)?;
        v.iter().try_for_each(|&x| self.u64(x))
    }
    fn statuses(&mut self, v: &[BasisStatus]) -> std::io::Result<()> {
        self.u64(v.len() as u64)?;
        let codes: Vec<u8> = v.iter().map(|s| s.to_discriminant_code()).collect();
        self.bytes(&codes)
    }
    fn entry(&mut self, e: &Entry) -> std::io::Result<()> {
        self.statuses(&e.cols)?;
        self.statuses(&e.rows)?;
        self.u64(e.structural as u64)?;
        self.u64(e.slots.len() as u64)?;
        e.slots.iter().try_for_each(|&s| self.u32(s))
    }
    /// Write the digest of everything so far.
    fn finish(mut self) -> std::io::Result<()> {
        self.flush()?;
        let digest = self.hash.digest128().to_le_bytes();
        self.w.write_all(&digest)
    }
}

/// Serialise one stored basis with its keys (for gathering them from every
/// rank).
#[must_use]
pub fn encode_entry(trajectory: u32, stage: u32, e: &Entry) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut o = Out {
        buf: Vec::new(),
        hash: Xxh3::new(),
        w: &mut bytes,
    };
    // Writing to a Vec cannot fail.
    let _ = (|| {
        o.u32(trajectory)?;
        o.u32(stage)?;
        o.entry(e)?;
        o.flush()
    })();
    bytes
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

/// Write `state` of the study `id` to `w`, streaming, with its digest.
///
/// # Errors
/// The writer's.
pub fn write_to(w: &mut dyn Write, id: Identity, state: &StateView<'_>) -> std::io::Result<()> {
    let mut o = Out {
        buf: Vec::with_capacity(CHUNK + 64),
        hash: Xxh3::new(),
        w,
    };
    o.bytes(MAGIC)?;
    o.u32(VERSION)?;
    o.u64(id.model)?;
    o.u64(id.seed)?;
    o.u64(id.options)?;
    o.u64(state.iterations as u64)?;
    o.u64(state.rows.len() as u64)?;
    for r in state.rows {
        o.u64(r.iteration as u64)?;
        o.f64(r.lower_bound)?;
        o.f64(r.upper_bound_mean)?;
        o.f64(r.upper_bound_ci95)?;
        o.f64(r.gap)?;
        o.u64(r.cuts as u64)?;
        o.f64(r.elapsed_secs)?;
        o.f64(r.upper_bound_std)?;
        o.u64(r.lp_solves)?;
        o.u64(r.active_cuts as u64)?;
        r.phase_secs.iter().try_for_each(|&v| o.f64(v))?;
    }
    o.u64(state.lanes.len() as u64)?;
    for lane in state.lanes {
        o.u64(lane.stride as u64)?;
        o.f64s(lane.records)?;
        o.u64s(lane.active)?;
    }
    o.f64s(state.states)?;
    o.u64(state.bases.len() as u64)?;
    for (g, t, e) in state.bases {
        o.u32(*g)?;
        o.u32(*t)?;
        o.entry(e)?;
    }
    o.entry(state.lb_basis)?;
    o.f64(state.slack)?;
    o.finish()
}

/// One lane of a checkpoint to write, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct LaneView<'a> {
    /// Values per record.
    pub stride: usize,
    /// Records of the completed iterations.
    pub records: &'a [f64],
    /// Active flags.
    pub active: &'a [u64],
}

/// A checkpoint to write, borrowing its parts from wherever they live.
#[derive(Clone, Copy, Debug)]
pub struct StateView<'a> {
    /// Completed iterations.
    pub iterations: usize,
    /// Their convergence rows.
    pub rows: &'a [IterationRow],
    /// The pool lanes.
    pub lanes: &'a [LaneView<'a>],
    /// Trial points.
    pub states: &'a [f64],
    /// Every stored basis.
    pub bases: &'a [(u32, u32, Entry)],
    /// The lower bound's basis.
    pub lb_basis: &'a Entry,
    /// Penalised slack so far.
    pub slack: f64,
}

/// Serialise `state` of study `id`.
#[must_use]
pub fn encode(id: Identity, state: &State) -> Vec<u8> {
    let lanes: Vec<LaneView<'_>> = state
        .lanes
        .iter()
        .map(|l| LaneView {
            stride: l.stride,
            records: &l.records,
            active: &l.active,
        })
        .collect();
    let view = StateView {
        iterations: state.iterations,
        rows: &state.rows,
        lanes: &lanes,
        states: &state.states,
        bases: &state.bases,
        lb_basis: &state.lb_basis,
        slack: state.slack,
    };
    let mut bytes = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_to(&mut bytes, id, &view);
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
    /// A count of items of `unit` bytes that must fit in what is left.
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
    fn usize(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "count out of range".to_string())
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn f64s(&mut self) -> Result<Vec<f64>, String> {
        let n = self.len(8)?;
        (0..n).map(|_| self.f64()).collect()
    }
    fn u64s(&mut self) -> Result<Vec<u64>, String> {
        let n = self.len(8)?;
        (0..n).map(|_| self.u64()).collect()
    }
    fn statuses(&mut self) -> Result<Vec<BasisStatus>, String> {
        let n = self.len(1)?;
        self.take(n)?
            .iter()
            .map(|&c| status(c))
            .collect::<Result<_, _>>()
    }
    fn entry(&mut self) -> Result<Entry, String> {
        let cols = self.statuses()?;
        let rows = self.statuses()?;
        let structural = self.usize()?;
        let n = self.len(4)?;
        let slots = (0..n).map(|_| self.u32()).collect::<Result<_, _>>()?;
        if structural > rows.len() {
            return Err(format!(
                "a basis of {} rows claims {structural} structural rows",
                rows.len()
            ));
        }
        Ok(Entry {
            cols,
            rows,
            structural,
            slots,
        })
    }
}

/// A basis status from its code, refusing unknown codes.
fn status(code: u8) -> Result<BasisStatus, String> {
    let s = BasisStatus::from_discriminant_code(code);
    if s.to_discriminant_code() == code {
        Ok(s)
    } else {
        Err(format!("unknown basis status code {code}"))
    }
}

/// The checkpoint `from` names: the file itself, or [`FILE`] inside an
/// output directory.
#[must_use]
pub fn locate(from: &std::path::Path) -> std::path::PathBuf {
    if from.is_dir() {
        from.join(FILE)
    } else {
        from.to_path_buf()
    }
}

/// Read and check the checkpoint at `path` for study `id`, to continue up
/// to `iterations`. A damaged checkpoint names the previous one beside it
/// when that one is intact.
///
/// # Errors
/// [`CheckpointError`] saying why it cannot be used.
pub fn read(
    path: &std::path::Path,
    id: Identity,
    iterations: usize,
) -> Result<State, CheckpointError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: shown.clone(),
        source,
    })?;
    let state = match decode(&bytes, &shown, id) {
        Err(CheckpointError::Damaged { path: p, .. }) => {
            let previous = path.with_file_name(PREVIOUS_FILE);
            let intact = path != previous
                && std::fs::read(&previous).is_ok_and(|b| decode(&b, "", id).is_ok());
            return Err(CheckpointError::Damaged {
                path: p,
                previous: intact.then(|| previous.display().to_string()),
            });
        }
        other => other?,
    };
    if state.iterations >= iterations {
        return Err(CheckpointError::Done {
            path: shown,
            done: state.iterations,
            asked: iterations,
        });
    }
    Ok(state)
}

/// Check and parse checkpoint `bytes` (named `shown` in errors) of study `id`.
///
/// # Errors
/// [`CheckpointError`] saying why they cannot be used.
pub fn decode(bytes: &[u8], shown: &str, id: Identity) -> Result<State, CheckpointError> {
    let corrupt = |what: String| CheckpointError::Corrupt {
        path: shown.to_string(),
        what,
    };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(corrupt("no checkpoint magic".into()));
    }
    let mut r = In { b: bytes, at: 8 };
    let version = r.u32().map_err(corrupt)?;
    if version != VERSION {
        return Err(CheckpointError::Version {
            path: shown.to_string(),
            found: version,
        });
    }
    let body_end = bytes
        .len()
        .checked_sub(DIGEST_BYTES)
        .filter(|&e| e >= 12)
        .ok_or_else(|| CheckpointError::Damaged {
            path: shown.to_string(),
            previous: None,
        })?;
    let written = &bytes[body_end..];
    if xxhash_rust::xxh3::xxh3_128(&bytes[..body_end]).to_le_bytes() != written {
        return Err(CheckpointError::Damaged {
            path: shown.to_string(),
            previous: None,
        });
    }
    let mut r = In {
        b: &bytes[..body_end],
        at: 12,
    };
    let model = r.u64().map_err(corrupt)?;
    let seed = r.u64().map_err(corrupt)?;
    let options = r.u64().map_err(corrupt)?;
    if model != id.model {
        return Err(CheckpointError::Mismatch {
            path: shown.to_string(),
            what: "it was written for another case".into(),
        });
    }
    if seed != id.seed {
        return Err(CheckpointError::Mismatch {
            path: shown.to_string(),
            what: format!("it was sampled with seed {seed}, not {}", id.seed),
        });
    }
    if options != id.options {
        return Err(CheckpointError::Mismatch {
            path: shown.to_string(),
            what: "it was written with other training options".into(),
        });
    }
    let state = decode_body(&mut r).map_err(corrupt)?;
    if r.at != body_end {
        return Err(corrupt(format!("{} bytes after the end", body_end - r.at)));
    }
    Ok(state)
}

fn decode_body(r: &mut In<'_>) -> Result<State, String> {
    let iterations = r.usize()?;
    let nrows = r.len(104)?;
    let mut rows = Vec::with_capacity(nrows);
    for _ in 0..nrows {
        rows.push(IterationRow {
            iteration: r.usize()?,
            lower_bound: r.f64()?,
            upper_bound_mean: r.f64()?,
            upper_bound_ci95: r.f64()?,
            gap: r.f64()?,
            cuts: r.usize()?,
            elapsed_secs: r.f64()?,
            upper_bound_std: r.f64()?,
            lp_solves: r.u64()?,
            active_cuts: r.usize()?,
            phase_secs: [r.f64()?, r.f64()?, r.f64()?],
        });
    }
    let nlanes = r.len(24)?;
    let mut lanes = Vec::with_capacity(nlanes);
    for _ in 0..nlanes {
        lanes.push(LaneState {
            stride: r.usize()?,
            records: r.f64s()?,
            active: r.u64s()?,
        });
    }
    let states = r.f64s()?;
    let nb = r.len(8 + 24)?;
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
        lanes,
        states,
        bases,
        lb_basis,
        slack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        use cobre_solver::Basis;
        let mut entry = Entry::default();
        entry.capture(
            &Basis {
                col_status: vec![BasisStatus::Basic, BasisStatus::Upper],
                row_status: vec![BasisStatus::Lower, BasisStatus::Basic],
            },
            1,
            &[7],
        );
        State {
            iterations: 1,
            rows: vec![IterationRow {
                iteration: 1,
                lower_bound: 1.5,
                upper_bound_mean: 2.5,
                upper_bound_ci95: 0.1,
                gap: 0.4,
                cuts: 3,
                elapsed_secs: 0.01,
                upper_bound_std: 0.2,
                lp_solves: 12,
                active_cuts: 2,
                phase_secs: [0.1, 0.2, 0.3],
            }],
            lanes: vec![
                LaneState {
                    stride: 4,
                    records: vec![1.0, 1.0, 0.0, 4.0],
                    active: vec![1],
                },
                LaneState::default(),
            ],
            states: vec![5.0, 6.0],
            bases: vec![(2, 1, entry)],
            lb_basis: Entry::default(),
            slack: 0.0,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let id = Identity {
            model: 11,
            seed: 5,
            options: 22,
        };
        let state = sample();
        let bytes = encode(id, &state);
        assert_eq!(decode(&bytes, "c", id).expect("intact"), state);
        let other = Identity { model: 12, ..id };
        assert!(matches!(
            decode(&bytes, "c", other),
            Err(CheckpointError::Mismatch { .. })
        ));
        // Every flipped bit is refused (the digest, or the magic/version).
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad, "c", id).is_err(), "flip at {at} accepted");
        }
        assert!(matches!(
            decode(&bytes[..bytes.len() - 3], "c", id),
            Err(CheckpointError::Damaged { .. })
        ));
    }
}
