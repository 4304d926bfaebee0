//! The training loop: set up the shared data and one workspace per thread,
//! then iterate forward pass, backward pass, cut selection, bounds, until a
//! stop rule.
//!
//! - [`forward`]: stage-major trajectories, their trial points and costs;
//! - [`backward`]: stage by stage from the last, one cut per trial point;
//! - [`selection`]: which cuts the stage LPs load;
//! - [`bounds`]: lower bound, upper-bound statistics, stop decision;
//! - [`report`]: memory, regions, counters, the policy, checkpoints.
//!
//! Results do not depend on how ranks × threads split the work: every
//! trajectory samples from a pure function of (iteration, trajectory,
//! stage), keeps its own stored basis per stage, and every solve starts
//! from a fresh load of a model built the same way on every rank; cuts go
//! to slots fixed by (iteration, trajectory), and cut selection is a pure
//! function of the pool.
//!
//! A solve that fails on one rank (after the whole recovery ladder) is made
//! known to every rank by a status exchange at the end of the phase, so all
//! ranks stop together and still agree on what was done so far.
#![forbid(unsafe_code)]

mod backward;
mod bounds;
mod forward;
mod report;
mod restore;
mod selection;
mod split;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cobre_comm::{CommError, Communicator, ReduceOp};

use crate::comm::EngineComm;
use crate::error::EngineError;
use crate::model::{Model, Phase};
use crate::options::TrainOptions;
use crate::report::{IterationRow, PhaseTimes, PhaseWork, StopReason, TrainFailure, TrainReport};
use crate::shared::cache::StageCache;
use crate::shared::pool::CutPool;
use crate::shared::store::Lanes;
use crate::solve::basis::Entry;
use crate::solve::workspace::{Frozen, WorkStats, Workspace};
use crate::Hooks;

use split::Split;

/// One worker thread: its workspace, the model's scratch and the stored
/// bases of its trajectories.
pub(crate) struct Worker<S> {
    ws: Workspace,
    scratch: S,
    /// Global trajectories of this worker.
    range: std::ops::Range<usize>,
    /// Stored bases: `[trajectory - range.start][stage]`.
    bases: Vec<Vec<Entry>>,
}

/// Everything a rank holds while training.
pub(crate) struct Trainer<'a, C: EngineComm, M: Model> {
    comm: &'a C,
    model: &'a M,
    opts: &'a TrainOptions,
    threads: rayon::ThreadPool,
    split: Split,
    tree: Lanes<f64, C>,
    tree_off: Vec<usize>,
    cache: StageCache<C>,
    pool: CutPool<C>,
    workers: Vec<Worker<M::Scratch>>,
    /// The lower bound's stored basis (rank 0).
    lb_basis: Entry,
    probs: Vec<Vec<f64>>,
    orders: Vec<Vec<usize>>,
    /// States leaving every stage but the last, of this rank's trajectories
    /// in the last forward pass: `[trajectory][stage][coordinate]`.
    trial: Vec<f64>,
    /// Costs of this rank's trajectories in the last forward pass.
    costs: Vec<f64>,
    /// Penalised slack used by this rank's forward passes.
    slack: f64,
    phases: PhaseTimes,
    rows: Vec<IterationRow>,
    start: Instant,
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
    /// LP solves over every rank and this rank's phase times at the end of
    /// the last iteration (to report the next one's own).
    mark: (u64, PhaseTimes),
    /// This rank's workspace counters, summed over threads, at the last
    /// phase boundary.
    work_mark: WorkStats,
    /// This rank's counters of each phase of the current iteration.
    iteration_work: [WorkStats; 3],
    /// Every rank's work per phase of every iteration (rank 0).
    phase_work: Vec<PhaseWork>,
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

impl<'a, C: EngineComm, M: Model> Trainer<'a, C, M> {
    fn setup(
        comm: &'a C,
        model: &'a M,
        opts: &'a TrainOptions,
        stop: Option<&'a AtomicBool>,
    ) -> Result<Self, EngineError> {
        let start = Instant::now();
        let sizes = crate::sizes(model, opts)?;
        if opts.release_eagerly {
            crate::allocator::release_eagerly();
        }
        let (rank, ranks) = (comm.rank(), comm.size());
        // The calling thread is worker 0 (one thread stack and allocator
        // arena fewer per rank); where it cannot be (it already belongs to a
        // pool), a pool of its own.
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
        let nt = model.stages();
        let lanes = nt - 1;
        let split = Split::new(opts.forward_passes, ranks, rank, opts.threads);
        let (tree, tree_off) = build_tree(comm, model, opts.replicate)?;
        let cache = StageCache::build(comm, model, opts.replicate)?;
        let widths = (0..lanes).map(|t| model.cut_layout(t).len()).collect();
        let pool = CutPool::new(
            comm,
            widths,
            sizes.cuts_per_stage,
            model.state_len(),
            opts.cut_selection.rule.is_some(),
            opts.replicate,
        )?;
        let workers = split
            .workers
            .iter()
            .map(|range| {
                Ok(Worker {
                    ws: Workspace::new(model.profile(Phase::Forward), opts.fault)
                        .map_err(|e| EngineError::Solver(format!("{e:?}")))?,
                    scratch: model.scratch(),
                    range: range.clone(),
                    bases: vec![vec![Entry::default(); nt]; range.len()],
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut trainer = Self {
            comm,
            model,
            opts,
            threads,
            trial: vec![0.0; split.mine.len() * lanes * model.state_len()],
            costs: vec![0.0; split.mine.len()],
            split,
            tree,
            tree_off,
            cache,
            pool,
            workers,
            lb_basis: Entry::default(),
            probs: (0..nt).map(|t| model.opening_probabilities(t)).collect(),
            orders: (0..nt).map(|t| model.solve_order(t)).collect(),
            slack: 0.0,
            phases: PhaseTimes::default(),
            rows: Vec::new(),
            start,
            peak_pss: (0, 0),
            stop,
            committed: (Vec::new(), Entry::default(), 0.0),
            elapsed_before: 0.0,
            mark: (0, PhaseTimes::default()),
            work_mark: WorkStats::default(),
            iteration_work: Default::default(),
            phase_work: Vec::new(),
        };
        trainer.phases.setup = start.elapsed();
        trainer.sample_memory()?;
        Ok(trainer)
    }

    /// Exchange the phase outcome and the stop flag (see [`agree`]).
    fn agree(&self, local: Result<(), EngineError>, iteration: usize) -> Result<(), EngineError> {
        agree(self.comm, local, self.stop, iteration)
    }

    /// Run iterations after `done` until a stop rule fires; a checkpoint
    /// goes to `hooks` every `checkpoint_every` iterations.
    fn iterate(&mut self, done: usize, hooks: &mut Hooks<'_>) -> Result<StopReason, EngineError> {
        for k in done + 1.. {
            for w in &mut self.workers {
                w.ws.set_iteration(k);
            }
            self.forward(k)?;
            self.note_phase(Phase::Forward);
            self.backward(k)?;
            self.select(k)?;
            self.note_phase(Phase::Backward);
            let lb = self.lower_bound(k)?;
            self.note_phase(Phase::LowerBound);
            // Sampled before trimming: the figure is what the iteration held.
            self.sample_memory()?;
            crate::allocator::trim();
            let stop = self.close_iteration(k, lb, &mut *hooks.on_iteration)?;
            self.commit();
            if let Some(stop) = stop {
                return Ok(stop);
            }
            if self
                .opts
                .checkpoint_every
                .is_some_and(|n| k % n.max(1) == 0)
            {
                let report = self.report(StopReason::InProgress)?;
                if let (0, Some(f)) = (self.comm.rank(), hooks.on_checkpoint.as_mut()) {
                    f(&report);
                }
            }
        }
        unreachable!("the iteration limit stops the loop")
    }

    /// Hand the heap pages freed by the stages solved so far back to the
    /// system once more than 4 MiB lie free (workers idle), unless glibc
    /// already releases them eagerly: without it the freed LP buffers pile
    /// up in the arenas until the end of the iteration (40-hydro study, 512
    /// cuts per stage: peak node PSS 56.7 → 51.2 MB).
    fn trim_between_stages(&self) {
        /// Free bytes that make a trim worth its system calls.
        const OVER: usize = 4 << 20;
        if !self.opts.release_eagerly {
            crate::allocator::trim_over(OVER);
        }
    }

    /// Remember the state at the end of a completed iteration.
    fn commit(&mut self) {
        if !self.opts.keep_checkpoint {
            return;
        }
        let mut bases = Vec::new();
        for w in &self.workers {
            for (i, stages) in w.bases.iter().enumerate() {
                for (t, e) in stages.iter().enumerate() {
                    if !e.is_empty() {
                        bases.push(((w.range.start + i) as u32, t as u32, e.clone()));
                    }
                }
            }
        }
        self.committed = (bases, self.lb_basis.clone(), self.slack);
    }
}

/// Where workspaces freeze stage `t` of `model` from.
fn frozen<'f, C: EngineComm, M: Model>(
    cache: &'f StageCache<C>,
    pool: &'f CutPool<C>,
    model: &'f M,
    t: usize,
) -> Frozen<'f, C> {
    Frozen {
        cache,
        pool,
        layout: (t < pool.lanes()).then(|| model.cut_layout(t)),
        theta: model.theta_column(t),
    }
}

/// The opening tree's block of stage `t` (`openings × noise_len`).
fn tree_block<'t, C: EngineComm>(tree: &'t Lanes<f64, C>, off: &[usize], t: usize) -> &'t [f64] {
    let all = tree.lane(0);
    let end = off.get(t + 1).copied().unwrap_or(all.len());
    &all[off[t]..end]
}

/// Build and publish the opening tree: each rank fills a block of stages.
fn build_tree<C: EngineComm, M: Model>(
    comm: &C,
    model: &M,
    replicate: bool,
) -> Result<(Lanes<f64, C>, Vec<usize>), CommError> {
    let nt = model.stages();
    let width = model.noise_len();
    let mut off = Vec::with_capacity(nt + 1);
    let mut len = 0usize;
    for t in 0..nt {
        off.push(len);
        len = model
            .openings(t)
            .checked_mul(width)
            .and_then(|v| v.checked_add(len))
            .ok_or_else(|| CommError::AllocationFailed {
                requested_bytes: usize::MAX,
                message: "the opening tree overflows".into(),
            })?;
    }
    off.push(len);
    let mut tree = Lanes::new(comm, 1, len, replicate, "opening tree")?;
    let stage_counts = cobre_comm::per_rank_counts(nt, comm.size());
    let stage_of = |r: usize| stage_counts[..r].iter().sum::<usize>();
    let counts: Vec<usize> = (0..comm.size())
        .map(|r| off[stage_of(r) + stage_counts[r]] - off[stage_of(r)])
        .collect();
    let first = stage_of(comm.rank());
    let mut mine = vec![0.0; counts[comm.rank()]];
    for t in first..first + stage_counts[comm.rank()] {
        let base = off[t] - off[first];
        for k in 0..model.openings(t) {
            let at = base + k * width;
            model.opening_noise(t, k, &mut mine[at..at + width]);
        }
    }
    tree.append(comm, 0, &counts, &mine)?;
    off.pop();
    Ok((tree, off))
}

/// Train (see [`crate::train`]).
pub(crate) fn train<C: EngineComm, M: Model>(
    comm: &C,
    model: &M,
    opts: &TrainOptions,
    mut hooks: Hooks<'_>,
) -> Result<TrainReport, TrainFailure> {
    let mut trainer = Trainer::setup(comm, model, opts, hooks.stop)?;
    let done = match hooks.resume.take() {
        Some(state) => trainer.restore(state)?,
        None => 0,
    };
    match trainer.iterate(done, &mut hooks) {
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
