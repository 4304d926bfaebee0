//! A synthetic upstream Cobre case directory of any size: one bus, `hydros`
//! reservoirs with seasonal stochastic inflows, two thermals and a
//! stochastic load, over `stages` monthly stages. What `cobre run` and
//! `cobre-shm run` read, written for tests, benchmarks and the README.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde_json::{json, Value};

/// Dimensions and settings of the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExampleSpec {
    /// Hydro plants.
    pub hydros: usize,
    /// Monthly stages (at most 1200).
    pub stages: usize,
    /// Openings (backward-pass branches) per stage.
    pub openings: usize,
    /// Forward passes per iteration.
    pub forward_passes: usize,
    /// Training iterations.
    pub iterations: usize,
    /// Simulated scenarios after training (0: no simulation).
    pub scenarios: usize,
    /// Seed of the scenario generation.
    pub seed: u64,
}

impl Default for ExampleSpec {
    fn default() -> Self {
        Self {
            hydros: 2,
            stages: 6,
            openings: 4,
            forward_passes: 4,
            iterations: 8,
            scenarios: 16,
            seed: 7,
        }
    }
}

/// Why the case could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    /// A dimension is 0 or too large.
    #[error("{0}")]
    Spec(String),
    /// A file could not be written.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        message: String,
    },
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> ExampleError {
    ExampleError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn write_json(dir: &Path, rel: &str, value: &Value) -> Result<(), ExampleError> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| write_err(parent, e))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| write_err(&path, e))?;
    std::fs::write(&path, text + "\n").map_err(|e| write_err(&path, e))
}

/// `(id, stage, mean, std)` rows as the seasonal-statistics Parquet schema.
fn write_stats(
    path: &Path,
    id_column: &str,
    names: (&str, &str),
    rows: &[(i32, i32, f64, f64)],
) -> Result<(), ExampleError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(id_column, DataType::Int32, false),
        Field::new("stage_id", DataType::Int32, false),
        Field::new(names.0, DataType::Float64, false),
        Field::new(names.1, DataType::Float64, false),
    ]));
    let col =
        |f: fn(&(i32, i32, f64, f64)) -> f64| Float64Array::from_iter_values(rows.iter().map(f));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(col(|r| r.2)),
            Arc::new(col(|r| r.3)),
        ],
    )
    .map_err(|e| write_err(path, e))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| write_err(parent, e))?;
    }
    let file = File::create(path).map_err(|e| write_err(path, e))?;
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, schema, None).map_err(|e| write_err(path, e))?;
    writer.write(&batch).map_err(|e| write_err(path, e))?;
    writer.close().map_err(|e| write_err(path, e))?;
    Ok(())
}

/// A small deterministic pseudo-random stream (splitmix64) in [0, 1).
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 bits of mantissa.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn stages_json(spec: &ExampleSpec) -> Value {
    const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let stages: Vec<Value> = (0..spec.stages)
        .map(|t| {
            let (year, month) = (2024 + t / 12, t % 12);
            let (next_year, next_month) = (2024 + (t + 1) / 12, (t + 1) % 12);
            json!({
                "id": t,
                "start_date": format!("{year}-{:02}-01", month + 1),
                "end_date": format!("{next_year}-{:02}-01", next_month + 1),
                "blocks": [{ "id": 0, "name": "SINGLE", "hours": DAYS[month] * 24 }],
                "num_openings": spec.openings
            })
        })
        .collect();
    json!({
        "policy_graph": { "type": "finite_horizon", "annual_discount_rate": 0.12 },
        "stages": stages
    })
}

fn system_json(spec: &ExampleSpec, draws: &mut Draws) -> (Value, Value, Value) {
    let mut hydros = Vec::new();
    let mut models = Vec::new();
    let mut storage = Vec::new();
    for h in 0..spec.hydros {
        let capacity = 600.0 + 800.0 * draws.next();
        let turbine = 40.0 + 30.0 * draws.next();
        hydros.push(json!({
            "id": h,
            "name": format!("UHE{h}"),
            "operational_start_date": "2020-01-01",
            "downstream_id": null,
            "reservoir": { "min_storage_hm3": 0.0, "max_storage_hm3": capacity },
            "outflow": { "min_outflow_m3s": 0.0, "max_outflow_m3s": turbine * 2.0 },
            "generation": {
                "model": "constant_productivity",
                "min_turbined_m3s": 0.0, "max_turbined_m3s": turbine,
                "min_generation_mw": 0.0, "max_generation_mw": turbine
            },
            "unit_groups": [{
                "id": 0, "name": format!("UHE{h}"), "bus_id": 0,
                "min_generation_mw": 0.0, "max_generation_mw": turbine,
                "min_turbined_m3s": 0.0, "max_turbined_m3s": turbine
            }]
        }));
        models.push(json!({
            "hydro_id": h,
            "selection_mode": "stage_ranges",
            "stage_ranges": [{
                "start_stage_id": 0, "end_stage_id": null,
                "model": "constant_productivity", "productivity_mw_per_m3s": 1.0
            }]
        }));
        storage.push(json!({ "hydro_id": h, "value_hm3": capacity * (0.2 + 0.3 * draws.next()) }));
    }
    (
        json!({ "hydros": hydros }),
        json!({ "production_models": models }),
        json!({ "storage": storage, "filling_storage": [] }),
    )
}

fn config_json(spec: &ExampleSpec) -> Value {
    let simulation = if spec.scenarios > 0 {
        json!({ "enabled": true,
                "selection": { "method": "sampled", "num_scenarios": spec.scenarios } })
    } else {
        json!({ "enabled": false })
    };
    json!({
        "training": {
            "selection": { "method": "sampled", "forward_passes": spec.forward_passes },
            "stopping_rules": [{ "type": "iteration_limit", "limit": spec.iterations }],
            "scenario_source": {
                "seed": spec.seed,
                "inflow": { "scheme": "in_sample" },
                "load": { "scheme": "in_sample" },
                "ncs": { "scheme": "in_sample" }
            }
        },
        "simulation": simulation,
        // Negative sampled inflows are absorbed by a penalised slack.
        "modeling": { "inflow_non_negativity": { "method": "penalty" } }
    })
}

/// Write the case of `spec` into `dir` (created; existing files replaced).
///
/// # Errors
/// A dimension is 0 or too large, or a file cannot be written.
pub fn write_case(dir: &Path, spec: &ExampleSpec) -> Result<(), ExampleError> {
    if [
        spec.hydros,
        spec.stages,
        spec.openings,
        spec.forward_passes,
        spec.iterations,
    ]
    .contains(&0)
    {
        return Err(ExampleError::Spec(
            "hydros, stages, openings, forward passes and iterations must be at least 1".into(),
        ));
    }
    if spec.hydros > 10_000 || spec.stages > 1200 || spec.openings > 10_000 {
        return Err(ExampleError::Spec(
            "at most 10000 hydros, 1200 stages and 10000 openings".into(),
        ));
    }
    let mut draws = Draws(spec.seed);
    let (hydros, models, initial) = system_json(spec, &mut draws);
    let total_turbine: f64 = hydros["hydros"].as_array().map_or(0.0, |a| {
        a.iter()
            .filter_map(|h| h["generation"]["max_generation_mw"].as_f64())
            .sum()
    });
    write_json(dir, "config.json", &config_json(spec))?;
    write_json(dir, "stages.json", &stages_json(spec))?;
    write_json(dir, "initial_conditions.json", &initial)?;
    write_json(dir, "system/hydros.json", &hydros)?;
    write_json(dir, "system/hydro_production_models.json", &models)?;
    write_json(dir, "system/lines.json", &json!({ "lines": [] }))?;
    write_json(
        dir,
        "system/buses.json",
        &json!({ "buses": [{ "id": 0, "name": "SIN", "operational_start_date": "2020-01-01",
                             "deficit_segments": [{ "depth_mw": null, "cost": 7500.0 }] }] }),
    )?;
    let thermal = |id: usize, mw: f64, cost: f64| {
        json!({ "id": id, "name": format!("UTE{id}"), "operational_start_date": "2020-01-01",
                "bus_id": 0, "generation": { "min_mw": 0.0, "max_mw": mw }, "cost_per_mwh": cost })
    };
    write_json(
        dir,
        "system/thermals.json",
        &json!({ "thermals": [thermal(0, 0.3 * total_turbine, 5.0), thermal(1, 0.3 * total_turbine, 10.0)] }),
    )?;
    write_json(
        dir,
        "penalties.json",
        &json!({
            "bus": { "deficit_segments": [{ "depth_mw": null, "cost": 7500.0 }], "excess_cost": 100.0 },
            "line": { "exchange_cost": 2.0 },
            "hydro": {
                "spillage_cost": 0.01, "turbined_cost": 0.05, "diversion_cost": 0.1,
                "storage_violation_below_cost": 10000.0, "filling_target_violation_cost": 6000.0,
                "turbined_violation_below_cost": 500.0, "outflow_violation_below_cost": 500.0,
                "outflow_violation_above_cost": 500.0, "generation_violation_below_cost": 1000.0,
                "evaporation_violation_cost": 5000.0, "water_withdrawal_violation_cost": 1000.0
            },
            "non_controllable_source": { "curtailment_cost": 0.005 }
        }),
    )?;
    let mut inflows = Vec::new();
    for h in 0..spec.hydros {
        let base = 20.0 + 20.0 * draws.next();
        for t in 0..spec.stages {
            let season = 1.0 + 0.5 * ((t % 12) as f64 * std::f64::consts::PI / 6.0).cos();
            let mean = base * season;
            inflows.push((i32_of(h)?, i32_of(t)?, mean, 0.3 * mean));
        }
    }
    write_stats(
        &dir.join("scenarios/inflow_seasonal_stats.parquet"),
        "hydro_id",
        ("mean_m3s", "std_m3s"),
        &inflows,
    )?;
    let load: Vec<(i32, i32, f64, f64)> = (0..spec.stages)
        .map(|t| Ok((0, i32_of(t)?, 0.9 * total_turbine, 0.05 * total_turbine)))
        .collect::<Result<_, ExampleError>>()?;
    write_stats(
        &dir.join("scenarios/load_seasonal_stats.parquet"),
        "bus_id",
        ("mean_mw", "std_mw"),
        &load,
    )
}

fn i32_of(v: usize) -> Result<i32, ExampleError> {
    i32::try_from(v).map_err(|_| ExampleError::Spec(format!("{v} does not fit an id")))
}
