//! Values that rank 0 has and the others need, and agreements between ranks.
//!
//! A value travels as postcard bytes: its length first (one `u64`
//! broadcast), then the bytes. Rank 0 sends length 0 when it has no value
//! (it failed), so every rank leaves the exchange together instead of one
//! waiting forever.

use cobre_comm::{CommData, CommError, Communicator, ReduceOp};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failed exchange.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The communicator failed.
    #[error("{what}: {source}")]
    Comm {
        /// What was being exchanged.
        what: &'static str,
        /// The collective's error.
        source: CommError,
    },
    /// Rank 0 could not produce the value (its own error says why).
    #[error("rank 0 could not load {0}")]
    RootFailed(&'static str),
    /// The bytes did not decode (a different build on another rank?).
    #[error("{what} does not decode: {message}")]
    Codec {
        /// What was being exchanged.
        what: &'static str,
        /// The codec's message.
        message: String,
    },
    /// A size does not fit this machine's `usize`.
    #[error("{0}: size out of range")]
    Size(&'static str),
}

fn comm_err(what: &'static str) -> impl FnOnce(CommError) -> ShareError {
    move |source| ShareError::Comm { what, source }
}

/// Rank 0's `value` on every rank (`None` on rank 0: it failed, and every
/// rank returns [`ShareError::RootFailed`]). Other ranks pass `None`.
///
/// # Errors
/// The communicator failed, rank 0 had no value, or decoding failed.
pub fn from_root<T, C>(comm: &C, what: &'static str, value: Option<T>) -> Result<T, ShareError>
where
    T: Serialize + DeserializeOwned,
    C: Communicator,
{
    let root = comm.rank() == 0;
    let mut bytes = match (&value, root) {
        (Some(v), true) => postcard::to_allocvec(v).map_err(|e| ShareError::Codec {
            what,
            message: e.to_string(),
        })?,
        _ => Vec::new(),
    };
    let mut len = [u64::try_from(bytes.len()).map_err(|_| ShareError::Size(what))?];
    comm.broadcast(&mut len, 0).map_err(comm_err(what))?;
    if len[0] == 0 {
        return Err(ShareError::RootFailed(what));
    }
    if !root {
        bytes = vec![0u8; usize::try_from(len[0]).map_err(|_| ShareError::Size(what))?];
    }
    comm.broadcast(&mut bytes, 0).map_err(comm_err(what))?;
    match value {
        Some(v) if root => Ok(v),
        _ => postcard::from_bytes(&bytes).map_err(|e| ShareError::Codec {
            what,
            message: e.to_string(),
        }),
    }
}

/// The lowest rank whose `ok` is false, if any (collective).
///
/// # Errors
/// The communicator failed.
pub fn first_failed<C: Communicator>(
    comm: &C,
    ok: bool,
    what: &'static str,
) -> Result<Option<usize>, ShareError> {
    // Ranks that succeeded send u64::MAX; the minimum is the lowest failure.
    let mine = if ok {
        u64::MAX
    } else {
        u64::try_from(comm.rank()).unwrap_or(u64::MAX - 1)
    };
    let mut low = [0u64];
    comm.allreduce(&[mine], &mut low, ReduceOp::Min)
        .map_err(comm_err(what))?;
    Ok((low[0] != u64::MAX).then(|| usize::try_from(low[0]).unwrap_or(usize::MAX)))
}

/// The largest `value` over the ranks (collective).
///
/// # Errors
/// The communicator failed.
pub fn agree_max<C: Communicator>(comm: &C, value: usize) -> Result<usize, ShareError> {
    let mut out = [0u64];
    comm.allreduce(
        &[u64::try_from(value).unwrap_or(u64::MAX)],
        &mut out,
        ReduceOp::Max,
    )
    .map_err(comm_err("stop request"))?;
    usize::try_from(out[0]).map_err(|_| ShareError::Size("stop request"))
}

/// Every rank's `local` slice, concatenated in rank order (collective).
///
/// # Errors
/// The communicator failed or the total does not fit.
pub fn gather_all<T, C>(comm: &C, local: &[T], what: &'static str) -> Result<Vec<T>, ShareError>
where
    T: CommData,
    C: Communicator,
{
    let n = comm.size();
    let mut lens = vec![0u64; n];
    let ones = vec![1usize; n];
    let slots: Vec<usize> = (0..n).collect();
    let mine = [u64::try_from(local.len()).map_err(|_| ShareError::Size(what))?];
    comm.allgatherv(&mine, &mut lens, &ones, &slots)
        .map_err(comm_err(what))?;
    let counts = lens
        .iter()
        .map(|&l| usize::try_from(l).map_err(|_| ShareError::Size(what)))
        .collect::<Result<Vec<usize>, _>>()?;
    let total = counts
        .iter()
        .try_fold(0usize, |a, &c| a.checked_add(c))
        .ok_or(ShareError::Size(what))?;
    let displs = cobre_comm::prefix_displs(&counts);
    let mut all = vec![T::default(); total];
    comm.allgatherv(local, &mut all, &counts, &displs)
        .map_err(comm_err(what))?;
    Ok(all)
}
