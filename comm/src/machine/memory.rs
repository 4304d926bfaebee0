//! Memory of this machine: what the kernel says is available, and the room
//! left in `/dev/shm` where every segment lives.
#![forbid(unsafe_code)]

/// `MemAvailable` from `/proc/meminfo`, bytes (`None` when it cannot be read).
#[must_use]
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

pub use crate::os::segment::shm_free_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_reports_its_memory() {
        let avail = mem_available().expect("/proc/meminfo has MemAvailable");
        assert!(avail > 1 << 20, "{avail} bytes available");
        assert!(shm_free_bytes().is_some());
    }
}
