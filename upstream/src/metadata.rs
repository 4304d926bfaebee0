//! What cobre-shm adds to the `metadata.json` files upstream's writers
//! leave: fields after upstream's own, the file rewritten whole and renamed
//! into place.

use std::path::Path;

use crate::RunError;

/// The error of a failed addition to `path`.
pub(crate) fn cannot_add(path: &Path, why: &str) -> RunError {
    RunError::Invalid(format!(
        "cannot add cobre-shm's record to {}: {why}",
        path.display()
    ))
}

/// Rewrite `path` as `metadata` (upstream's fields, in upstream's order)
/// followed by `extra`.
///
/// # Errors
/// When the file cannot be written.
pub(crate) fn rewrite_with<T: serde::Serialize>(
    path: &Path,
    metadata: &T,
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), RunError> {
    #[derive(serde::Serialize)]
    struct With<'a, T> {
        #[serde(flatten)]
        metadata: &'a T,
        #[serde(flatten)]
        extra: &'a serde_json::Map<String, serde_json::Value>,
    }
    let text = serde_json::to_string_pretty(&With { metadata, extra })
        .map_err(|e| cannot_add(path, &e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| cannot_add(path, &e.to_string()))
}

/// Collective: this node's memory now — PSS summed over the ranks, with
/// its private and shared parts — as JSON.
///
/// # Errors
/// The exchange failed.
pub(crate) fn node_memory<C: cobre_comm::Communicator>(
    comm: &C,
) -> Result<serde_json::Value, crate::share::ShareError> {
    let [_, pss, anon, shmem] = cobre_shm_sddp::report::own_memory();
    let mut sums = [0u64; 3];
    comm.allreduce(&[pss, anon, shmem], &mut sums, cobre_comm::ReduceOp::Sum)
        .map_err(|source| crate::share::ShareError::Comm {
            what: "node memory",
            source,
        })?;
    Ok(serde_json::json!({
        "node_pss_bytes": sums[0],
        "node_pss_private_bytes": sums[1],
        "node_pss_shared_bytes": sums[2],
    }))
}
