//! The machine's NUMA topology (libnuma, else sysfs, else one node with
//! every online CPU), a text format to describe other machines, and binding
//! of the calling process to CPUs and a memory node.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use crate::os::{libnuma, numa};

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

/// One NUMA node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    /// Kernel node number.
    pub id: u32,
    /// CPUs of the node, ascending.
    pub cpus: Vec<u32>,
    /// Memory of the node, if known.
    pub memory_bytes: Option<u64>,
    /// Distance to every node of the topology, in `nodes` order (10 = local).
    pub distances: Vec<u32>,
}

/// Where a topology came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopologySource {
    /// libnuma on this machine.
    LibNuma,
    /// `/sys/devices/system/node` on this machine.
    Sysfs,
    /// No NUMA information: one node with every online CPU.
    SingleNode,
    /// A topology file (`COBRE_SHM_TOPOLOGY`).
    File(String),
}

/// A set of NUMA nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Nodes in ascending id order.
    pub nodes: Vec<NumaNode>,
    /// How it was found.
    pub source: TopologySource,
}

fn read(path: &str) -> Option<String> {
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

impl Topology {
    /// The topology of this machine.
    #[must_use]
    pub fn discover() -> Self {
        Self::from_libnuma()
            .or_else(Self::from_sysfs)
            .unwrap_or_else(Self::single_node_of_this_machine)
    }

    /// [`Self::discover`] narrowed to the CPUs this process may run on
    /// ([`allowed_cpus`]), with the CPUs left out.
    #[must_use]
    pub fn discover_allowed() -> (Self, Vec<u32>) {
        let mut topo = Self::discover();
        let removed = allowed_cpus()
            .map(|allowed| topo.restrict_to(&allowed))
            .unwrap_or_default();
        (topo, removed)
    }

    fn from_libnuma() -> Option<Self> {
        let lib = libnuma::get()?;
        let ids: Vec<u32> = (0..=u32::try_from(lib.max_node()).ok()?)
            .filter(|&n| {
                std::path::Path::new(&format!("/sys/devices/system/node/node{n}")).exists()
                    || n == 0
            })
            .collect();
        let mut nodes = Vec::new();
        for &id in &ids {
            let cpus = lib.node_cpus(id)?;
            nodes.push(NumaNode {
                id,
                cpus,
                memory_bytes: lib.node_size(id),
                distances: ids
                    .iter()
                    .map(|&o| lib.distance(id, o).unwrap_or(0))
                    .collect(),
            });
        }
        (!nodes.is_empty()).then_some(Self {
            nodes,
            source: TopologySource::LibNuma,
        })
    }

    fn from_sysfs() -> Option<Self> {
        let online = numa::parse_list(&read("/sys/devices/system/node/online")?).ok()?;
        let mut nodes = Vec::new();
        for &id in &online {
            let base = format!("/sys/devices/system/node/node{id}");
            let cpus =
                numa::parse_list(&read(&format!("{base}/cpulist")).unwrap_or_default()).ok()?;
            let memory_bytes = read(&format!("{base}/meminfo")).and_then(|m| {
                m.lines()
                    .find(|l| l.contains("MemTotal:"))
                    .and_then(|l| l.split_whitespace().rev().nth(1)?.parse::<u64>().ok())
                    .map(|kib| kib * 1024)
            });
            let distances = read(&format!("{base}/distance"))
                .map(|d| {
                    d.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            nodes.push(NumaNode {
                id,
                cpus,
                memory_bytes,
                distances,
            });
        }
        (!nodes.is_empty()).then_some(Self {
            nodes,
            source: TopologySource::Sysfs,
        })
    }

    fn single_node_of_this_machine() -> Self {
        let cpus = read("/sys/devices/system/cpu/online")
            .and_then(|s| numa::parse_list(&s).ok())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                let n = std::thread::available_parallelism().map_or(1, usize::from);
                (0..u32::try_from(n).unwrap_or(1)).collect()
            });
        Self {
            nodes: vec![NumaNode {
                id: 0,
                cpus,
                memory_bytes: None,
                distances: vec![10],
            }],
            source: TopologySource::SingleNode,
        }
    }

    /// Parse the topology file format: one line per node,
    ///
    /// ```text
    /// # comments and blank lines are ignored
    /// node 0 cpus=0-15 mem_gib=64 distances=10,21
    /// node 1 cpus=16-31 mem_gib=64 distances=21,10
    /// ```
    ///
    /// `cpus` is required (may be empty: a memory-only node); `mem_gib` and
    /// `distances` (one per node, in file order) are optional.
    ///
    /// # Errors
    /// A message naming the line and what is wrong.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let mut nodes: Vec<NumaNode> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |msg: String| format!("{origin}:{}: {msg}", i + 1);
            let mut words = line.split_whitespace();
            if words.next() != Some("node") {
                return Err(at(format!(
                    "expected 'node <id> cpus=<list> ...', found '{line}'"
                )));
            }
            let id: u32 = words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| at("missing or bad node id".into()))?;
            if nodes.iter().any(|n| n.id == id) {
                return Err(at(format!("node {id} is listed twice")));
            }
            let mut node = NumaNode {
                id,
                cpus: Vec::new(),
                memory_bytes: None,
                distances: Vec::new(),
            };
            let mut have_cpus = false;
            for w in words {
                let (k, v) = w
                    .split_once('=')
                    .ok_or_else(|| at(format!("expected key=value, found '{w}'")))?;
                match k {
                    "cpus" => {
                        node.cpus = numa::parse_list(v).map_err(at)?;
                        have_cpus = true;
                    }
                    "mem_gib" => {
                        let g: f64 = v.parse().map_err(|_| at(format!("bad mem_gib '{v}'")))?;
                        node.memory_bytes = Some((g * f64::from(1u32 << 30)) as u64);
                    }
                    "distances" => {
                        node.distances = v
                            .split(',')
                            .map(|d| d.parse().map_err(|_| at(format!("bad distance '{d}'"))))
                            .collect::<Result<_, _>>()?;
                    }
                    other => {
                        return Err(at(format!(
                            "unknown key '{other}' (cpus, mem_gib, distances)"
                        )))
                    }
                }
            }
            if !have_cpus {
                return Err(at(format!("node {id} has no cpus= entry")));
            }
            nodes.push(node);
        }
        if nodes.iter().all(|n| n.cpus.is_empty()) {
            return Err(format!("{origin}: no node has CPUs"));
        }
        let count = nodes.len();
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.distances.is_empty() {
                n.distances = (0..count).map(|j| if i == j { 10 } else { 20 }).collect();
            } else if n.distances.len() != count {
                return Err(format!(
                    "{origin}: node {} lists {} distances for {count} nodes",
                    n.id,
                    n.distances.len()
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for c in nodes.iter().flat_map(|n| &n.cpus) {
            if !seen.insert(*c) {
                return Err(format!("{origin}: CPU {c} belongs to two nodes"));
            }
        }
        Ok(Self {
            nodes,
            source: TopologySource::File(origin.to_string()),
        })
    }

    /// Read a topology file.
    ///
    /// # Errors
    /// I/O or parse errors, naming the file.
    pub fn from_file(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read topology file {path}: {e}"))?;
        Self::parse(&text, path)
    }

    /// Nodes that have at least one CPU.
    pub fn compute_nodes(&self) -> impl Iterator<Item = &NumaNode> {
        self.nodes.iter().filter(|n| !n.cpus.is_empty())
    }

    /// Keep only the CPUs in `allowed` (a node left without any keeps its
    /// memory and gets no ranks). Returns the CPUs removed; when `allowed`
    /// shares no CPU with the topology nothing is removed.
    pub fn restrict_to(&mut self, allowed: &[u32]) -> Vec<u32> {
        let keep = |c: &u32| allowed.binary_search(c).is_ok();
        if !self.nodes.iter().flat_map(|n| &n.cpus).any(keep) {
            return Vec::new();
        }
        let mut removed = Vec::new();
        for n in &mut self.nodes {
            removed.extend(n.cpus.iter().copied().filter(|c| !keep(c)));
            n.cpus.retain(keep);
        }
        removed.sort_unstable();
        removed
    }

    /// Total number of CPUs.
    #[must_use]
    pub fn cpu_count(&self) -> usize {
        self.nodes.iter().map(|n| n.cpus.len()).sum()
    }

    /// Human-readable description (for `cobre-shm topology`).
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = String::new();
        let src = match &self.source {
            TopologySource::LibNuma => "libnuma".to_string(),
            TopologySource::Sysfs => "sysfs (libnuma not available)".to_string(),
            TopologySource::SingleNode => {
                "no NUMA information: one node with every online CPU".to_string()
            }
            TopologySource::File(f) => format!("file {f}"),
        };
        let _ = writeln!(
            s,
            "NUMA topology ({src}): {} node(s), {} CPU(s)",
            self.nodes.len(),
            self.cpu_count()
        );
        for n in &self.nodes {
            let mem = n.memory_bytes.map_or("memory unknown".to_string(), |b| {
                format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30))
            });
            let _ = writeln!(
                s,
                "  node {}: {} CPU(s) [{}], {mem}",
                n.id,
                n.cpus.len(),
                format_list(&n.cpus)
            );
        }
        if self.nodes.len() > 1 {
            let _ = write!(s, "  distances:\n        ");
            for n in &self.nodes {
                let _ = write!(s, "{:>5}", n.id);
            }
            let _ = writeln!(s);
            for n in &self.nodes {
                let _ = write!(s, "  {:>5} ", n.id);
                for d in &n.distances {
                    let _ = write!(s, "{d:>5}");
                }
                let _ = writeln!(s);
            }
        }
        s
    }
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

/// Pin the calling process (all its future threads) to `cpus`.
///
/// # Errors
/// A message with the errno of `sched_setaffinity`.
pub fn bind_cpus(cpus: &[u32]) -> Result<(), String> {
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        set.set(c as usize)
            .map_err(|e| format!("CPU {c} cannot be pinned: {e}"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| format!("sched_setaffinity to CPUs {}: {e}", format_list(cpus)))
}

/// How a memory binding was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemBinding {
    /// libnuma `numa_set_preferred`.
    LibNumaPreferred,
    /// libnuma `numa_set_membind`.
    LibNumaBind,
    /// The `set_mempolicy(MPOL_PREFERRED)` syscall (libnuma absent).
    Syscall,
}

/// Make `node` the calling thread's memory node (inherited by threads it
/// creates later): strictly (`membind`) or as a preference that falls back
/// to other nodes when `node` is full.
///
/// # Errors
/// A message with the errno when libnuma is absent and the syscall fails.
pub fn bind_memory(node: u32, strict: bool) -> Result<MemBinding, String> {
    if let Some(lib) = libnuma::get() {
        if strict {
            lib.set_membind(node);
            return Ok(MemBinding::LibNumaBind);
        }
        lib.set_preferred(node);
        return Ok(MemBinding::LibNumaPreferred);
    }
    numa::set_preferred_node(node)
        .map(|()| MemBinding::Syscall)
        .map_err(|e| format!("set_mempolicy(MPOL_PREFERRED, node {node}): {e}"))
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
    fn restricting_keeps_the_allowed_cpus_and_every_node() {
        let two = "node 0 cpus=0-3\nnode 1 cpus=4-7\n";
        let mut t = Topology::parse(two, "t").expect("valid");
        assert_eq!(t.restrict_to(&[1, 2, 5]), vec![0, 3, 4, 6, 7]);
        assert_eq!(
            (t.nodes[0].cpus.clone(), t.nodes[1].cpus.clone()),
            (vec![1, 2], vec![5])
        );
        // A node left without CPUs keeps its memory and gets no ranks.
        let mut t = Topology::parse(two, "t").expect("valid");
        assert_eq!(t.restrict_to(&[4, 5, 6, 7, 9]), vec![0, 1, 2, 3]);
        assert_eq!(
            (t.nodes.len(), t.compute_nodes().count(), t.cpu_count()),
            (2, 1, 4)
        );
        // A mask that shares nothing with the topology changes nothing.
        let mut t = Topology::parse(two, "t").expect("valid");
        assert!(t.restrict_to(&[100]).is_empty());
        assert_eq!(t.cpu_count(), 8);
        // This process may run somewhere.
        let allowed = allowed_cpus().expect("affinity mask");
        assert!(allowed.windows(2).all(|w| w[0] < w[1]) && allowed.len() <= online_cpus());
    }

    #[test]
    fn this_machine_has_a_topology() {
        let t = Topology::discover();
        assert!(t.compute_nodes().count() >= 1);
        assert!(t.cpu_count() >= 1);
        assert!(t.render().contains("node"));
    }

    #[test]
    fn file_format_parses_and_fills_distances() {
        let t = Topology::parse(
            "# two sockets\nnode 0 cpus=0-3 mem_gib=8 distances=10,21\nnode 1 cpus=4-7 distances=21,10\n",
            "t",
        )
        .expect("valid");
        assert_eq!(t.nodes[1].cpus, vec![4, 5, 6, 7]);
        assert_eq!(t.nodes[0].memory_bytes, Some(8 << 30));
        let t = Topology::parse("node 0 cpus=0-1\nnode 1 cpus=2-3\n", "t").expect("valid");
        assert_eq!(t.nodes[0].distances.len(), 2);
    }

    #[test]
    fn file_format_errors_name_the_line() {
        for (text, needle) in [
            ("nod 0 cpus=0", "t:1"),
            ("node x cpus=0", "node id"),
            ("node 0", "no cpus"),
            ("node 0 cpus=0\nnode 0 cpus=1", "twice"),
            ("node 0 cpus=0-1\nnode 1 cpus=1", "two nodes"),
            ("node 0 cpus=0 distances=10,20", "distances"),
            ("node 0 cpus=0 color=red", "unknown key"),
        ] {
            let e = Topology::parse(text, "t").expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn lists_render_compactly() {
        assert_eq!(format_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_list(&[]), "");
    }
}
