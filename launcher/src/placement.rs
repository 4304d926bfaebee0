//! The placement plan: a pure function of (topology, ranks, options).
//!
//! Ranks are spread evenly over the nodes that have CPUs, in block order
//! (ranks `0..k` on the first node, and so on); a node hosting several ranks
//! splits its CPUs into disjoint contiguous sets. With more ranks than CPUs
//! on a node, ranks get one CPU each, round-robin, and the plan says it is
//! oversubscribed.

use std::fmt::Write as _;

use cobre_shm::machine::{format_list, Topology};

/// Whether ranks are pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Bind {
    /// Pin each rank's CPUs and prefer its node's memory.
    Numa,
    /// Leave placement to the kernel.
    None,
}

/// Where one rank runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankPlacement {
    /// Rank index.
    pub rank: usize,
    /// NUMA node.
    pub node: u32,
    /// CPUs the rank is pinned to (all CPUs when not binding).
    pub cpus: Vec<u32>,
    /// Worker threads of the rank.
    pub threads: usize,
}

/// The whole plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// One entry per rank, in rank order.
    pub ranks: Vec<RankPlacement>,
    /// Binding mode.
    pub bind: Bind,
    /// Some CPU hosts more than one rank.
    pub oversubscribed: bool,
}

/// Compute the plan for `ranks` ranks (default: one per node with CPUs).
///
/// # Errors
/// A message when the topology has no CPUs or `ranks`/`threads` is 0.
pub fn plan(
    topo: &Topology,
    ranks: Option<usize>,
    bind: Bind,
    threads: Option<usize>,
) -> Result<Plan, String> {
    let nodes: Vec<_> = topo.compute_nodes().collect();
    if nodes.is_empty() {
        return Err("the topology has no node with CPUs".to_string());
    }
    let n = ranks.unwrap_or(nodes.len());
    if n == 0 {
        return Err("-p/--ranks must be at least 1".to_string());
    }
    if threads == Some(0) {
        return Err("--threads must be at least 1".to_string());
    }
    let all_cpus: Vec<u32> = nodes
        .iter()
        .flat_map(|nd| nd.cpus.iter().copied())
        .collect();
    let m = nodes.len();
    let mut out = Vec::with_capacity(n);
    let mut oversubscribed = false;
    for (i, node) in nodes.iter().enumerate() {
        let k = n / m + usize::from(i < n % m);
        let c = node.cpus.len();
        oversubscribed |= k > c;
        for j in 0..k {
            let cpus = if k <= c {
                node.cpus[j * c / k..(j + 1) * c / k].to_vec()
            } else {
                vec![node.cpus[j % c]]
            };
            let (cpus, default_threads) = match bind {
                Bind::Numa => {
                    let t = cpus.len();
                    (cpus, t)
                }
                Bind::None => (all_cpus.clone(), (all_cpus.len() / n).max(1)),
            };
            out.push(RankPlacement {
                rank: out.len(),
                node: node.id,
                cpus,
                threads: threads.unwrap_or(default_threads),
            });
        }
    }
    Ok(Plan {
        ranks: out,
        bind,
        oversubscribed: oversubscribed || n > all_cpus.len(),
    })
}

impl Plan {
    /// The plan as a table (for `--dry-run`).
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = String::new();
        let nodes: std::collections::BTreeSet<u32> = self.ranks.iter().map(|r| r.node).collect();
        let _ = writeln!(
            s,
            "{} rank(s) on {} NUMA node(s), bind={}{}",
            self.ranks.len(),
            nodes.len(),
            match self.bind {
                Bind::Numa => "numa",
                Bind::None => "none",
            },
            if self.oversubscribed {
                ", oversubscribed (ranks share CPUs)"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "{:>6} {:>6} {:>8}  cpus", "rank", "node", "threads");
        for r in &self.ranks {
            let _ = writeln!(
                s,
                "{:>6} {:>6} {:>8}  {}",
                r.rank,
                r.node,
                r.threads,
                format_list(&r.cpus)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(nodes: &[(u32, u32)]) -> Topology {
        // (first cpu, count) per node
        let text: String = nodes
            .iter()
            .enumerate()
            .map(|(i, &(first, count))| {
                if count == 0 {
                    format!("node {i} cpus=\n")
                } else {
                    format!("node {i} cpus={first}-{}\n", first + count - 1)
                }
            })
            .collect();
        Topology::parse(&text, "fake").expect("fake topology")
    }

    fn eight_by_sixteen() -> Topology {
        fake(&(0..8).map(|i| (i * 16, 16)).collect::<Vec<_>>())
    }

    fn assert_disjoint(p: &Plan) {
        let mut seen = std::collections::HashSet::new();
        for r in &p.ranks {
            for c in &r.cpus {
                assert!(seen.insert(*c), "CPU {c} given twice");
            }
        }
    }

    #[test]
    fn one_rank_per_node_by_default() {
        let p = plan(&eight_by_sixteen(), None, Bind::Numa, None).expect("plan");
        assert_eq!(p.ranks.len(), 8);
        for (i, r) in p.ranks.iter().enumerate() {
            assert_eq!(r.node, i as u32);
            assert_eq!(
                r.cpus,
                (i as u32 * 16..i as u32 * 16 + 16).collect::<Vec<_>>()
            );
            assert_eq!(r.threads, 16);
        }
        assert!(!p.oversubscribed);
    }

    #[test]
    fn sixteen_ranks_split_each_node_in_halves() {
        let p = plan(&eight_by_sixteen(), Some(16), Bind::Numa, None).expect("plan");
        assert_eq!(p.ranks.len(), 16);
        assert_eq!(p.ranks[0].node, 0);
        assert_eq!(p.ranks[1].node, 0);
        assert_eq!(p.ranks[2].node, 1);
        assert_eq!(p.ranks[0].cpus, (0..8).collect::<Vec<_>>());
        assert_eq!(p.ranks[1].cpus, (8..16).collect::<Vec<_>>());
        assert_eq!(p.ranks[15].cpus, (120..128).collect::<Vec<_>>());
        assert!(p.ranks.iter().all(|r| r.threads == 8));
        assert_disjoint(&p);
    }

    #[test]
    fn three_ranks_take_the_first_three_nodes() {
        let p = plan(&eight_by_sixteen(), Some(3), Bind::Numa, None).expect("plan");
        assert_eq!(
            p.ranks.iter().map(|r| r.node).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(p.ranks.iter().all(|r| r.cpus.len() == 16));
        assert_disjoint(&p);
    }

    #[test]
    fn uneven_ranks_go_to_the_first_nodes_first() {
        let p = plan(&eight_by_sixteen(), Some(10), Bind::Numa, None).expect("plan");
        let per_node: Vec<usize> = (0..8)
            .map(|n| p.ranks.iter().filter(|r| r.node == n).count())
            .collect();
        assert_eq!(per_node, vec![2, 2, 1, 1, 1, 1, 1, 1]);
        // Block order: ranks are numbered node by node.
        assert!(p.ranks.windows(2).all(|w| w[0].node <= w[1].node));
        assert_disjoint(&p);
    }

    #[test]
    fn unequal_nodes_keep_rank_counts_even() {
        let t = fake(&[(0, 12), (12, 4)]);
        let p = plan(&t, Some(4), Bind::Numa, None).expect("plan");
        assert_eq!(p.ranks[0].cpus, (0..6).collect::<Vec<_>>());
        assert_eq!(p.ranks[1].cpus, (6..12).collect::<Vec<_>>());
        assert_eq!(p.ranks[2].cpus, vec![12, 13]);
        assert_eq!(p.ranks[3].cpus, vec![14, 15]);
        assert_eq!(
            p.ranks.iter().map(|r| r.threads).collect::<Vec<_>>(),
            vec![6, 6, 2, 2]
        );
        assert_disjoint(&p);
        let p = plan(&t, None, Bind::Numa, None).expect("plan");
        assert_eq!(
            p.ranks.iter().map(|r| r.cpus.len()).collect::<Vec<_>>(),
            vec![12, 4]
        );
    }

    #[test]
    fn more_ranks_than_cpus_share_round_robin() {
        let t = fake(&[(0, 2)]);
        let p = plan(&t, Some(5), Bind::Numa, None).expect("plan");
        assert!(p.oversubscribed);
        assert_eq!(
            p.ranks.iter().map(|r| r.cpus.clone()).collect::<Vec<_>>(),
            vec![vec![0], vec![1], vec![0], vec![1], vec![0]]
        );
        assert!(p.ranks.iter().all(|r| r.threads == 1));
    }

    #[test]
    fn memory_only_nodes_get_no_ranks() {
        let t = fake(&[(0, 4), (0, 0)]);
        let p = plan(&t, Some(2), Bind::Numa, None).expect("plan");
        assert!(p.ranks.iter().all(|r| r.node == 0));
    }

    #[test]
    fn bind_none_and_thread_override() {
        let p = plan(&eight_by_sixteen(), Some(4), Bind::None, None).expect("plan");
        assert!(p
            .ranks
            .iter()
            .all(|r| r.cpus.len() == 128 && r.threads == 32));
        let p = plan(&eight_by_sixteen(), Some(4), Bind::Numa, Some(3)).expect("plan");
        assert!(p.ranks.iter().all(|r| r.threads == 3));
    }

    #[test]
    fn zero_is_refused() {
        assert!(plan(&eight_by_sixteen(), Some(0), Bind::Numa, None).is_err());
        assert!(plan(&eight_by_sixteen(), Some(2), Bind::Numa, Some(0)).is_err());
    }

    #[test]
    fn dry_run_table_lists_every_rank() {
        let p = plan(&eight_by_sixteen(), Some(16), Bind::Numa, None).expect("plan");
        let s = p.render();
        assert!(
            s.starts_with("16 rank(s) on 8 NUMA node(s), bind=numa"),
            "{s}"
        );
        assert!(s.contains("    15      7        8  120-127"), "{s}");
    }
}
