//! The coverage cases: cobre-cli 0.18's `1dtoy` template, cobre-sddp 0.18's
//! test fixtures (read from the cargo registry's sources) and the case
//! `generate-cobre-case` writes; each loaded as `cobre-shm run` loads it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cobre_comm::LocalBackend;

use crate::generate::{write_case, ExampleSpec};
use crate::model::{load_study, LoadedStudy};
use crate::RunOptions;

/// A scratch directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cobre-shm-model-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The source directory of registry crate `krate` (`name-version`).
fn registry_crate(krate: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let src = home.join("registry/src");
    let found = std::fs::read_dir(&src)
        .into_iter()
        .flatten()
        .flatten()
        .map(|index| index.path().join(krate))
        .find(|p| p.is_dir());
    found.unwrap_or_else(|| {
        panic!(
            "{krate} not found under {} (cargo fetch it: the coverage cases live there)",
            src.display()
        )
    })
}

/// A case of the coverage set: where it lives (a generated case keeps its
/// scratch directory alive).
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    _scratch: Option<TempDir>,
}

/// cobre-cli 0.18's `cobre init` template.
pub fn toy() -> Case {
    Case {
        name: "1dtoy".into(),
        dir: registry_crate("cobre-cli-0.18.0").join("templates/1dtoy"),
        _scratch: None,
    }
}

/// A deck of cobre-sddp 0.18's `tests/fixtures`.
pub fn fixture(name: &str) -> Case {
    Case {
        name: name.into(),
        dir: registry_crate("cobre-sddp-0.18.0")
            .join("tests/fixtures")
            .join(name),
        _scratch: None,
    }
}

/// What `cobre-shm generate-cobre-case` writes by default.
pub fn generated() -> Case {
    generated_with("generated", |_| {})
}

/// The generated case with its `config.json` edited by `edit`.
pub fn generated_with(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Case {
    let scratch = TempDir::new(name);
    let dir = scratch.path().join("case");
    write_case(&dir, &ExampleSpec::default()).expect("write the generated case");
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).expect("read config.json");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("parse config.json");
    edit(&mut config);
    std::fs::write(&path, config.to_string()).expect("write config.json");
    Case {
        name: name.into(),
        dir,
        _scratch: Some(scratch),
    }
}

/// Load `case` on one process, outputs (none are written) under `out`.
pub fn load(case: &Case, out: &Path) -> LoadedStudy {
    let opts = RunOptions {
        case_dir: case.dir.clone(),
        output: Some(out.to_path_buf()),
        threads: 1,
        quiet: true,
        backend: "local",
        engine: crate::Engine::Shared,
    };
    match load_study(&LocalBackend, &opts) {
        Ok(study) => study,
        Err(e) => panic!("cannot load {}: {e}", case.name),
    }
}

/// Write a Parquet table of INT32 and DOUBLE columns.
fn write_parquet(path: &Path, ints: &[(&str, Vec<i32>)], floats: &[(&str, Vec<f64>)]) {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (name, values) in ints {
        fields.push(Field::new(*name, DataType::Int32, false));
        columns.push(Arc::new(Int32Array::from(values.clone())));
    }
    for (name, values) in floats {
        fields.push(Field::new(*name, DataType::Float64, false));
        columns.push(Arc::new(Float64Array::from(values.clone())));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("a record batch");
    let file = std::fs::File::create(path).expect("create a parquet file");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("a parquet writer");
    writer.write(&batch).expect("write the batch");
    writer.close().expect("close the parquet file");
}

/// The generated case made to use what the others do not: PAR(2)/PAR(1)
/// inflows (lags in the state) so wide that the truncation method clamps
/// negative inflows, and two stochastic non-controllable sources, one
/// curtailable, one must-run that enters service at the third stage.
pub fn rich() -> Case {
    rich_from(Start::January)
}

/// [`rich`] starting mid-January: the first stage closes a partly observed
/// month, so upstream seeds the inflow-lag accumulator with the observed
/// part.
pub fn rich_mid_month() -> Case {
    rich_from(Start::MidJanuary)
}

/// [`rich`] with January split in two stages: the first does not close its
/// month, so the lag accumulator carries into the second.
pub fn rich_split_january() -> Case {
    rich_from(Start::SplitJanuary)
}

/// How the rich case's first stages cover January.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    January,
    MidJanuary,
    SplitJanuary,
}

fn rich_from(start: Start) -> Case {
    let mid_month = start == Start::MidJanuary;
    let name = match start {
        Start::January => "rich",
        Start::MidJanuary => "rich-mid-month",
        Start::SplitJanuary => "rich-split-january",
    };
    let case = generated_with(name, |c| {
        c["modeling"]["inflow_non_negativity"] = serde_json::json!({ "method": "truncation" });
    });
    let (hydros, stages) = (2, 6);
    let dir = &case.dir;
    // Monthly seasons (PAR lags need them), and CVaR at the first stages.
    let path = dir.join("stages.json");
    let text = std::fs::read_to_string(&path).expect("read stages.json");
    let mut doc: serde_json::Value = serde_json::from_str(&text).expect("parse stages.json");
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seasons: Vec<serde_json::Value> = months
        .iter()
        .enumerate()
        .map(|(i, m)| serde_json::json!({ "id": i, "month_start": i + 1, "label": m }))
        .collect();
    doc["season_definitions"] = serde_json::json!({ "cycle_type": "monthly", "seasons": seasons });
    if let Some(list) = doc["stages"].as_array_mut() {
        for (t, stage) in list.iter_mut().enumerate() {
            stage["season_id"] = serde_json::json!(t % 12);
            if start == Start::SplitJanuary {
                // Stages: Jan 1–16, Jan 16–Feb 1, then February to May.
                let (from, to, hours, season) = match t {
                    0 => (
                        "2024-01-01".to_string(),
                        "2024-01-16".to_string(),
                        15 * 24,
                        0,
                    ),
                    1 => (
                        "2024-01-16".to_string(),
                        "2024-02-01".to_string(),
                        16 * 24,
                        0,
                    ),
                    _ => (
                        format!("2024-{:02}-01", t),
                        format!("2024-{:02}-01", t + 1),
                        720,
                        t - 1,
                    ),
                };
                stage["start_date"] = serde_json::json!(from);
                stage["end_date"] = serde_json::json!(to);
                stage["blocks"][0]["hours"] = serde_json::json!(hours);
                stage["season_id"] = serde_json::json!(season);
            }
            if t == 0 && mid_month {
                stage["start_date"] = serde_json::json!("2024-01-16");
                stage["blocks"][0]["hours"] = serde_json::json!(16 * 24);
            }
            if t < 3 {
                stage["risk_measure"] =
                    serde_json::json!({ "cvar": { "alpha": 0.5, "lambda": 0.4 } });
            }
        }
    }
    std::fs::write(&path, doc.to_string()).expect("write stages.json");
    // The two months before the study seed the inflow lags.
    let path = dir.join("initial_conditions.json");
    let text = std::fs::read_to_string(&path).expect("read initial_conditions.json");
    let mut initial: serde_json::Value = serde_json::from_str(&text).expect("parse it");
    let mut observed = Vec::new();
    for h in 0..hydros {
        for (start, end, value) in [
            ("2023-11-01", "2023-12-01", 20.0 + 3.0 * f64::from(h)),
            ("2023-12-01", "2024-01-01", 25.0 + 3.0 * f64::from(h)),
        ] {
            observed.push(serde_json::json!({
                "hydro_id": h, "start_date": start, "end_date": end, "value_m3s": value
            }));
        }
    }
    if mid_month {
        for h in 0..hydros {
            observed.push(serde_json::json!({
                "hydro_id": h, "start_date": "2024-01-01", "end_date": "2024-01-16",
                "value_m3s": 40.0 + f64::from(h)
            }));
        }
    }
    initial["recent_observations"] = serde_json::Value::Array(observed);
    std::fs::write(&path, initial.to_string()).expect("write initial_conditions.json");
    let mut ids = Vec::new();
    let mut stage_ids = Vec::new();
    let mut means = Vec::new();
    let mut stds = Vec::new();
    for h in 0..hydros {
        for t in 0..stages {
            ids.push(h);
            stage_ids.push(t);
            let mean = 30.0 + 5.0 * f64::from(h) + 4.0 * f64::from(t);
            means.push(mean);
            stds.push(0.9 * mean);
        }
    }
    write_parquet(
        &dir.join("scenarios/inflow_seasonal_stats.parquet"),
        &[("hydro_id", ids.clone()), ("stage_id", stage_ids.clone())],
        &[("mean_m3s", means), ("std_m3s", stds)],
    );
    // Hydro 0: PAR(2); hydro 1: PAR(1).
    let (mut ar_h, mut ar_t, mut ar_lag, mut ar_c) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in 0..stages {
        for (h, lags) in [(0, vec![0.5, 0.2]), (1, vec![0.6])] {
            for (l, c) in lags.into_iter().enumerate() {
                ar_h.push(h);
                ar_t.push(t);
                ar_lag.push(i32::try_from(l + 1).expect("small"));
                ar_c.push(c);
            }
        }
    }
    write_parquet(
        &dir.join("scenarios/inflow_ar_coefficients.parquet"),
        &[("hydro_id", ar_h), ("stage_id", ar_t), ("lag", ar_lag)],
        &[("coefficient", ar_c)],
    );
    let ncs = serde_json::json!({ "non_controllable_sources": [
        { "id": 0, "name": "WIND", "operational_start_date": "2020-01-01", "bus_id": 0,
          "max_generation_mw": 40.0, "curtailment_cost": 0.01 },
        { "id": 1, "name": "SMALL", "operational_start_date": "2020-01-01", "bus_id": 0,
          "entry_stage_id": 2, "max_generation_mw": 15.0, "allow_curtailment": false }
    ]});
    std::fs::write(
        dir.join("system/non_controllable_sources.json"),
        ncs.to_string(),
    )
    .expect("write the sources");
    let mut n_ids = Vec::new();
    let mut n_stages = Vec::new();
    let mut n_mean = Vec::new();
    let mut n_std = Vec::new();
    for k in 0..2 {
        for t in 0..stages {
            n_ids.push(k);
            n_stages.push(t);
            n_mean.push(0.5 + 0.1 * f64::from(k));
            n_std.push(0.35);
        }
    }
    write_parquet(
        &dir.join("scenarios/non_controllable_stats.parquet"),
        &[("ncs_id", n_ids), ("stage_id", n_stages)],
        &[("mean", n_mean), ("std", n_std)],
    );
    case
}

/// Days from 1970-01-01 to `y-m-d` (proleptic Gregorian).
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i32::try_from(m).expect("month");
    let d = i32::try_from(d).expect("day");
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// [`rich`] with its forward inflows drawn from a monthly inflow history
/// (2014–2023) instead of the opening tree.
pub fn rich_historical() -> Case {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Date32Array, Float64Array, Int32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    let mut case = rich();
    case.name = "rich-historical".into();
    let path = case.dir.join("config.json");
    let text = std::fs::read_to_string(&path).expect("read config.json");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("parse config.json");
    config["training"]["scenario_source"]["inflow"] = serde_json::json!({ "scheme": "historical" });
    std::fs::write(&path, config.to_string()).expect("write config.json");
    let (mut ids, mut starts, mut ends, mut values) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for h in 0..2 {
        for year in 2014..2024 {
            for month in 1..=12u32 {
                let (ny, nm) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                ids.push(h);
                starts.push(days_from_civil(year, month, 1));
                ends.push(days_from_civil(ny, nm, 1));
                let wave =
                    f64::from((year * 7 + i32::try_from(month).expect("month") * 3 + h) % 11);
                values.push(20.0 + 4.0 * wave + 5.0 * f64::from(h));
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("hydro_id", DataType::Int32, false),
        Field::new("start_date", DataType::Date32, false),
        Field::new("end_date", DataType::Date32, false),
        Field::new("value_m3s", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(ids)),
        Arc::new(Date32Array::from(starts)),
        Arc::new(Date32Array::from(ends)),
        Arc::new(Float64Array::from(values)),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("a record batch");
    let file = std::fs::File::create(case.dir.join("scenarios/inflow_history.parquet"))
        .expect("create the history");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("a parquet writer");
    writer.write(&batch).expect("write the history");
    writer.close().expect("close the history");
    case
}

/// The generated case with its forward inflows and loads drawn from external
/// scenario files (five scenarios per stage).
pub fn generated_external() -> Case {
    let case = generated_with("external", |c| {
        c["training"]["scenario_source"]["inflow"] = serde_json::json!({ "scheme": "external" });
        c["training"]["scenario_source"]["load"] = serde_json::json!({ "scheme": "external" });
    });
    let spec = ExampleSpec::default();
    let (mut stage, mut scenario, mut entity, mut value) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut l_stage, mut l_scenario, mut l_bus, mut l_value) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in 0..i32::try_from(spec.stages).expect("stages") {
        for k in 0..5 {
            for h in 0..i32::try_from(spec.hydros).expect("hydros") {
                stage.push(t);
                scenario.push(k);
                entity.push(h);
                value.push(15.0 + 6.0 * f64::from((t * 5 + k * 3 + h) % 7));
            }
            l_stage.push(t);
            l_scenario.push(k);
            l_bus.push(0);
            l_value.push(60.0 + 5.0 * f64::from((t + 2 * k) % 5));
        }
    }
    write_parquet(
        &case.dir.join("scenarios/external_inflow_scenarios.parquet"),
        &[
            ("stage_id", stage),
            ("scenario_id", scenario),
            ("hydro_id", entity),
        ],
        &[("value_m3s", value)],
    );
    write_parquet(
        &case.dir.join("scenarios/external_load_scenarios.parquet"),
        &[
            ("stage_id", l_stage),
            ("scenario_id", l_scenario),
            ("bus_id", l_bus),
        ],
        &[("value_mw", l_value)],
    );
    case
}
