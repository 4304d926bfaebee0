//! What a run reports: memory of every rank (PSS split into private and
//! shared pages), where each shared structure lives, workspace counters
//! summed over threads and ranks, cut selection, and the policy.
#![forbid(unsafe_code)]

use std::time::Duration;

use cobre_comm::ReduceOp;

use super::Trainer;
use crate::comm::EngineComm;
use crate::error::EngineError;
use crate::model::{Model, Phase};
use crate::report::{
    PhaseWork, Policy, RankMemory, RegionReport, StopReason, TrainReport, WorkReport,
};
use crate::shared::store::Lanes;
use crate::solve::workspace::{WorkStats, LADDER};

fn region<T: cobre_comm::CommData, C: EngineComm>(
    comm: &C,
    name: &'static str,
    lanes: &Lanes<T, C>,
) -> RegionReport {
    RegionReport {
        name,
        bytes: lanes.bytes(),
        shared: lanes.is_shared(comm),
        storage: lanes.storage(comm),
        pages_by_node: lanes.pages_by_node(),
    }
}

/// The phases of an iteration, in the order of [`Trainer::note_phase`]'s slots.
const PHASES: [Phase; 3] = [Phase::Forward, Phase::Backward, Phase::LowerBound];
/// Numbers per phase in the exchange of [`Trainer::gather_phase_work`].
const PHASE_FIELDS: usize = 7;

impl<C: EngineComm, M: Model> Trainer<'_, C, M> {
    /// Record this rank's workspace counters of `phase` (those since the
    /// last phase boundary).
    pub(super) fn note_phase(&mut self, phase: Phase) {
        let mut now = WorkStats::default();
        for w in &self.workers {
            now.add(w.ws.stats());
        }
        let slot = PHASES.iter().position(|p| *p == phase).unwrap_or(0);
        self.iteration_work[slot] = now.since(&self.work_mark);
        self.work_mark = now;
    }

    /// Collective: every rank's work per phase of iteration `k`, kept on
    /// rank 0.
    pub(super) fn gather_phase_work(&mut self, k: usize) -> Result<(), EngineError> {
        let mut mine = Vec::with_capacity(PHASES.len() * PHASE_FIELDS);
        for w in &self.iteration_work {
            let retried: u64 = w.recovered.iter().sum();
            mine.extend([
                w.solves as f64,
                retried as f64,
                w.warm_starts as f64,
                w.iterations as f64,
                w.loads as f64,
                w.solve_time.as_secs_f64(),
                w.load_time.as_secs_f64(),
            ]);
        }
        let ranks = self.comm.size();
        let counts = vec![mine.len(); ranks];
        let displs: Vec<usize> = (0..ranks).map(|r| r * mine.len()).collect();
        let mut all = vec![0.0; mine.len() * ranks];
        self.comm.allgatherv(&mine, &mut all, &counts, &displs)?;
        if self.comm.rank() == 0 {
            for (rank, block) in all.chunks_exact(mine.len()).enumerate() {
                for (phase, v) in PHASES.iter().zip(block.chunks_exact(PHASE_FIELDS)) {
                    // Counts travel as f64: exact below 2^53.
                    let n = |x: f64| x as u64;
                    self.phase_work.push(PhaseWork {
                        iteration: k,
                        phase: *phase,
                        rank,
                        solves: n(v[0]),
                        retried: n(v[1]),
                        warm_starts: n(v[2]),
                        simplex_iterations: n(v[3]),
                        loads: n(v[4]),
                        solve_secs: v[5],
                        load_secs: v[6],
                    });
                }
            }
        }
        self.iteration_work = Default::default();
        Ok(())
    }

    /// Record this process's PSS if it is the highest seen.
    /// Collective: sample this rank's PSS and the node's (the sum over
    /// ranks at this same point of the run) and keep the highest of each.
    pub(super) fn sample_memory(&mut self) -> Result<(), EngineError> {
        let mine = crate::report::own_memory()[1];
        let mut node = [0u64];
        self.comm.allreduce(&[mine], &mut node, ReduceOp::Sum)?;
        self.peak_pss = (self.peak_pss.0.max(mine), self.peak_pss.1.max(node[0]));
        Ok(())
    }

    /// Collective: everything training produced.
    pub(super) fn report(&mut self, stop: StopReason) -> Result<TrainReport, EngineError> {
        // Rank 0 copies the published cuts once, for the outputs; the
        // memory figures below include that copy.
        let root = self.comm.rank() == 0;
        let lanes = self.pool.lanes();
        let policy = Policy {
            strides: (0..lanes).map(|c| self.pool.stride(c)).collect(),
            stages: (0..lanes)
                .map(|c| {
                    if root {
                        self.pool.cut_records(c).to_vec()
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
            active: (0..lanes)
                .map(|c| {
                    if root {
                        (0..self.pool.len(c))
                            .map(|s| self.pool.is_active(c, s))
                            .collect()
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
        };
        let checkpoint = self.snapshot()?;
        self.sample_memory()?;
        let comm = self.comm;
        let ranks = comm.size();
        let [peak_rss, pss, pss_anon, pss_shmem] = crate::report::own_memory();
        let mine = [peak_rss, pss, self.peak_pss.0, pss_anon, pss_shmem];
        let mut all = vec![0u64; mine.len() * ranks];
        let counts = vec![mine.len(); ranks];
        comm.allgatherv(
            &mine,
            &mut all,
            &counts,
            &cobre_comm::prefix_displs(&counts),
        )?;
        let memory = all
            .chunks_exact(mine.len())
            .enumerate()
            .map(|(rank, m)| RankMemory {
                rank,
                peak_rss: m[0],
                pss: m[1],
                peak_pss: m[2],
                pss_anon: m[3],
                pss_shmem: m[4],
            })
            .collect();
        let (reals, ints) = self.cache.parts();
        let (cuts, states) = self.pool.parts();
        let mut cache = region(comm, "stage_lp_cache", reals);
        cache.bytes += ints.bytes();
        let mut regions = vec![
            region(comm, "opening_tree", &self.tree),
            cache,
            region(comm, "cut_pool", cuts),
        ];
        regions.extend(states.map(|s| region(comm, "trial_points", s)));
        let work = self.work_report()?;
        let first_trajectory_bases = self
            .workers
            .iter()
            .find(|w| w.range.start == 0 && !w.range.is_empty())
            .map(|w| w.bases[0].clone())
            .unwrap_or_default();
        Ok(TrainReport {
            first_trajectory_bases,
            checkpoint,
            phase_work: self.phase_work.clone(),
            rows: self.rows.clone(),
            stop,
            phases: self.phases,
            ranks,
            threads: self.opts.threads,
            backend: comm.backend_name(),
            memory,
            node_peak_pss: self.peak_pss.1,
            regions,
            policy,
            lp_solves: work.solver.solves,
            work,
            options: self.opts.clone(),
        })
    }

    /// Collective: workspace counters summed over threads and ranks.
    fn work_report(&self) -> Result<WorkReport, EngineError> {
        let mut mine = WorkStats::default();
        for w in &self.workers {
            mine.add(w.ws.stats());
        }
        let mut counts = vec![mine.loads, mine.solves, mine.warm_starts, mine.iterations];
        counts.extend(mine.recovered);
        let mut sums = vec![0u64; counts.len()];
        self.comm.allreduce(&counts, &mut sums, ReduceOp::Sum)?;
        let secs = [
            mine.load_time.as_secs_f64(),
            mine.solve_time.as_secs_f64(),
            self.slack,
        ];
        let mut secs_sum = [0.0; 3];
        self.comm.allreduce(&secs, &mut secs_sum, ReduceOp::Sum)?;
        let mut recovered = [0u64; LADDER.len()];
        recovered.copy_from_slice(&sums[4..4 + LADDER.len()]);
        Ok(WorkReport {
            solver: WorkStats {
                loads: sums[0],
                solves: sums[1],
                warm_starts: sums[2],
                iterations: sums[3],
                recovered,
                load_time: Duration::from_secs_f64(secs_sum[0]),
                solve_time: Duration::from_secs_f64(secs_sum[1]),
            },
            workspace_scratch_bytes: self
                .workers
                .iter()
                .map(|w| w.ws.scratch_bytes())
                .max()
                .unwrap_or(0),
            basis_cache_bytes: self
                .workers
                .iter()
                .flat_map(|w| w.bases.iter().flatten())
                .chain(std::iter::once(&self.lb_basis))
                .map(crate::solve::basis::Entry::bytes)
                .sum(),
            selection_bytes: self.pool.flag_bytes(),
            active_cuts: (0..self.pool.lanes())
                .map(|c| self.pool.active_count(c))
                .collect(),
            penalty_slack: secs_sum[2],
        })
    }
}
