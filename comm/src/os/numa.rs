//! NUMA memory policy for shared segments (`mbind`) and page placement
//! queries (`move_pages`), by raw syscall: no libnuma needed for these.

use crate::mempolicy::MemPolicy;

const MPOL_PREFERRED: i32 = 1;
const MPOL_BIND: i32 = 2;
const MPOL_INTERLEAVE: i32 = 3;
/// Bits in the node masks passed to the kernel.
const MASK_BITS: usize = 1024;
const PAGE: usize = 4096;

/// Parse a kernel list such as `0-3,8,10-11` into its members.
///
/// # Errors
/// A message quoting the malformed part.
pub fn parse_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("malformed list entry '{part}' in '{}'", s.trim());
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if b < a {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// Nodes that have memory, from sysfs (`[0]` when sysfs says nothing).
#[must_use]
pub fn nodes_with_memory() -> Vec<u32> {
    ["has_memory", "has_normal_memory", "online"]
        .iter()
        .find_map(|f| {
            std::fs::read_to_string(format!("/sys/devices/system/node/{f}"))
                .ok()
                .and_then(|s| parse_list(&s).ok())
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| vec![0])
}

/// `items` (node or CPU numbers) as a bit mask of `W` words, as the
/// kernel's node and CPU masks lay them out; `None` when one does not fit.
pub(crate) fn mask_of<const W: usize>(items: &[u32]) -> Option<[u64; W]> {
    let mut mask = [0u64; W];
    for &n in items {
        let n = n as usize;
        *mask.get_mut(n / 64)? |= 1 << (n % 64);
    }
    Some(mask)
}

/// [`mask_of`] for the node masks of `mbind` and `set_mempolicy`.
fn node_mask(nodes: &[u32]) -> std::io::Result<[u64; MASK_BITS / 64]> {
    mask_of(nodes).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Apply `policy` to the pages of `[addr, addr + len)` of a shared mapping.
/// For shared memory the kernel stores the policy with the object, so it
/// governs every process's first touch. `FirstTouch` does nothing.
///
/// # Errors
/// The errno of `mbind` (e.g. `EINVAL` for a node that does not exist).
pub fn apply_policy(addr: usize, len: usize, policy: MemPolicy) -> std::io::Result<()> {
    let (mode, nodes) = match policy {
        MemPolicy::FirstTouch => return Ok(()),
        MemPolicy::Interleave => (MPOL_INTERLEAVE, nodes_with_memory()),
        MemPolicy::Node(k) => (MPOL_BIND, vec![k]),
    };
    if addr % PAGE != 0 || len == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mask = node_mask(&nodes)?;
    let len = len.div_ceil(PAGE) * PAGE;
    // SAFETY: mbind only changes the memory policy of the given range, which
    // the caller owns as a mapping of its own; `mask` is a live array of
    // MASK_BITS bits and the kernel reads at most `maxnode - 1` bits of it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            mode,
            mask.as_ptr(),
            MASK_BITS + 1,
            0u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Prefer node `node` for the calling thread's future allocations (the
/// `set_mempolicy` syscall; used when libnuma is absent).
///
/// # Errors
/// The errno of `set_mempolicy`.
pub fn set_preferred_node(node: u32) -> std::io::Result<()> {
    let mask = node_mask(&[node])?;
    // SAFETY: set_mempolicy only changes the calling thread's policy; `mask`
    // is a live array of MASK_BITS bits of which the kernel reads at most
    // `maxnode - 1`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_set_mempolicy,
            MPOL_PREFERRED,
            mask.as_ptr(),
            MASK_BITS + 1,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The NUMA node of each page of `[addr, addr + len)` (negative errno for
/// pages not yet backed by memory), via `move_pages` in query mode.
///
/// # Errors
/// The errno of `move_pages`.
pub fn page_nodes(addr: usize, len: usize) -> std::io::Result<Vec<i32>> {
    let first = addr / PAGE * PAGE;
    let count = (addr + len).div_ceil(PAGE) - first / PAGE;
    let pages: Vec<usize> = (0..count).map(|i| first + i * PAGE).collect();
    let mut status = vec![0i32; count];
    if count == 0 {
        return Ok(status);
    }
    // SAFETY: with `nodes == NULL` move_pages only reports the node of each
    // page into `status`; `pages` and `status` are live arrays of `count`
    // entries; pid 0 is the calling process, whose mapping covers the range.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            count,
            pages.as_ptr(),
            std::ptr::null::<i32>(),
            status.as_mut_ptr(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse() {
        assert_eq!(parse_list("0-3,8,10-11\n"), Ok(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_list(""), Ok(vec![]));
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("a").is_err());
    }

    #[test]
    fn this_machine_has_a_memory_node() {
        assert!(!nodes_with_memory().is_empty());
    }
}
