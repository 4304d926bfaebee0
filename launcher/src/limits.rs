//! Upfront limits derived from the machine: every size a user gives is
//! checked before anything is allocated, with a message that states the
//! limit and the estimate.

use cobre_shm::launch::MAX_THREADS_PER_CPU;
use cobre_shm::machine::{mem_available, shm_free_bytes};
use cobre_shm_layout::DEFAULT_STAGING_BYTES;
use cobre_shm_sddp::Sizes;

/// Bytes of memory a rank's thread needs at least (a workspace without
/// cuts, its stack and scratch), measured by `benches/memory.rs`.
pub const MIN_THREAD_BYTES: u64 = 4 << 20;

fn human(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

/// Refuse a run whose shared data (`copies` copies of it, plus `staging`
/// bytes of the job's staging buffers) does not fit `/dev/shm`, or which
/// with `workers` threads does not fit the memory available.
///
/// # Errors
/// A message with the estimate and the limit.
pub fn check_memory(
    sizes: &Sizes,
    copies: usize,
    workers: usize,
    private: bool,
    staging: u64,
) -> Result<(), String> {
    let shared = sizes
        .shared_bytes()
        .saturating_mul(copies as u64)
        .saturating_add(staging);
    let detail = format!(
        "cut pool {}, trial points {}, stage-LP cache {}, opening tree {}, staging buffers {}",
        human(sizes.pool_bytes),
        human(sizes.states_bytes),
        human(sizes.cache_bytes),
        human(sizes.tree_bytes),
        human(staging)
    );
    if !private {
        if let Some(free) = shm_free_bytes() {
            if shared > free {
                let smaller = if staging > 2 * DEFAULT_STAGING_BYTES as u64 {
                    format!(
                        ", or give smaller staging buffers ({}={DEFAULT_STAGING_BYTES})",
                        cobre_shm::config::ENV_STAGING
                    )
                } else {
                    String::new()
                };
                return Err(format!(
                    "this run needs {} of shared memory ({detail}) but /dev/shm has {} free: lower \
                     --iterations or --forward-passes, free /dev/shm (`cobre-shm clean`, `df -h \
                     /dev/shm`) or enlarge it{smaller}",
                    human(shared),
                    human(free)
                ));
            }
        }
    }
    let need = shared.saturating_add((workers as u64).saturating_mul(MIN_THREAD_BYTES));
    if let Some(avail) = mem_available() {
        if need > avail {
            return Err(format!(
                "this run needs at least {} of memory ({} of shared data: {detail}; plus {workers} \
                 worker threads) but {} is available: lower --iterations, --forward-passes or \
                 --threads",
                human(need),
                human(shared),
                human(avail)
            ));
        }
    }
    Ok(())
}

/// Refuse more threads than the machine can sensibly run.
///
/// # Errors
/// A message with the count and the limit.
pub fn check_threads(workers: usize, cpus: usize) -> Result<(), String> {
    let limit = MAX_THREADS_PER_CPU.saturating_mul(cpus.max(1));
    if workers > limit {
        return Err(format!(
            "{workers} worker threads in all is more than {limit} ({MAX_THREADS_PER_CPU} per CPU on \
             {cpus} CPU(s)); lower -p or --threads"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_refused_with_numbers() {
        let s = Sizes {
            cuts_per_stage: 1,
            tree_bytes: 1,
            cache_bytes: 1,
            pool_bytes: u64::MAX / 4,
            states_bytes: 1,
        };
        let e = check_memory(&s, 1, 1, false, 8 << 20).expect_err("too big");
        assert!(e.contains("shared memory") || e.contains("memory"), "{e}");
        // The staging buffers count as shared memory too.
        let tiny = Sizes { pool_bytes: 1, ..s };
        assert_eq!(check_memory(&tiny, 1, 1, false, 8 << 20), Ok(()));
        let e = check_memory(&tiny, 1, 1, false, u64::MAX / 4).expect_err("staging too big");
        assert!(e.contains("staging buffers"), "{e}");
        assert!(check_threads(100_000, 2)
            .expect_err("too many")
            .contains("128"));
        assert!(check_threads(16, 2).is_ok());
    }
}
