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

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cobre_comm::{CommError, Communicator, ReduceOp};
use cobre_solver::Basis;

use crate::basis::Entry;
use crate::cache::StageCache;
use crate::case::Case;
use crate::checkpoint::State;
use crate::engine::{
    EngineComm, EngineError, Hooks, IterationRow, PhaseTimes, StopReason, TrainFailure,
    TrainOptions, TrainReport,
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
    /// Highest PSS of this rank and of the node (sum over ranks at one
    /// sample point), over the samples so far.
    peak_pss: (u64, u64),
    /// Set to stop at the next phase boundary.
    stop: Option<&'a AtomicBool>,
    /// This rank's bases, the lower bound's basis and the slack as they were
    /// at the end of the last completed iteration (what a checkpoint holds).
    committed: (Vec<(u32, u32, Entry)>, Entry, f64),
    /// Wall-clock seconds of the iterations before a resumption.
    elapsed_before: f64,
}

/// Inflows of opening `k` of stage `t` in the opening tree.
fn opening<'t>(tree: &'t [f64], offsets: &[usize], hydros: usize, t: usize, k: usize) -> &'t [f64] {
    let at = offsets[t] + k * hydros;
    &tree[at..at + hydros]
}

/// Sizes that come from input, checked before anything is allocated.
fn check_options(case: &Case, opts: &TrainOptions) -> Result<usize, EngineError> {
    crate::engine::sizes(case, opts).map(|s| s.cuts_per_stage)
}

/// Exchange each rank's phase outcome and whether a stop was requested;
/// every rank returns the first failure (its own message on the failing
/// rank), or [`EngineError::Interrupted`] when any rank was asked to stop.
fn agree<C: Communicator>(
    comm: &C,
    local: Result<(), EngineError>,
    stop: Option<&AtomicBool>,
    iteration: usize,
) -> Result<(), EngineError> {
    // Under Min: the lowest failing rank (as rank + 1), and 0 when any rank
    // was asked to stop; MAX when neither.
    let failed = if local.is_err() {
        comm.rank() as u64 + 1
    } else {
        u64::MAX
    };
    let stopping = if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        0
    } else {
        u64::MAX
    };
    let mut first = [0u64; 2];
    comm.allreduce(&[failed, stopping], &mut first, ReduceOp::Min)?;
    match (local, first) {
        (Err(e), _) => Err(e),
        (Ok(()), [u64::MAX, u64::MAX]) => Ok(()),
        (Ok(()), [u64::MAX, _]) => Err(EngineError::Interrupted { iteration }),
        (Ok(()), [r, _]) => Err(EngineError::PeerFailed {
            rank: (r - 1) as usize,
            iteration,
        }),
    }
}

impl<'a, C: EngineComm> Trainer<'a, C> {
    fn setup(
        comm: &'a C,
        case: &'a Case,
        opts: &'a TrainOptions,
        stop: Option<&'a AtomicBool>,
    ) -> Result<Self, EngineError> {
        let start = Instant::now();
        let capacity = check_options(case, opts)?;
        crate::allocator::release_eagerly();
        let (rank, ranks) = (comm.rank(), comm.size());
        // The calling thread is worker 0 (one thread stack and allocator
        // arena fewer per rank: 3 MB less node memory at 16 ranks × 1
        // thread); where it cannot be (it already belongs to a pool), a
        // pool of its own.
        let builder = || {
            rayon::ThreadPoolBuilder::new()
                .num_threads(opts.threads)
                .thread_name(move |i| format!("rank{rank}-lp{i}"))
        };
        let threads = builder()
            .use_current_thread()
            .build()
            .or_else(|_| builder().build())
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
            selector: Selector::new(opts.cut_selection, lanes, comm.rank(), comm.size()),
            workers,
            lb_basis: Entry::default(),
            probs,
            initial: case.hydros.iter().map(|h| h.initial_volume).collect(),
            phases: PhaseTimes::default(),
            rows: Vec::new(),
            start,
            slack: 0.0,
            peak_pss: (0, 0),
            stop,
            committed: (Vec::new(), Entry::default(), 0.0),
            elapsed_before: 0.0,
        };
        trainer.phases.setup = start.elapsed();
        trainer.sample_memory()?;
        Ok(trainer)
    }

    /// Exchange the phase outcome and the stop flag (see [`agree`]).
    fn agree(&self, local: Result<(), EngineError>, iteration: usize) -> Result<(), EngineError> {
        agree(self.comm, local, self.stop, iteration)
    }

    /// Run iterations from `first` until a stop rule fires; a checkpoint
    /// goes to `hooks` every `checkpoint_every` iterations.
    fn iterate(&mut self, first: usize, hooks: &mut Hooks<'_>) -> Result<StopReason, EngineError> {
        for iteration in first.. {
            for w in &mut self.workers {
                w.ws.set_iteration(iteration + 1);
            }
            let states = self.forward(iteration)?;
            self.backward(iteration, states)?;
            let lb = self.lower_bound(iteration)?;
            // Sampled before trimming: the figure is what the iteration held.
            self.sample_memory()?;
            crate::allocator::trim();
            let stop = self.close_iteration(iteration, lb, &mut *hooks.on_iteration)?;
            self.commit();
            if let Some(stop) = stop {
                return Ok(stop);
            }
            let done = iteration + 1;
            if self
                .opts
                .checkpoint_every
                .is_some_and(|n| done % n.max(1) == 0)
            {
                let report = self.report(StopReason::InProgress)?;
                if self.comm.rank() == 0 {
                    (hooks.on_checkpoint)(&report);
                }
            }
        }
        unreachable!("the iteration limit stops the loop")
    }

    /// Remember the state at the end of a completed iteration.
    fn commit(&mut self) {
        let mut bases = Vec::new();
        for w in &self.workers {
            for (gi, stages) in w.bases.iter().enumerate() {
                for (t, e) in stages.iter().enumerate() {
                    if !e.is_empty() {
                        bases.push(((w.first_group + gi) as u32, t as u32, e.clone()));
                    }
                }
            }
        }
        self.committed = (bases, self.lb_basis.clone(), self.slack);
    }

    /// Put a checkpoint's state in place (collective: the pool and trial
    /// points are published again). Returns the iteration to go on from.
    fn restore(&mut self, state: &State) -> Result<usize, EngineError> {
        let lanes = self.pool.lanes();
        let bad = |what: String| {
            EngineError::Checkpoint(crate::checkpoint::CheckpointError::Corrupt {
                path: "the checkpoint".into(),
                what,
            })
        };
        if state.cuts.len() != lanes.max(1) && !(lanes == 0 && state.cuts.is_empty()) {
            return Err(bad(format!(
                "{} cut lanes for {lanes} stages",
                state.cuts.len()
            )));
        }
        let m = self.opts.forward_passes;
        let per = state.iterations * m;
        let mine = |n: usize| -> Vec<usize> {
            let mut c = vec![0; self.comm.size()];
            c[0] = n;
            c
        };
        let root = self.comm.rank() == 0;
        for (c, records) in state.cuts.iter().enumerate().take(lanes) {
            if records.len() != per * self.pool.stride() {
                return Err(bad(format!("lane {c} holds {} values", records.len())));
            }
            let data: &[f64] = if root { records } else { &[] };
            self.pool.append_cuts(self.comm, c, &mine(per), data)?;
        }
        let want = per * lanes * self.case.hydros.len();
        if state.states.len() != want {
            return Err(bad(format!(
                "{} trial-point values, not {want}",
                state.states.len()
            )));
        }
        let data: &[f64] = if root { &state.states } else { &[] };
        self.pool.append_states(self.comm, &mine(per), data)?;
        let (pool, selector) = (&self.pool, &mut self.selector);
        self.threads
            .install(|| selector.add_states(pool, 0..pool.states()));
        if per > 0 {
            for c in 0..lanes {
                let pending = self
                    .threads
                    .install(|| selector.add_cuts(pool, c, per - m..per));
                selector.share(self.comm, pending)?;
            }
        }
        for (g, t, entry) in &state.bases {
            let (g, t) = (*g as usize, *t as usize);
            for w in &mut self.workers {
                let local = g.wrapping_sub(w.first_group);
                if local < w.bases.len() && t < self.case.stages {
                    w.bases[local][t] = entry.clone();
                }
            }
        }
        self.lb_basis = state.lb_basis.clone();
        self.slack = if root { state.slack } else { 0.0 };
        self.elapsed_before = state.rows.last().map_or(0.0, |r| r.elapsed_secs);
        self.rows = state.rows.clone();
        self.commit();
        Ok(state.iterations)
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

/// Train (see [`crate::engine::train_with`]).
pub(crate) fn train<C: EngineComm>(
    comm: &C,
    case: &Case,
    opts: &TrainOptions,
    mut hooks: Hooks<'_>,
) -> Result<TrainReport, TrainFailure> {
    let mut trainer = Trainer::setup(comm, case, opts, hooks.stop)?;
    let first = match hooks.resume.take() {
        Some(state) => trainer.restore(state)?,
        None => 0,
    };
    match trainer.iterate(first, &mut hooks) {
        Ok(stop) => Ok(trainer.report(stop)?),
        Err(
            error @ (EngineError::Solve(_)
            | EngineError::PeerFailed { .. }
            | EngineError::Interrupted { .. }),
        ) => {
            // Every rank agreed on the failure (or the stop), so they can
            // still agree on what was done before it.
            let why = if matches!(error, EngineError::Interrupted { .. }) {
                StopReason::Interrupted
            } else {
                StopReason::SolverFailure
            };
            let partial = trainer.report(why).ok().map(Box::new);
            Err(TrainFailure { error, partial })
        }
        Err(error) => Err(TrainFailure {
            error,
            partial: None,
        }),
    }
}
