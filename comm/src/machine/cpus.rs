//! The CPUs of this machine and of this process: online CPUs, the affinity
//! mask, the cpuset cgroup, how many ranks their masks leave a CPU of their
//! own, the L2 cache size, and the compact list format (`0-3,8`).
#![forbid(unsafe_code)]

use crate::os::numa;

/// Number of online CPUs (not the affinity mask: a bound rank still shares
/// the machine with the others).
#[must_use]
pub fn online_cpus() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(1)
        .max(1)
}

/// The CPUs this process may run on (its affinity mask, which a cpuset,
/// `taskset` or a batch system's binding narrows), ascending; `None` when
/// the kernel does not say.
#[must_use]
pub fn allowed_cpus() -> Option<Vec<u32>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let cpus: Vec<u32> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .filter_map(|c| u32::try_from(c).ok())
        .collect();
    (!cpus.is_empty()).then_some(cpus)
}

/// How many of the ranks whose affinity masks are `masks` (one list of
/// CPUs per rank) can each run on a CPU no other of them needs: the size of
/// a largest matching of ranks to CPUs of their masks. Below the number of
/// ranks, some must share a CPU however the scheduler places them (two ranks
/// under one `taskset -c 0`, say), even when the masks' union is larger.
#[must_use]
pub fn ranks_with_own_cpu(masks: &[Vec<u32>]) -> usize {
    /// Give `rank` a free CPU of its mask, else one whose rank can move to
    /// another CPU of its own mask (an augmenting path; `seen` marks the
    /// CPUs already tried). Free CPUs first keeps unbound jobs linear.
    fn place(
        rank: usize,
        masks: &[Vec<u32>],
        owner: &mut std::collections::HashMap<u32, usize>,
        seen: &mut std::collections::HashSet<u32>,
    ) -> bool {
        let mask = &masks[rank];
        if let Some(&cpu) = mask.iter().find(|c| !owner.contains_key(c)) {
            owner.insert(cpu, rank);
            return true;
        }
        for &cpu in mask {
            let Some(&other) = owner.get(&cpu) else {
                continue;
            };
            if seen.insert(cpu) && place(other, masks, owner, seen) {
                owner.insert(cpu, rank);
                return true;
            }
        }
        false
    }
    let mut owner = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    (0..masks.len())
        .filter(|&rank| {
            seen.clear();
            place(rank, masks, &mut owner, &mut seen)
        })
        .count()
}

/// Number of CPUs in this process's cpuset cgroup (v1 or v2): what a
/// container or a batch job was given, which a `taskset` of one rank inside
/// it does not narrow; `None` when no cpuset can be read.
#[must_use]
pub fn cpuset_cpus() -> Option<usize> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (dir, v1) = cpuset_dir(&cgroup, &mountinfo)?;
    cpuset_size(&dir, v1)
}

/// CPUs of the cpuset in `dir` (a cgroup directory of a v1 or v2 hierarchy).
fn cpuset_size(dir: &std::path::Path, v1: bool) -> Option<usize> {
    let files: &[&str] = if v1 {
        &["cpuset.effective_cpus", "cpuset.cpus"]
    } else {
        &["cpuset.cpus.effective"]
    };
    // A v2 cgroup without the cpuset controller has no such file and runs
    // on its nearest ancestor's CPUs.
    dir.ancestors().find_map(|d| {
        files.iter().find_map(|f| {
            let list = std::fs::read_to_string(d.join(f)).ok()?;
            let n = numa::parse_list(&list).ok()?.len();
            (n > 0).then_some(n)
        })
    })
}

/// The directory of this process's cpuset, from `/proc/self/cgroup` and
/// `/proc/self/mountinfo`, and whether it is a v1 hierarchy (a v1 cpuset
/// mount wins over the unified one, as the kernel enforces it then).
fn cpuset_dir(cgroup: &str, mountinfo: &str) -> Option<(std::path::PathBuf, bool)> {
    // `id:controllers:path`; the unified hierarchy's line is `0::path`.
    let path_of = |v1: bool| {
        cgroup.lines().find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, controllers, path) = (it.next()?, it.next()?, it.next()?);
            let wanted = if v1 {
                controllers.split(',').any(|c| c == "cpuset")
            } else {
                controllers.is_empty()
            };
            wanted.then_some(path)
        })
    };
    // `id parent dev root mount-point options [optional...] - fstype source super-options`.
    let mount_of = |v1: bool| {
        mountinfo.lines().find_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let head: Vec<&str> = head.split(' ').collect();
            let tail: Vec<&str> = tail.split(' ').collect();
            let fits = if v1 {
                tail.first() == Some(&"cgroup")
                    && tail
                        .get(2)
                        .is_some_and(|o| o.split(',').any(|x| x == "cpuset"))
            } else {
                tail.first() == Some(&"cgroup2")
            };
            fits.then(|| Some((*head.get(3)?, *head.get(4)?))).flatten()
        })
    };
    [true, false].into_iter().find_map(|v1| {
        let path = path_of(v1)?;
        let (root, mount_point) = mount_of(v1)?;
        let inner = path.strip_prefix(root.trim_end_matches('/'))?;
        if !(inner.is_empty() || inner.starts_with('/')) {
            return None; // `/ab` under root `/a`: not inside the mount
        }
        let dir = std::path::Path::new(mount_point).join(inner.trim_start_matches('/'));
        Some((dir, v1))
    })
}

/// A kernel file's text, if it can be read.
pub(super) fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Bytes of the level-2 cache of CPU 0 (sysfs), if the kernel says.
#[must_use]
pub fn l2_cache_bytes() -> Option<usize> {
    (0..8).find_map(|i| {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let level = read(&format!("{dir}/level"))?;
        let kind = read(&format!("{dir}/type"))?;
        (level.trim() == "2" && kind.trim() != "Instruction")
            .then(|| parse_cache_size(&read(&format!("{dir}/size"))?))
            .flatten()
    })
}

/// A sysfs cache size: `512K`, `2M` or plain bytes.
fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.strip_suffix('K') {
        Some(d) => (d, 1 << 10),
        None => match s.strip_suffix('M') {
            Some(d) => (d, 1 << 20),
            None => (s, 1),
        },
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

/// Compact list rendering: `0-3,8,10-11`.
#[must_use]
pub fn format_list(items: &[u32]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let mut j = i;
        while j + 1 < items.len() && items[j + 1] == items[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            items[i].to_string()
        } else {
            format!("{}-{}", items[i], items[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_get_their_own_cpu_only_where_the_masks_allow_it() {
        let m = |lists: &[&[u32]]| lists.iter().map(|l| l.to_vec()).collect::<Vec<_>>();
        // Unbound ranks on 4 CPUs; more ranks than CPUs.
        assert_eq!(ranks_with_own_cpu(&vec![vec![0, 1, 2, 3]; 4]), 4);
        assert_eq!(ranks_with_own_cpu(&vec![vec![0, 1]; 3]), 2);
        // Two ranks under one `taskset -c 0`; each on its own CPU.
        assert_eq!(ranks_with_own_cpu(&m(&[&[0], &[0]])), 1);
        assert_eq!(ranks_with_own_cpu(&m(&[&[0], &[1]])), 2);
        // The union has three CPUs, but two ranks can only use CPU 0.
        assert_eq!(ranks_with_own_cpu(&m(&[&[0], &[0], &[1, 2]])), 2);
        // Greedy placement would give rank 0 CPU 0 and leave rank 1 none:
        // rank 0 must move to CPU 1.
        assert_eq!(ranks_with_own_cpu(&m(&[&[0, 1], &[0]])), 2);
        assert_eq!(ranks_with_own_cpu(&m(&[&[0, 1], &[0, 2], &[0]])), 3);
        assert_eq!(ranks_with_own_cpu(&m(&[&[1, 0], &[2, 1], &[2]])), 3);
        assert_eq!(ranks_with_own_cpu(&[]), 0);
        // Large unbound jobs stay quick (free CPUs are taken first).
        let all: Vec<u32> = (0..1024).collect();
        assert_eq!(ranks_with_own_cpu(&vec![all; 1024]), 1024);
    }

    #[test]
    fn a_cgroup_without_the_cpuset_controller_counts_its_ancestors_cpus() {
        let root = std::env::temp_dir().join(format!("cobre-shm-cpuset-{}", std::process::id()));
        let leaf = root.join("job.slice/step");
        std::fs::create_dir_all(&leaf).expect("dirs");
        std::fs::write(root.join("cpuset.cpus.effective"), "0-63\n").expect("write");
        std::fs::write(root.join("job.slice/cpuset.cpus.effective"), "4-7,12\n").expect("write");
        assert_eq!(cpuset_size(&leaf, false), Some(5));
        std::fs::write(leaf.join("cpuset.cpus.effective"), "9\n").expect("write");
        assert_eq!(cpuset_size(&leaf, false), Some(1));
        // v1 names; an empty list is no answer.
        std::fs::write(leaf.join("cpuset.effective_cpus"), "\n").expect("write");
        std::fs::write(leaf.join("cpuset.cpus"), "0-1\n").expect("write");
        assert_eq!(cpuset_size(&leaf, true), Some(2));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(cpuset_size(&leaf, false), None);
    }

    #[test]
    fn the_cpuset_directory_is_found_in_v1_v2_and_containers() {
        let v1_mounts = "24 23 0:21 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
            30 24 0:27 / /sys/fs/cgroup/cpuset rw,relatime shared:9 - cgroup cgroup rw,cpuset\n\
            31 24 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
            32 24 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let hybrid = "4:cpu,cpuacct:/\n3:cpuset:/slurm/job_7\n0::/user.slice\n";
        assert_eq!(
            cpuset_dir(hybrid, v1_mounts),
            Some(("/sys/fs/cgroup/cpuset/slurm/job_7".into(), true))
        );
        // Pure v2: the unified hierarchy.
        let v2_mounts =
            "28 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cpuset_dir("0::/system.slice/job.service\n", v2_mounts),
            Some(("/sys/fs/cgroup/system.slice/job.service".into(), false))
        );
        assert_eq!(
            cpuset_dir("0::/\n", v2_mounts),
            Some(("/sys/fs/cgroup".into(), false))
        );
        // A container that mounts only its own subtree (root is not `/`).
        let bound = "40 30 0:27 /docker/abc /sys/fs/cgroup/cpuset ro - cgroup cgroup rw,cpuset\n";
        assert_eq!(
            cpuset_dir("3:cpuset:/docker/abc\n", bound),
            Some(("/sys/fs/cgroup/cpuset".into(), true))
        );
        assert_eq!(cpuset_dir("3:cpuset:/docker/abcd\n", bound), None);
        // No cpuset anywhere, or no cgroup file.
        assert_eq!(cpuset_dir("4:cpu,cpuacct:/\n", v1_mounts), None);
        assert_eq!(cpuset_dir("", v2_mounts), None);
    }

    #[test]
    fn cache_sizes_parse_with_and_without_units() {
        assert_eq!(parse_cache_size("1024K\n"), Some(1 << 20));
        assert_eq!(parse_cache_size("2M"), Some(2 << 20));
        assert_eq!(parse_cache_size("65536"), Some(65536));
        assert_eq!(parse_cache_size("big"), None);
        assert_eq!(parse_cache_size(&format!("{}M", usize::MAX)), None);
    }

    #[test]
    fn lists_render_compactly() {
        assert_eq!(format_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_list(&[]), "");
    }
}
