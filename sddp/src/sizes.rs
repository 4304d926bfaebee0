//! What a run will hold, computed from the model and the options before
//! anything is allocated (all arithmetic checked).
#![forbid(unsafe_code)]

use crate::error::EngineError;
use crate::model::Model;
use crate::options::TrainOptions;
use crate::shared::pool::HEAD;

/// The bytes of every shared structure of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Cut slots per stage (iterations × forward passes).
    pub cuts_per_stage: usize,
    /// Bytes of the opening tree.
    pub tree_bytes: u64,
    /// Bytes of the stage-LP cache.
    pub cache_bytes: u64,
    /// Bytes of the cut pool.
    pub pool_bytes: u64,
    /// Bytes of the trial points (kept when cut selection is on).
    pub states_bytes: u64,
}

impl Sizes {
    /// Bytes of every structure every rank reads (one copy per node under
    /// shm, one per rank with `--replicate` or MPI).
    #[must_use]
    pub fn shared_bytes(&self) -> u64 {
        self.tree_bytes
            .saturating_add(self.cache_bytes)
            .saturating_add(self.pool_bytes)
            .saturating_add(self.states_bytes)
    }
}

/// The sizes of a run of `model` with `opts`.
///
/// # Errors
/// [`EngineError::Options`] when a count is zero or a size overflows, with
/// the options to lower.
pub fn sizes<M: Model>(model: &M, opts: &TrainOptions) -> Result<Sizes, EngineError> {
    if opts.forward_passes == 0 || opts.iterations == 0 || opts.threads == 0 {
        return Err(EngineError::Options(
            "forward passes, iterations and threads must be at least 1".into(),
        ));
    }
    let stages = model.stages();
    if stages == 0 {
        return Err(EngineError::Options("the study has no stage".into()));
    }
    let too_big = || {
        EngineError::Options(format!(
            "{} iterations x {} forward passes over {stages} stages and a state of {} is too \
             large to hold (cut pool and trial points); lower --iterations or --forward-passes",
            opts.iterations,
            opts.forward_passes,
            model.state_len()
        ))
    };
    let cuts = opts
        .iterations
        .checked_mul(opts.forward_passes)
        .filter(|&c| u32::try_from(c).is_ok())
        .ok_or_else(too_big)?;
    let mul = |a: u64, b: u64| a.checked_mul(b).ok_or_else(too_big);
    let add = |a: u64, b: u64| a.checked_add(b).ok_or_else(too_big);
    let lanes = (stages - 1) as u64;
    let width = (0..stages - 1)
        .map(|t| model.cut_layout(t).len())
        .max()
        .unwrap_or(0) as u64;
    let (mut tree, mut cache) = (0u64, 0u64);
    for t in 0..stages {
        tree = add(
            tree,
            mul(model.openings(t) as u64, model.noise_len() as u64)?,
        )?;
        let lp = model.stage_shape(t);
        let (n, m, nz) = (lp.cols as u64, lp.rows as u64, lp.nonzeros as u64);
        cache = add(cache, add(mul(nz, 12)?, add(mul(n, 36)?, m * 24 + 4)?)?)?;
    }
    let keep = opts.cut_selection.rule.is_some();
    Ok(Sizes {
        cuts_per_stage: cuts,
        tree_bytes: mul(tree, 8)?,
        cache_bytes: cache,
        pool_bytes: mul(mul(lanes, cuts as u64)?, mul(width + HEAD as u64, 8)?)?,
        states_bytes: if keep {
            mul(mul(lanes, cuts as u64)?, mul(model.state_len() as u64, 8)?)?
        } else {
            0
        },
    })
}
