//! Synthetic cases of any size: cascades of up to three reservoirs,
//! seasonal lognormal inflows, thermals with increasing costs and an
//! unlimited deficit tier (so every stage problem is feasible).
#![forbid(unsafe_code)]

use super::case::{
    CaseFile, DeficitFile, HydroFile, InflowModelFile, PerStage, ThermalFile, TrainingFile,
};
use super::sampling;

/// Size of a generated case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerateSpec {
    /// Hydro plants.
    pub hydros: usize,
    /// Stages.
    pub stages: usize,
    /// Openings per stage.
    pub openings: usize,
    /// Thermal plants.
    pub thermals: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

/// Build the case file for `spec`.
#[must_use]
pub fn generate(spec: &GenerateSpec) -> CaseFile {
    let u = |tag: u64, i: usize| sampling::uniform([spec.seed, tag, i as u64]);
    let hydros: Vec<HydroFile> = (0..spec.hydros)
        .map(|h| {
            let max_volume = (500.0 + 1500.0 * u(1, h)).round();
            let in_cascade = h % 3;
            let last_of_cascade = in_cascade == 2 || h + 1 == spec.hydros;
            HydroFile {
                name: format!("H{h:03}"),
                min_volume: (0.1 * max_volume).round(),
                max_volume,
                initial_volume: (0.4 * max_volume).round(),
                max_turbined: Some((0.25 * max_volume).round()),
                productivity: 0.8 + 0.4 * u(2, h),
                downstream: (!last_of_cascade).then(|| format!("H{:03}", h + 1)),
                spill_allowed: true,
                spill_cost: 0.001,
            }
        })
        .collect();
    let base: Vec<f64> = hydros
        .iter()
        .enumerate()
        .map(|(h, hy)| (0.08 + 0.08 * u(3, h)) * hy.max_volume)
        .collect();
    let phase: Vec<f64> = (0..spec.hydros)
        .map(|h| std::f64::consts::TAU * 0.1 * u(4, h))
        .collect();
    let mean: Vec<Vec<f64>> = (0..spec.stages)
        .map(|t| {
            (0..spec.hydros)
                .map(|h| {
                    let season = (std::f64::consts::TAU * t as f64 / 12.0 + phase[h]).sin();
                    (base[h] * (1.0 + 0.5 * season)).max(0.0)
                })
                .collect()
        })
        .collect();
    let std: Vec<Vec<f64>> = mean
        .iter()
        .map(|row| row.iter().map(|m| 0.35 * m).collect())
        .collect();
    // Energy of the mean inflow, counting every plant downstream that turbines it again.
    let cascade_productivity = |start: usize| {
        let mut total = 0.0;
        let mut at = Some(start);
        while let Some(h) = at {
            total += hydros[h].productivity;
            at = hydros[h].downstream.as_ref().map(|_| h + 1);
        }
        total
    };
    let hydro_energy: f64 = base
        .iter()
        .enumerate()
        .map(|(h, b)| cascade_productivity(h) * b)
        .sum();
    let thermal_cap = hydro_energy * 0.7 / spec.thermals.max(1) as f64;
    let thermals = (0..spec.thermals)
        .map(|j| ThermalFile {
            name: format!("T{j:03}"),
            capacity: Some(thermal_cap.round().max(1.0)),
            cost: PerStage::Scalar(
                (20.0 + 180.0 * (j as f64 + u(5, j)) / spec.thermals.max(1) as f64).round(),
            ),
        })
        .collect();
    let demand = PerStage::List(
        (0..spec.stages)
            .map(|t| {
                ((1.25 + 0.15 * (std::f64::consts::TAU * t as f64 / 12.0).cos()) * hydro_energy)
                    .round()
            })
            .collect(),
    );
    CaseFile {
        name: Some(format!(
            "synthetic_h{}_t{}_o{}_j{}_s{}",
            spec.hydros, spec.stages, spec.openings, spec.thermals, spec.seed
        )),
        description: Some(format!(
            "Synthetic case from `cobre-shm generate --hydros {} --stages {} --openings {} --thermals {} --seed {}`",
            spec.hydros, spec.stages, spec.openings, spec.thermals, spec.seed
        )),
        stages: spec.stages,
        hydros,
        thermals,
        demand,
        deficit: vec![
            DeficitFile { cost: 500.0, max: Some((0.1 * hydro_energy).round()) },
            DeficitFile { cost: 2000.0, max: None },
        ],
        inflows: None,
        inflow_model: Some(InflowModelFile {
            kind: "lognormal".to_string(),
            mean,
            std,
            openings: spec.openings,
            seed: spec.seed,
        }),
        training: Some(TrainingFile {
            forward_passes: Some(40),
            iterations: Some(20),
            seed: Some(spec.seed),
            ..TrainingFile::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hydrothermal::case::Case;

    #[test]
    fn generated_cases_validate() {
        for hydros in [1, 2, 3, 7, 20] {
            let spec = GenerateSpec {
                hydros,
                stages: 12,
                openings: 5,
                thermals: 3,
                seed: 9,
            };
            let file = generate(&spec);
            let text = serde_json::to_string(&file).expect("serialise");
            let case = Case::parse(&text, "generated", "g").expect("valid");
            assert_eq!(case.hydros.len(), hydros);
            assert_eq!(generate(&spec), file, "deterministic");
        }
    }
}
