//! The machine's NUMA topology (libnuma, else sysfs, else one node with
//! every online CPU) and a text format to describe other machines.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use super::cpus::{allowed_cpus, format_list, read};
use crate::os::{libnuma, numa};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::online_cpus;

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
}
