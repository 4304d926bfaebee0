//! The model's fingerprint: a hash of everything an upstream study's results
//! depend on, so a checkpoint of one study is refused by another.

use cobre_sddp::indexer::CutSlot;
use cobre_shm_sddp::model::{Fnv, Model};

use super::noise::ClassDraw;
use super::UpstreamModel;

fn debug(h: &mut Fnv, v: &impl std::fmt::Debug) {
    h.bytes(format!("{v:?}").as_bytes());
}

/// The stage LPs and layouts, the openings, their probabilities and solve
/// orders, risk measures and discounts, and what the noise transforms and
/// the state transition read: the PAR, load and NCS parameters, the inflow
/// non-negativity method, the state boxes, lag transitions and accumulator
/// seeds, the forward-sampling sources (the sampling seed is
/// [`Model::seed`], checked apart).
pub(super) fn fingerprint(m: &UpstreamModel<'_>) -> u64 {
    let mut h = Fnv::default();
    let (stage, training) = (&m.stage, &m.training);
    let stochastic = training.stochastic;
    let dims = stochastic.class_dimensions();
    h.usize(m.stages());
    h.usize(m.state_len());
    h.f64s(m.initial_state());
    h.f64s(&[m.cost_scale()]);
    debug(&mut h, training.inflow_method);
    h.f64s(training.lag_accum_seed);
    h.f64s(training.lag_weight_seed);
    for class in &m.classes {
        h.usize(class.range.start);
        h.usize(class.range.end);
        match class.draw {
            ClassDraw::Tree => h.usize(0),
            ClassDraw::Historical(l) => {
                h.usize(1);
                h.usize(l.n_windows());
            }
            ClassDraw::External(l) => {
                h.usize(2);
                h.usize(l.n_scenarios());
            }
        }
    }
    let par = stochastic.par();
    let mut noise = vec![0.0; m.noise_len()];
    for t in 0..m.stages() {
        let lp = m.stage_lp(t);
        h.usize(lp.num_cols);
        h.usize(lp.num_rows);
        for v in [&lp.col_starts, &lp.row_indices] {
            v.iter().for_each(|&x| h.bytes(&x.to_le_bytes()));
        }
        for v in cobre_shm_sddp::shared::cache::template_reals(lp) {
            h.f64s(v);
        }
        h.usize(m.theta_column(t));
        h.f64s(&[m.discount(t), m.cumulative_discount(t)]);
        h.f64s(&m.opening_probabilities(t));
        m.solve_order(t).iter().for_each(|&k| h.usize(k));
        for k in 0..m.openings(t) {
            m.opening_noise(t, k, &mut noise);
            h.f64s(&noise);
        }
        let layout = &training.cut_state_layouts[t];
        for k in 0..layout.n_slots() {
            h.usize(layout.global_state_index(CutSlot::new(k)).get());
            h.usize(layout.incoming_column(CutSlot::new(k)).get());
        }
        m.layouts[t].render.iter().for_each(|&(k, c)| {
            h.usize(k);
            h.usize(c);
        });
        debug(&mut h, &m.risk_measure(t));
        let bounds = &stage.state_boxes[t];
        h.f64s(&bounds.lower);
        h.f64s(&bounds.upper);
        debug(
            &mut h,
            &cobre_stochastic::par::resolve_stage_lag_transition(stage.stage_lag_transitions, t),
        );
        if par.n_stages() > 0 {
            for k in 0..dims.n_hydros {
                h.f64s(&[par.deterministic_base(t, k), par.sigma(t, k)]);
                h.f64s(par.psi_slice(t, k));
            }
        }
        let blocks = stage.geometry_per_stage[t].n_blks;
        for (normal, n) in [
            (stochastic.normal(), dims.n_load_buses),
            (stochastic.ncs_normal(), stochastic.n_stochastic_ncs()),
        ] {
            for e in 0..n {
                h.f64s(&[normal.mean(t, e), normal.std(t, e)]);
                for blk in 0..blocks {
                    h.f64s(&[normal.block_factor(t, e, blk)]);
                }
            }
        }
        m.ncs_columns[t].iter().for_each(|&c| h.usize(c));
    }
    h.f64s(stage.ncs_max_gen);
    debug(&mut h, &stage.ncs_allow_curtailment);
    debug(&mut h, &stage.ncs_stochastic_windows);
    debug(
        &mut h,
        &training.stages.iter().map(|s| s.id).collect::<Vec<_>>(),
    );
    h.0
}
