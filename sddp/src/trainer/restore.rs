//! Checkpoints from the trainer's side: what one holds of a run (gathered
//! on rank 0), and putting it back in place when a run resumes.
#![forbid(unsafe_code)]

use cobre_comm::{prefix_displs, ReduceOp};

use super::Trainer;
use crate::checkpoint::{CheckpointError, LaneState, State};
use crate::comm::EngineComm;
use crate::error::EngineError;
use crate::model::Model;

impl<C: EngineComm, M: Model> Trainer<'_, C, M> {
    /// Collective: the checkpoint of the completed iterations, on rank 0
    /// (every rank's committed bases gathered there); `None` elsewhere.
    pub(super) fn snapshot(&self) -> Result<Option<State>, EngineError> {
        if !self.opts.keep_checkpoint {
            return Ok(None);
        }
        let (bases, lb_basis, slack) = &self.committed;
        let mine: Vec<u8> = bases
            .iter()
            .flat_map(|(g, t, e)| crate::checkpoint::encode_entry(*g, *t, e))
            .collect();
        let ranks = self.comm.size();
        let mut lens = vec![0u64; ranks];
        let ones = vec![1usize; ranks];
        self.comm.allgatherv(
            &[mine.len() as u64],
            &mut lens,
            &ones,
            &prefix_displs(&ones),
        )?;
        let counts: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
        let mut all = vec![0u8; counts.iter().sum()];
        self.comm
            .allgatherv(&mine, &mut all, &counts, &prefix_displs(&counts))?;
        let mut slacks = [0.0];
        self.comm.allreduce(&[*slack], &mut slacks, ReduceOp::Sum)?;
        if self.comm.rank() != 0 {
            return Ok(None);
        }
        let bases = crate::checkpoint::decode_entries(&all)
            .map_err(|e| EngineError::Options(format!("gathering bases: {e}")))?;
        let done = self.rows.len();
        let per = done * self.opts.forward_passes;
        // The records stay out: the report's policy holds them already, and
        // the writer takes them from there (no second copy of the pool).
        let lanes = (0..self.pool.lanes())
            .map(|c| LaneState {
                stride: self.pool.stride(c),
                records: Vec::new(),
                active: self.pool.active_words(c).to_vec(),
            })
            .collect();
        let width = self.pool.lanes() * self.model.state_len();
        let states = self.pool.state_values();
        Ok(Some(State {
            iterations: done,
            rows: self.rows.clone(),
            lanes,
            states: states[..(per * width).min(states.len())].to_vec(),
            bases,
            lb_basis: lb_basis.clone(),
            slack: slacks[0],
        }))
    }

    /// Put a checkpoint's state in place (collective: the pool and trial
    /// points are published again). Returns the iterations it holds.
    pub(super) fn restore(&mut self, state: &State) -> Result<usize, EngineError> {
        let bad = |what: String| {
            EngineError::Checkpoint(CheckpointError::Corrupt {
                path: "the checkpoint".into(),
                what,
            })
        };
        let lanes = self.pool.lanes();
        if state.lanes.len() != lanes {
            return Err(bad(format!("{} cut lanes for {lanes}", state.lanes.len())));
        }
        let per = state.iterations * self.opts.forward_passes;
        let root = self.comm.rank() == 0;
        let mine = |n: usize| -> Vec<usize> {
            let mut c = vec![0; self.comm.size()];
            c[0] = n;
            c
        };
        for (c, lane) in state.lanes.iter().enumerate() {
            let stride = self.pool.stride(c);
            if lane.stride != stride || lane.records.len() != per * stride {
                return Err(bad(format!(
                    "lane {c} holds {} values of stride {}",
                    lane.records.len(),
                    lane.stride
                )));
            }
            let n = per.div_ceil(64);
            if lane.active.len() < n {
                return Err(bad(format!(
                    "lane {c} has {} flag words for {per} cuts",
                    lane.active.len()
                )));
            }
            let data: &[f64] = if root { &lane.records } else { &[] };
            self.pool.append_cuts(self.comm, c, &mine(per), data)?;
            // The flags of the checkpoint's slots; a larger pool's later
            // slots are still empty.
            let mut flags = self.pool.active_words(c).to_vec();
            flags[..n].copy_from_slice(&lane.active[..n]);
            self.pool.set_active_words(c, &flags);
        }
        if self.pool.keeps_states() {
            let want = per * lanes * self.model.state_len();
            if state.states.len() != want {
                return Err(bad(format!(
                    "{} trial-point values, not {want}",
                    state.states.len()
                )));
            }
            let data: &[f64] = if root { &state.states } else { &[] };
            self.pool.append_states(self.comm, &mine(per), data)?;
        }
        for (g, t, entry) in &state.bases {
            let (g, t) = (*g as usize, *t as usize);
            for w in &mut self.workers {
                if w.range.contains(&g) && t < self.model.stages() {
                    w.bases[g - w.range.start][t] = entry.clone();
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
