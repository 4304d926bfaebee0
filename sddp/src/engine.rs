//! The SDDP training loop, generic over the communicator.
//!
//! Work is cut into *groups* of `warm_group` consecutive trajectories. A
//! group is the unit given to a rank (contiguous blocks) and to a worker
//! thread; inside a group the LPs warm-start from one solve to the next, and
//! every group starts cold. So the sequence of solves each LP sees depends
//! only on the case, the seed and the group size — never on the number of
//! ranks or threads — and every bound, cut and policy is bit-identical for
//! any `ranks × threads`.
//!
//! Shared data: the opening tree (stages × openings × hydros) and the cut
//! pool (per stage, one slot per (iteration, trajectory)) are shared regions;
//! ranks fill their own parts and publish them with one fence. With
//! `replicate`, or a backend whose regions are private copies, each rank
//! keeps a heap copy: it generates the whole tree itself and the new cuts
//! travel by `allgatherv`.
#![forbid(unsafe_code)]

use std::ops::Range;
use std::time::{Duration, Instant};

use cobre_comm::{per_rank_counts, prefix_displs, CommError, ReduceOp};
use rayon::prelude::*;

use crate::case::Case;
use crate::model::{SolveError, StageLp};
use crate::rng;
use crate::solver::LpError;
use cobre_shm::{BlockPublish, BlockRegion, Comm};

/// What the engine needs from a communicator beyond the cobre-comm traits:
/// regions filled by blocks ([`BlockPublish`]) and a name for reports.
pub trait EngineComm: BlockPublish {
    /// Name of the backend, for the summary.
    fn backend_name(&self) -> &'static str;
}

impl EngineComm for Comm {
    fn backend_name(&self) -> &'static str {
        Comm::backend_name(self)
    }
}

/// Everything that can stop training.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A collective failed (a rank died, the job was aborted, ...).
    #[error("communication failed: {0}")]
    Comm(#[from] CommError),
    /// A stage LP could not be solved.
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// HiGHS rejected a model change.
    #[error(transparent)]
    Lp(#[from] LpError),
    /// The worker pool could not start.
    #[error("cannot start {0} worker threads")]
    Pool(usize),
    /// Options are inconsistent.
    #[error("invalid training options: {0}")]
    Options(String),
}

/// Training parameters (case defaults overridden by the command line).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// Iteration limit (also the cut pool's capacity).
    pub iterations: usize,
    /// Forward trajectories per iteration.
    pub forward_passes: usize,
    /// Sampling seed.
    pub seed: u64,
    /// Wall-clock limit.
    pub time_limit: Option<Duration>,
    /// Stop when the lower bound improved by less than `tolerance`
    /// (relative) over `iterations` iterations.
    pub stall: Option<(f64, usize)>,
    /// Worker threads of this rank.
    pub threads: usize,
    /// Keep private heap copies of the tree and the pool.
    pub replicate: bool,
    /// Trajectories per warm-start group (fixed across ranks × threads).
    pub warm_group: usize,
}

impl TrainOptions {
    /// Default iterations when neither the case nor the command line says.
    pub const DEFAULT_ITERATIONS: usize = 50;
    /// Default forward passes.
    pub const DEFAULT_FORWARD_PASSES: usize = 10;
    /// Default warm-start group.
    pub const DEFAULT_WARM_GROUP: usize = 2;

    /// Options from the case's `training` section, with defaults.
    #[must_use]
    pub fn from_case(case: &Case, threads: usize) -> Self {
        let t = &case.training;
        Self {
            iterations: t.iterations.unwrap_or(Self::DEFAULT_ITERATIONS),
            forward_passes: t.forward_passes.unwrap_or(Self::DEFAULT_FORWARD_PASSES),
            seed: t.seed.unwrap_or(0),
            time_limit: t.time_limit_secs.map(Duration::from_secs_f64),
            stall: match (t.stall_tolerance, t.stall_iterations) {
                (Some(tol), Some(k)) => Some((tol, k.max(1))),
                (Some(tol), None) => Some((tol, 5)),
                _ => None,
            },
            threads: threads.max(1),
            replicate: false,
            warm_group: Self::DEFAULT_WARM_GROUP,
        }
    }
}

/// One line of `convergence.csv`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IterationRow {
    /// 1-based iteration.
    pub iteration: usize,
    /// Expected stage-1 value.
    pub lower_bound: f64,
    /// Mean cost of the forward trajectories.
    pub upper_bound_mean: f64,
    /// Half width of the 95 % confidence interval of that mean.
    pub upper_bound_ci95: f64,
    /// `(ub − lb) / |ub|`.
    pub gap: f64,
    /// Cuts in the pool.
    pub cuts: usize,
    /// Seconds since training started.
    pub elapsed_secs: f64,
}

/// Why training stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The iteration limit was reached.
    IterationLimit,
    /// The time limit was reached.
    TimeLimit,
    /// The lower bound stalled.
    Stall,
}

impl StopReason {
    fn code(self) -> u64 {
        match self {
            Self::IterationLimit => 1,
            Self::TimeLimit => 2,
            Self::Stall => 3,
        }
    }

    fn from_code(c: u64) -> Option<Self> {
        match c {
            1 => Some(Self::IterationLimit),
            2 => Some(Self::TimeLimit),
            3 => Some(Self::Stall),
            _ => None,
        }
    }

    /// Snake-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IterationLimit => "iteration_limit",
            Self::TimeLimit => "time_limit",
            Self::Stall => "lower_bound_stall",
        }
    }
}

/// Wall time of each phase, summed over iterations (this rank).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    /// Opening tree generation and publication.
    pub setup: Duration,
    /// Forward passes.
    pub forward: Duration,
    /// Backward solves.
    pub backward: Duration,
    /// Publishing new cuts and adding them to the LPs.
    pub cut_exchange: Duration,
    /// Lower bound solves.
    pub lower_bound: Duration,
    /// Gathering trajectory costs and the stop decision.
    pub bounds_sync: Duration,
}

/// Memory of one rank at the end of training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankMemory {
    /// Rank.
    pub rank: usize,
    /// Peak resident set (VmHWM), bytes.
    pub peak_rss: u64,
    /// Proportional set size, bytes (shared pages divided among mappers).
    pub pss: u64,
}

/// A shared data structure and where it lives.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionReport {
    /// `opening_tree` or `cut_pool`.
    pub name: &'static str,
    /// Size in bytes.
    pub bytes: usize,
    /// One copy per node (true) or one per rank (false).
    pub shared: bool,
    /// `posix_shm`, `process_heap`, `cobre_comm_heap_fallback` or `private_copy`.
    pub storage: &'static str,
    /// Pages per NUMA node as seen by rank 0 (`node -1`: not backed yet).
    pub pages_by_node: Vec<(i32, usize)>,
}

/// One cut of the policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Cut {
    /// `α`.
    pub intercept: f64,
    /// `β`, one per hydro.
    pub coefficients: Vec<f64>,
    /// Iteration that produced it (1-based).
    pub iteration: usize,
    /// Global trajectory index whose trial point produced it.
    pub trajectory: usize,
}

/// Everything training produced.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// One row per iteration.
    pub rows: Vec<IterationRow>,
    /// Why it stopped.
    pub stop: StopReason,
    /// This rank's phase times.
    pub phases: PhaseTimes,
    /// Ranks.
    pub ranks: usize,
    /// Threads per rank.
    pub threads: usize,
    /// Backend name.
    pub backend: &'static str,
    /// Memory of every rank.
    pub memory: Vec<RankMemory>,
    /// Shared data structures.
    pub regions: Vec<RegionReport>,
    /// Cuts per stage (cuts of stage `t` bound the future cost after stage `t`);
    /// the last stage has none.
    pub policy: Vec<Vec<Cut>>,
    /// LP solves over all ranks.
    pub lp_solves: u64,
    /// Options used.
    pub options: TrainOptions,
}

/// Where the opening tree or the cut pool lives on this rank: append-only
/// lanes that ranks fill by blocks.
enum Lanes<C: EngineComm> {
    /// A region of the communicator (one copy per node under shm).
    Region(BlockRegion<f64, C>),
    /// A private copy (`--replicate`): windows travel by `allgatherv`.
    Private {
        data: Vec<f64>,
        lane_len: usize,
        published: Vec<usize>,
    },
}

impl<C: EngineComm> Lanes<C> {
    fn new(comm: &C, lanes: usize, lane_len: usize, replicate: bool) -> Result<Self, EngineError> {
        if !replicate {
            return Ok(Self::Region(BlockRegion::new(comm, lanes, lane_len)?));
        }
        let len = lanes
            .checked_mul(lane_len)
            .ok_or_else(|| EngineError::Options(format!("{lanes} x {lane_len} overflows")))?;
        // Touch every page, as the shared region's creation does, so a
        // private copy costs what it would cost once filled.
        let mut data = vec![0.0; len];
        data.fill(0.0);
        std::hint::black_box(&mut data);
        Ok(Self::Private {
            data,
            lane_len,
            published: vec![0; lanes],
        })
    }

    fn append(
        &mut self,
        comm: &C,
        lane: usize,
        counts: &[usize],
        mine: &[f64],
    ) -> Result<Range<usize>, EngineError> {
        match self {
            Self::Region(r) => Ok(r.append(comm, lane, counts, mine)?),
            Self::Private {
                data,
                lane_len,
                published,
            } => {
                let total: usize = counts.iter().sum();
                let from = published[lane];
                let start = lane * *lane_len + from;
                let window = &mut data[start..start + total];
                let displs = prefix_displs(counts);
                let me = comm.rank();
                window[displs[me]..displs[me] + counts[me]].copy_from_slice(mine);
                if comm.size() > 1 {
                    comm.allgatherv(mine, window, counts, &displs)?;
                }
                published[lane] = from + total;
                Ok(from..from + total)
            }
        }
    }

    fn lane(&self, lane: usize) -> &[f64] {
        match self {
            Self::Region(r) => r.lane(lane),
            Self::Private {
                data,
                lane_len,
                published,
            } => &data[lane * lane_len..lane * lane_len + published[lane]],
        }
    }

    fn is_shared(&self, comm: &C) -> bool {
        matches!(self, Self::Region(_)) && comm.regions_shared()
    }

    fn pages(&self) -> Vec<i32> {
        match self {
            Self::Region(r) => r.page_nodes().unwrap_or_default(),
            Self::Private { .. } => Vec::new(),
        }
    }
}

/// How the trajectories are split: groups, ranks, workers.
struct Split {
    /// Trajectory range of every group.
    groups: Vec<Range<usize>>,
    /// Trajectories of each rank.
    rank_counts: Vec<usize>,
    /// This rank's trajectories.
    mine: Range<usize>,
    /// Groups (indices into `groups`) of each worker of this rank.
    worker_groups: Vec<Range<usize>>,
}

impl Split {
    fn new(m: usize, g: usize, ranks: usize, rank: usize, workers: usize) -> Self {
        let groups: Vec<Range<usize>> = (0..m.div_ceil(g))
            .map(|i| i * g..((i + 1) * g).min(m))
            .collect();
        let per_rank = per_rank_counts(groups.len(), ranks);
        let first = |r: usize| per_rank[..r].iter().sum::<usize>();
        let rank_range = |r: usize| {
            let (a, b) = (first(r), first(r) + per_rank[r]);
            if a == b {
                groups.get(a).map_or(m..m, |gr| gr.start..gr.start)
            } else {
                groups[a].start..groups[b - 1].end
            }
        };
        let rank_counts = (0..ranks).map(|r| rank_range(r).len()).collect();
        let (ga, nb) = (first(rank), per_rank[rank]);
        let per_worker = per_rank_counts(nb, workers);
        let mut worker_groups = Vec::with_capacity(workers);
        let mut at = ga;
        for c in per_worker {
            worker_groups.push(at..at + c);
            at += c;
        }
        Self {
            mine: rank_range(rank),
            groups,
            rank_counts,
            worker_groups,
        }
    }

    /// Trajectory range of worker `w`.
    fn worker_range(&self, w: usize) -> Range<usize> {
        let gs = &self.worker_groups[w];
        if gs.is_empty() {
            return self.mine.end..self.mine.end;
        }
        self.groups[gs.start].start..self.groups[gs.end - 1].end
    }
}

fn read_kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Split `slice` into consecutive pieces of the given lengths.
fn split_lengths<T>(mut slice: &mut [T], lens: impl IntoIterator<Item = usize>) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for l in lens {
        let (a, b) = slice.split_at_mut(l);
        out.push(a);
        slice = b;
    }
    out
}

/// Inflows of opening `k` of stage `t` in the opening tree.
fn opening<'a>(tree: &'a [f64], offsets: &[usize], hydros: usize, t: usize, k: usize) -> &'a [f64] {
    let at = offsets[t] + k * hydros;
    &tree[at..at + hydros]
}

struct Worker {
    models: Vec<StageLp>,
}

/// Train a policy for `case` on `comm`; `on_iteration` is called on rank 0
/// after every iteration.
///
/// # Errors
/// [`EngineError`]; every rank of a failed job returns an error (the others
/// see the failure as a failed collective).
#[allow(clippy::too_many_lines)]
pub fn train<C: EngineComm>(
    comm: &C,
    case: &Case,
    opts: &TrainOptions,
    mut on_iteration: impl FnMut(&IterationRow),
) -> Result<TrainReport, EngineError> {
    let start = Instant::now();
    let (rank, ranks) = (comm.rank(), comm.size());
    if opts.forward_passes == 0 || opts.iterations == 0 || opts.warm_group == 0 || opts.threads == 0
    {
        return Err(EngineError::Options(
            "forward passes, iterations, warm group and threads must be at least 1".into(),
        ));
    }
    let (nt, nh) = (case.stages, case.hydros.len());
    let m = opts.forward_passes;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .thread_name(move |i| format!("rank{rank}-lp{i}"))
        .build()
        .map_err(|_| EngineError::Pool(opts.threads))?;
    let split = Split::new(m, opts.warm_group, ranks, rank, opts.threads);
    let mut phases = PhaseTimes::default();

    // Opening tree: each rank fills a block of stages, one publication.
    let (tree_off, tree_len) = case.tree_offsets();
    let mut tree_store = Lanes::new(comm, 1, tree_len, opts.replicate)?;
    let stage_counts = per_rank_counts(nt, ranks);
    let stage_of = |r: usize| stage_counts[..r].iter().sum::<usize>();
    let at = |t: usize| tree_off.get(t).copied().unwrap_or(tree_len);
    let tree_counts: Vec<usize> = (0..ranks)
        .map(|r| at(stage_of(r) + stage_counts[r]) - at(stage_of(r)))
        .collect();
    {
        let first = stage_of(rank);
        let mut mine = vec![0.0; tree_counts[rank]];
        for t in first..first + stage_counts[rank] {
            let (lo, hi) = (at(t) - at(first), at(t + 1) - at(first));
            case.fill_stage_inflows(t, &mut mine[lo..hi]);
        }
        tree_store.append(comm, 0, &tree_counts, &mine)?;
    }

    // Cut pool: stage c (cuts of θ_c) × (iterations × M) slots × record.
    let stride = 3 + nh;
    let capacity = opts.iterations * m;
    let cut_stages = nt - 1;
    let mut pool_store = Lanes::new(comm, cut_stages, capacity * stride, opts.replicate)?;
    phases.setup = start.elapsed();

    let workers: Vec<Worker> = pool.install(|| {
        (0..opts.threads)
            .into_par_iter()
            .map(|_| -> Result<Worker, LpError> {
                Ok(Worker {
                    models: (0..nt)
                        .map(|t| StageLp::build(case, t))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut workers = workers;
    let initial: Vec<f64> = case.hydros.iter().map(|h| h.initial_volume).collect();
    let probs: Vec<Vec<f64>> = (0..nt)
        .map(|t| {
            (0..case.openings(t))
                .map(|k| case.probability(t, k))
                .collect()
        })
        .collect();

    let my_n = split.mine.len();
    let mut costs = vec![0.0; my_n];
    let mut states = vec![0.0; my_n * cut_stages.max(1) * nh];
    let mut all_costs = vec![0.0; m];
    let mut rows: Vec<IterationRow> = Vec::new();
    let mut lb_history: Vec<f64> = Vec::new();
    let stop;
    let mut iteration = 0;
    loop {
        // ---- forward pass
        let t0 = Instant::now();
        {
            let tree = tree_store.lane(0);
            let lens: Vec<usize> = (0..opts.threads)
                .map(|w| split.worker_range(w).len())
                .collect();
            let cost_parts = split_lengths(&mut costs, lens.iter().copied());
            let state_parts =
                split_lengths(&mut states, lens.iter().map(|l| l * cut_stages.max(1) * nh));
            pool.install(|| {
                workers
                    .par_iter_mut()
                    .zip(cost_parts)
                    .zip(state_parts)
                    .enumerate()
                    .try_for_each(
                        |(w, ((worker, cost_out), state_out))| -> Result<(), EngineError> {
                            let base = split.worker_range(w).start;
                            let mut v = vec![0.0; nh];
                            for g in split.worker_groups[w].clone() {
                                for model in &mut worker.models {
                                    model.cold_start()?;
                                }
                                for j in split.groups[g].clone() {
                                    let local = j - base;
                                    v.copy_from_slice(&initial);
                                    let mut total = 0.0;
                                    for (t, stage_probs) in probs.iter().enumerate() {
                                        let u = rng::uniform([
                                            opts.seed,
                                            iteration as u64,
                                            j as u64,
                                            t as u64,
                                        ]);
                                        let k = rng::pick(stage_probs.iter().copied(), u);
                                        let a = opening(tree, &tree_off, nh, t, k);
                                        let sol = worker.models[t].solve(&v, a)?;
                                        total += sol.stage_cost;
                                        v.copy_from_slice(worker.models[t].end_volumes());
                                        if t < cut_stages {
                                            let at = (local * cut_stages + t) * nh;
                                            state_out[at..at + nh].copy_from_slice(&v);
                                        }
                                    }
                                    cost_out[local] = total;
                                }
                            }
                            Ok(())
                        },
                    )
            })?;
        }
        phases.forward += t0.elapsed();

        // ---- backward pass
        for t in (1..nt).rev() {
            let t1 = Instant::now();
            let c = t - 1; // cuts of θ_c
            let mut mine = vec![0.0; split.mine.len() * stride];
            {
                let tree = tree_store.lane(0);
                let lens = (0..opts.threads).map(|w| split.worker_range(w).len() * stride);
                let parts = split_lengths(&mut mine, lens);
                let states = &states;
                let probs = &probs[t];
                pool.install(|| {
                    workers.par_iter_mut().zip(parts).enumerate().try_for_each(
                        |(w, (worker, out))| -> Result<(), EngineError> {
                            let base = split.worker_range(w).start;
                            let model = &mut worker.models[t];
                            let mut beta = vec![0.0; nh];
                            for g in split.worker_groups[w].clone() {
                                model.cold_start()?;
                                for j in split.groups[g].clone() {
                                    let local_rank = j - split.mine.start;
                                    let at = (local_rank * cut_stages + c) * nh;
                                    let x = &states[at..at + nh];
                                    let mut alpha = 0.0;
                                    beta.iter_mut().for_each(|b| *b = 0.0);
                                    for (k, &p) in probs.iter().enumerate() {
                                        let a = opening(tree, &tree_off, nh, t, k);
                                        let sol = model.solve(x, a)?;
                                        let pi = model.state_duals();
                                        let dot: f64 = pi.iter().zip(x).map(|(p, x)| p * x).sum();
                                        alpha += p * (sol.objective - dot);
                                        for (b, &d) in beta.iter_mut().zip(pi) {
                                            *b += p * d;
                                        }
                                    }
                                    let rec =
                                        &mut out[(j - base) * stride..(j - base + 1) * stride];
                                    rec[0] = alpha;
                                    rec[1] = (iteration + 1) as f64;
                                    rec[2] = j as f64;
                                    rec[3..].copy_from_slice(&beta);
                                }
                            }
                            Ok(())
                        },
                    )
                })?;
            }
            phases.backward += t1.elapsed();
            let t2 = Instant::now();
            let counts: Vec<usize> = split.rank_counts.iter().map(|n| n * stride).collect();
            let fresh = pool_store.append(comm, c, &counts, &mine)?;
            let fresh = &pool_store.lane(c)[fresh];
            pool.install(|| {
                workers.par_iter_mut().try_for_each(|worker| {
                    worker.models[c].add_cuts(fresh.chunks_exact(stride).map(|r| (r[0], &r[3..])))
                })
            })?;
            phases.cut_exchange += t2.elapsed();
        }

        // ---- lower bound (same solves, same order, on every rank)
        let t3 = Instant::now();
        let lb = {
            let tree = tree_store.lane(0);
            let model = &mut workers[0].models[0];
            model.cold_start()?;
            let mut lb = 0.0;
            for (k, &p) in probs[0].iter().enumerate() {
                let a = opening(tree, &tree_off, nh, 0, k);
                lb += p * model.solve(&initial, a)?.objective;
            }
            lb
        };
        phases.lower_bound += t3.elapsed();

        // ---- upper bound statistics (global trajectory order) and the stop decision
        let t4 = Instant::now();
        comm.allgatherv(
            &costs,
            &mut all_costs,
            &split.rank_counts,
            &prefix_displs(&split.rank_counts),
        )?;
        let mean = all_costs.iter().sum::<f64>() / m as f64;
        let ci95 = if m > 1 {
            let var = all_costs
                .iter()
                .map(|x| (x - mean) * (x - mean))
                .sum::<f64>()
                / (m - 1) as f64;
            1.96 * (var / m as f64).sqrt()
        } else {
            0.0
        };
        let gap = if mean != 0.0 {
            (mean - lb) / mean.abs()
        } else {
            0.0
        };
        iteration += 1;
        lb_history.push(lb);
        let row = IterationRow {
            iteration,
            lower_bound: lb,
            upper_bound_mean: mean,
            upper_bound_ci95: ci95,
            gap,
            cuts: iteration * m * cut_stages,
            elapsed_secs: start.elapsed().as_secs_f64(),
        };
        let mut decision = [0u64];
        if rank == 0 {
            let stalled = opts.stall.is_some_and(|(tol, k)| {
                lb_history.len() > k && {
                    let now = lb_history[lb_history.len() - 1];
                    let then = lb_history[lb_history.len() - 1 - k];
                    ((now - then) / now.abs().max(1.0)).abs() < tol
                }
            });
            let reason = if iteration >= opts.iterations {
                Some(StopReason::IterationLimit)
            } else if opts.time_limit.is_some_and(|l| start.elapsed() >= l) {
                Some(StopReason::TimeLimit)
            } else if stalled {
                Some(StopReason::Stall)
            } else {
                None
            };
            decision[0] = reason.map_or(0, StopReason::code);
            on_iteration(&row);
        }
        comm.broadcast(&mut decision, 0)?;
        phases.bounds_sync += t4.elapsed();
        rows.push(row);
        if let Some(r) = StopReason::from_code(decision[0]) {
            stop = r;
            break;
        }
    }

    // ---- report
    let solves: u64 = workers
        .iter()
        .flat_map(|w| w.models.iter().map(StageLp::solves))
        .sum();
    let mut total_solves = [0u64];
    comm.allreduce(&[solves], &mut total_solves, ReduceOp::Sum)?;
    let mine = [
        read_kib("/proc/self/status", "VmHWM:"),
        read_kib("/proc/self/smaps_rollup", "Pss:"),
    ];
    let mut mem = vec![0u64; 2 * ranks];
    comm.allgatherv(
        &mine,
        &mut mem,
        &vec![2; ranks],
        &(0..ranks).map(|r| 2 * r).collect::<Vec<_>>(),
    )?;
    let memory = (0..ranks)
        .map(|r| RankMemory {
            rank: r,
            peak_rss: mem[2 * r],
            pss: mem[2 * r + 1],
        })
        .collect();
    let region_report = |name, store: &Lanes<C>, len: usize| {
        let (pages, storage) = match store {
            Lanes::Region(_) => (store.pages(), comm.region_storage()),
            Lanes::Private { .. } => (Vec::new(), "private_copy"),
        };
        let mut by_node: Vec<(i32, usize)> = Vec::new();
        for p in pages {
            let node = if p < 0 { -1 } else { p };
            match by_node.iter_mut().find(|(n, _)| *n == node) {
                Some((_, c)) => *c += 1,
                None => by_node.push((node, 1)),
            }
        }
        by_node.sort_unstable();
        RegionReport {
            name,
            bytes: len * 8,
            shared: store.is_shared(comm),
            storage,
            pages_by_node: by_node,
        }
    };
    let regions = vec![
        region_report("opening_tree", &tree_store, tree_len),
        region_report("cut_pool", &pool_store, cut_stages * capacity * stride),
    ];
    let policy = (0..nt)
        .map(|c| {
            if c >= cut_stages {
                return Vec::new();
            }
            pool_store
                .lane(c)
                .chunks_exact(stride)
                .map(|r| Cut {
                    intercept: r[0],
                    coefficients: r[3..].to_vec(),
                    iteration: r[1] as usize,
                    trajectory: r[2] as usize,
                })
                .collect()
        })
        .collect();
    Ok(TrainReport {
        rows,
        stop,
        phases,
        ranks,
        threads: opts.threads,
        backend: comm.backend_name(),
        memory,
        regions,
        policy,
        lp_solves: total_solves[0],
        options: opts.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::Split;

    #[test]
    fn split_covers_every_trajectory_once() {
        for m in [1, 7, 10, 40] {
            for g in [1, 2, 4] {
                for ranks in 1..5 {
                    let mut seen = vec![0; m];
                    let mut next = 0;
                    for r in 0..ranks {
                        for w in [1, 2, 3] {
                            let s = Split::new(m, g, ranks, r, w);
                            assert_eq!(
                                s.mine.start,
                                if s.mine.is_empty() {
                                    s.mine.start
                                } else {
                                    next
                                }
                            );
                            let covered: usize = (0..w).map(|i| s.worker_range(i).len()).sum();
                            assert_eq!(covered, s.mine.len());
                            if w == 1 {
                                for j in s.mine.clone() {
                                    seen[j] += 1;
                                }
                            }
                            assert_eq!(s.rank_counts.iter().sum::<usize>(), m);
                        }
                        next = Split::new(m, g, ranks, r, 1).mine.end.max(next);
                    }
                    assert!(
                        seen.iter().all(|&c| c == 1),
                        "m={m} g={g} ranks={ranks}: {seen:?}"
                    );
                }
            }
        }
    }
}
