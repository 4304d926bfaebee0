//! The training loop: set up the shared data and one workspace per thread,
//! then iterate forward pass, backward pass, bounds, until a stop rule.
//!
//! - [`forward`]: stage-major trajectories, trial points published;
//! - [`backward`]: stage by stage, one averaged cut per trial point;
//! - [`bounds`]: lower bound, upper-bound statistics, stop decision;
//! - [`report`]: memory, regions, counters, the policy.
//!
//! A solve that fails on one rank (after the whole recovery ladder) is made
//! known to every rank by a status exchange at the end of the phase, so all
//! ranks stop together and still agree on what was done so far.
#![forbid(unsafe_code)]

mod backward;
mod bounds;
mod forward;
mod report;
mod split;

use std::time::Instant;

use cobre_comm::{CommError, Communicator, ReduceOp};
use cobre_solver::Basis;

use crate::basis::Entry;
use crate::cache::StageCache;
use crate::case::Case;
use crate::engine::{
    EngineComm, EngineError, IterationRow, PhaseTimes, StopReason, TrainFailure, TrainOptions,
    TrainReport,
};
use crate::pool::CutPool;
use crate::selection::Selector;
use crate::store::Lanes;
use crate::workspace::Workspace;

pub(crate) use split::Split;

/// One worker thread: its workspace and the bases of its groups.
pub(crate) struct Worker {
    ws: Workspace,
    /// First group of the worker.
    first_group: usize,
    /// Basis cache: `[group - first_group][stage]`.
    bases: Vec<Vec<Entry>>,
    /// Scratch for a restored basis.
    warm: Basis,
}

/// Everything a rank holds while training.
pub(crate) struct Trainer<'a, C: EngineComm> {
    comm: &'a C,
    case: &'a Case,
    opts: &'a TrainOptions,
    threads: rayon::ThreadPool,
    split: Split,
    tree: Lanes<f64, C>,
    tree_off: Vec<usize>,
    cache: StageCache<C>,
    pool: CutPool<C>,
    selector: Selector,
    workers: Vec<Worker>,
    lb_basis: Entry,
    probs: Vec<Vec<f64>>,
    initial: Vec<f64>,
    phases: PhaseTimes,
    rows: Vec<IterationRow>,
    start: Instant,
    /// Costs of this rank's trajectories in the last forward pass.
    costs: Vec<f64>,
    /// Penalised slack used by this rank's forward passes.
    slack: f64,
    peak_pss: u64,
}

/// Inflows of opening `k` of stage `t` in the opening tree.
fn opening<'t>(tree: &'t [f64], offsets: &[usize], hydros: usize, t: usize, k: usize) -> &'t [f64] {
    let at = offsets[t] + k * hydros;
    &tree[at..at + hydros]
}

/// Sizes that come from input, checked before anything is allocated.
fn check_options(case: &Case, opts: &TrainOptions) -> Result<usize, EngineError> {
    if opts.forward_passes == 0 || opts.iterations == 0 || opts.warm_group == 0 || opts.threads == 0
    {
        return Err(EngineError::Options(
            "forward passes, iterations, warm group and threads must be at least 1".into(),
        ));
    }
    let capacity = opts
        .iterations
        .checked_mul(opts.forward_passes)
        .filter(|&c| u32::try_from(c).is_ok())
        .ok_or_else(|| {
            EngineError::Options(format!(
                "{} iterations x {} forward passes = more cuts per stage than the pool can \
                 index (at most {}); lower --iterations or --forward-passes",
                opts.iterations,
                opts.forward_passes,
                u32::MAX
            ))
        })?;
    let _ = case;
    Ok(capacity)
}

/// Exchange each rank's phase outcome; every rank returns the first
/// failure (its own message on the failing rank).
fn agree<C: Communicator>(
    comm: &C,
    local: Result<(), EngineError>,
    iteration: usize,
) -> Result<(), EngineError> {
    // The lowest failing rank (as rank + 1), or MAX when none failed.
    let mine = if local.is_err() {
        comm.rank() as u64 + 1
    } else {
        u64::MAX
    };
    let mut first = [0u64];
    comm.allreduce(&[mine], &mut first, ReduceOp::Min)?;
    match (local, first[0]) {
        (Err(e), _) => Err(e),
        (Ok(()), u64::MAX) => Ok(()),
        (Ok(()), r) => Err(EngineError::PeerFailed {
            rank: (r - 1) as usize,
            iteration,
        }),
    }
}

impl<'a, C: EngineComm> Trainer<'a, C> {
    fn setup(comm: &'a C, case: &'a Case, opts: &'a TrainOptions) -> Result<Self, EngineError> {
        let start = Instant::now();
        let capacity = check_options(case, opts)?;
        let (rank, ranks) = (comm.rank(), comm.size());
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .thread_name(move |i| format!("rank{rank}-lp{i}"))
            .build()
            .map_err(|_| EngineError::Pool(opts.threads))?;
        let nt = case.stages;
        let split = Split::new(
            opts.forward_passes,
            opts.warm_group,
            ranks,
            rank,
            opts.threads,
        );
        let (tree, tree_off) = build_tree(comm, case, opts.replicate)?;
        let cache = StageCache::build(comm, case, opts.replicate)?;
        let lanes = nt - 1;
        let pool = CutPool::new(comm, lanes, capacity, case.hydros.len(), opts.replicate)?;
        let shape = cache.shape().clone();
        let workers = (0..opts.threads)
            .map(|w| {
                let groups = split.worker_groups[w].clone();
                Ok(Worker {
                    ws: Workspace::new(&shape, opts.fault)
                        .map_err(|e| EngineError::Solver(format!("{e:?}")))?,
                    first_group: groups.start,
                    bases: vec![vec![Entry::default(); nt]; groups.len()],
                    warm: Basis::new(0, 0),
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let probs = (0..nt)
            .map(|t| {
                (0..case.openings(t))
                    .map(|k| case.probability(t, k))
                    .collect()
            })
            .collect();
        let mut trainer = Self {
            comm,
            case,
            opts,
            threads,
            costs: vec![0.0; split.mine.len()],
            split,
            tree,
            tree_off,
            cache,
            pool,
            selector: Selector::new(opts.cut_selection, lanes),
            workers,
            lb_basis: Entry::default(),
            probs,
            initial: case.hydros.iter().map(|h| h.initial_volume).collect(),
            phases: PhaseTimes::default(),
            rows: Vec::new(),
            start,
            slack: 0.0,
            peak_pss: 0,
        };
        trainer.phases.setup = start.elapsed();
        trainer.sample_memory();
        Ok(trainer)
    }

    /// Run iterations until a stop rule fires.
    fn iterate(
        &mut self,
        on_iteration: &mut impl FnMut(&IterationRow),
    ) -> Result<StopReason, EngineError> {
        for iteration in 0.. {
            for w in &mut self.workers {
                w.ws.set_iteration(iteration + 1);
            }
            let states = self.forward(iteration)?;
            self.backward(iteration, states)?;
            let lb = self.lower_bound(iteration)?;
            self.sample_memory();
            if let Some(stop) = self.close_iteration(iteration, lb, on_iteration)? {
                return Ok(stop);
            }
        }
        unreachable!("the iteration limit stops the loop")
    }
}

/// Build and publish the opening tree: each rank fills a block of stages.
fn build_tree<C: EngineComm>(
    comm: &C,
    case: &Case,
    replicate: bool,
) -> Result<(Lanes<f64, C>, Vec<usize>), CommError> {
    let (off, len) = case.tree_offsets();
    let nt = case.stages;
    let mut tree = Lanes::new(comm, 1, len, replicate, "opening tree")?;
    let stage_counts = cobre_comm::per_rank_counts(nt, comm.size());
    let stage_of = |r: usize| stage_counts[..r].iter().sum::<usize>();
    let at = |t: usize| off.get(t).copied().unwrap_or(len);
    let counts: Vec<usize> = (0..comm.size())
        .map(|r| at(stage_of(r) + stage_counts[r]) - at(stage_of(r)))
        .collect();
    let first = stage_of(comm.rank());
    let mut mine = vec![0.0; counts[comm.rank()]];
    for t in first..first + stage_counts[comm.rank()] {
        let (lo, hi) = (at(t) - at(first), at(t + 1) - at(first));
        case.fill_stage_inflows(t, &mut mine[lo..hi]);
    }
    tree.append(comm, 0, &counts, &mine)?;
    Ok((tree, off))
}

/// Train (see [`crate::engine::train`]).
pub(crate) fn run<C: EngineComm>(
    comm: &C,
    case: &Case,
    opts: &TrainOptions,
    mut on_iteration: impl FnMut(&IterationRow),
) -> Result<TrainReport, TrainFailure> {
    let mut trainer = Trainer::setup(comm, case, opts)?;
    match trainer.iterate(&mut on_iteration) {
        Ok(stop) => Ok(trainer.report(stop)?),
        Err(error @ (EngineError::Solve(_) | EngineError::PeerFailed { .. })) => {
            // Every rank agreed on the failure, so they can still agree on
            // what was done before it.
            let partial = trainer.report(StopReason::SolverFailure).ok().map(Box::new);
            Err(TrainFailure { error, partial })
        }
        Err(error) => Err(TrainFailure {
            error,
            partial: None,
        }),
    }
}
