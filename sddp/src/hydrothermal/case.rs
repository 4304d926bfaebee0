//! The case file: a one-bus hydrothermal dispatch problem as JSON, validated
//! into a [`Case`] with messages that name the offending field.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use super::sampling;

/// A number, or one number per stage.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum PerStage {
    /// The same value in every stage.
    Scalar(f64),
    /// One value per stage.
    List(Vec<f64>),
}

/// A hydro plant as written in the file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HydroFile {
    /// Unique name.
    pub name: String,
    /// Lower volume bound (default 0).
    #[serde(default)]
    pub min_volume: f64,
    /// Upper volume bound.
    pub max_volume: f64,
    /// Volume before stage 1.
    pub initial_volume: f64,
    /// Turbine limit per stage (null: unlimited).
    #[serde(default)]
    pub max_turbined: Option<f64>,
    /// Energy per unit of turbined water.
    pub productivity: f64,
    /// Plant receiving this one's turbined and spilled water (null: none).
    #[serde(default)]
    pub downstream: Option<String>,
    /// Whether spilling is allowed (default true).
    #[serde(default = "yes")]
    pub spill_allowed: bool,
    /// Cost per unit spilled (default 0).
    #[serde(default)]
    pub spill_cost: f64,
}

fn yes() -> bool {
    true
}

/// A thermal plant as written in the file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThermalFile {
    /// Name.
    pub name: String,
    /// Generation limit per stage (null: unlimited).
    #[serde(default)]
    pub capacity: Option<f64>,
    /// Cost per unit generated.
    pub cost: PerStage,
}

/// A deficit tier as written in the file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeficitFile {
    /// Cost per unit of unserved demand.
    pub cost: f64,
    /// Size of the tier (null: unlimited).
    #[serde(default)]
    pub max: Option<f64>,
}

/// One opening of a stage.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpeningFile {
    /// Probability of the opening.
    pub probability: f64,
    /// Inflow of each hydro.
    pub inflows: Vec<f64>,
}

/// The openings of one stage.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageFile {
    /// Openings.
    pub openings: Vec<OpeningFile>,
}

/// A generated inflow model.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InflowModelFile {
    /// Only `lognormal`.
    pub kind: String,
    /// Mean inflow, per stage then per hydro.
    pub mean: Vec<Vec<f64>>,
    /// Standard deviation, per stage then per hydro.
    pub std: Vec<Vec<f64>>,
    /// Equiprobable openings per stage.
    pub openings: usize,
    /// Seed of the noise.
    pub seed: u64,
}

/// Training defaults stored in the case.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainingFile {
    /// Forward passes per iteration.
    pub forward_passes: Option<usize>,
    /// Iteration limit.
    pub iterations: Option<usize>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Wall-clock limit.
    pub time_limit_secs: Option<f64>,
    /// Relative lower-bound improvement below which training stalls.
    pub stall_tolerance: Option<f64>,
    /// Window of the stall rule.
    pub stall_iterations: Option<usize>,
}

/// The case file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// Case name (default: the file name).
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Number of stages.
    pub stages: usize,
    /// Hydro plants.
    pub hydros: Vec<HydroFile>,
    /// Thermal plants.
    pub thermals: Vec<ThermalFile>,
    /// Demand per stage.
    pub demand: PerStage,
    /// Deficit tiers.
    #[serde(default)]
    pub deficit: Vec<DeficitFile>,
    /// Explicit openings per stage.
    #[serde(default)]
    pub inflows: Option<Vec<StageFile>>,
    /// Generated openings.
    #[serde(default)]
    pub inflow_model: Option<InflowModelFile>,
    /// Training defaults.
    #[serde(default)]
    pub training: Option<TrainingFile>,
}

/// A validated hydro plant.
#[derive(Clone, Debug, PartialEq)]
pub struct Hydro {
    /// Name.
    pub name: String,
    /// Lower volume bound.
    pub min_volume: f64,
    /// Upper volume bound.
    pub max_volume: f64,
    /// Initial volume.
    pub initial_volume: f64,
    /// Turbine limit (`f64::INFINITY` when unlimited).
    pub max_turbined: f64,
    /// Productivity.
    pub productivity: f64,
    /// Index of the downstream plant.
    pub downstream: Option<usize>,
    /// Spill allowed.
    pub spill_allowed: bool,
    /// Spill cost.
    pub spill_cost: f64,
}

/// A validated thermal plant.
#[derive(Clone, Debug, PartialEq)]
pub struct Thermal {
    /// Name.
    pub name: String,
    /// Capacity (`f64::INFINITY` when unlimited).
    pub capacity: f64,
    /// Cost per stage.
    pub cost: Vec<f64>,
}

/// A validated deficit tier.
#[derive(Clone, Debug, PartialEq)]
pub struct Deficit {
    /// Cost.
    pub cost: f64,
    /// Size (`f64::INFINITY` when unlimited).
    pub max: f64,
}

/// Where the openings come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Uncertainty {
    /// Listed in the file: per stage, per opening, probability and inflows.
    Explicit {
        /// Probabilities per stage per opening.
        probabilities: Vec<Vec<f64>>,
        /// Inflows per stage per opening per hydro.
        inflows: Vec<Vec<Vec<f64>>>,
    },
    /// Lognormal, generated from `(seed, stage, opening)`.
    Lognormal {
        /// Mean per stage per hydro.
        mean: Vec<Vec<f64>>,
        /// Standard deviation per stage per hydro.
        std: Vec<Vec<f64>>,
        /// Openings per stage.
        openings: usize,
        /// Seed.
        seed: u64,
    },
}

/// A validated case.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Number of stages.
    pub stages: usize,
    /// Hydros.
    pub hydros: Vec<Hydro>,
    /// Thermals.
    pub thermals: Vec<Thermal>,
    /// Demand per stage.
    pub demand: Vec<f64>,
    /// Deficit tiers.
    pub deficit: Vec<Deficit>,
    /// Openings.
    pub uncertainty: Uncertainty,
    /// Training defaults from the file.
    pub training: TrainingFile,
}

/// Most numbers the opening tree may hold (2 GiB of `f64`): more is refused
/// while reading the case, naming the field, instead of exhausting memory.
pub const MAX_TREE_VALUES: usize = 1 << 28;

/// Most stages a case may have (per-stage data is expanded to one value
/// per stage before anything else is sized, so the count is bounded first).
pub const MAX_STAGES: usize = 100_000;

/// Why a case was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The file cannot be read.
    #[error("cannot read case file {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The JSON does not match the schema.
    #[error("{origin}: {message}")]
    Syntax {
        /// File.
        origin: String,
        /// serde's message (names the field, line and column).
        message: String,
    },
    /// A value is invalid; `field` is a path such as `hydros[1].downstream`.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// File.
        origin: String,
        /// Field path.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

struct Checker<'a> {
    origin: &'a str,
}

impl Checker<'_> {
    fn fail<T>(
        &self,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, CaseError> {
        Err(CaseError::Invalid {
            origin: self.origin.to_string(),
            field: field.into(),
            message: message.into(),
        })
    }

    fn finite(&self, field: &str, v: f64) -> Result<f64, CaseError> {
        if v.is_finite() {
            Ok(v)
        } else {
            self.fail(field, format!("{v} is not a finite number"))
        }
    }

    fn non_negative(&self, field: &str, v: f64) -> Result<f64, CaseError> {
        let v = self.finite(field, v)?;
        if v < 0.0 {
            return self.fail(field, format!("{v} is negative; it must be >= 0"));
        }
        Ok(v)
    }

    fn limit(&self, field: &str, v: Option<f64>) -> Result<f64, CaseError> {
        v.map_or(Ok(f64::INFINITY), |v| self.non_negative(field, v))
    }

    fn per_stage(&self, field: &str, v: &PerStage, stages: usize) -> Result<Vec<f64>, CaseError> {
        let list = match v {
            PerStage::Scalar(x) => vec![*x; stages],
            PerStage::List(l) if l.len() == stages => l.clone(),
            PerStage::List(l) => {
                return self.fail(
                    field,
                    format!(
                        "{} values for {stages} stages: give one number or one per stage",
                        l.len()
                    ),
                )
            }
        };
        for (t, x) in list.iter().enumerate() {
            self.non_negative(&format!("{field}[{t}]"), *x)?;
        }
        Ok(list)
    }

    /// The hydro plants: unique non-empty names, volumes in order, known
    /// downstream plants other than the plant itself.
    fn hydros(&self, files: &[HydroFile]) -> Result<Vec<Hydro>, CaseError> {
        if files.is_empty() {
            return self.fail("hydros", "at least one hydro plant is needed");
        }
        let names: Vec<&str> = files.iter().map(|h| h.name.as_str()).collect();
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return self.fail(format!("hydros[{i}].name"), "must not be empty");
            }
            if names[..i].contains(name) {
                return self.fail(
                    format!("hydros[{i}].name"),
                    format!("'{name}' is used by two hydros"),
                );
            }
        }
        let mut hydros = Vec::with_capacity(files.len());
        for (i, h) in files.iter().enumerate() {
            let p = |k: &str| format!("hydros[{i}].{k}");
            let min = self.non_negative(&p("min_volume"), h.min_volume)?;
            let max = self.non_negative(&p("max_volume"), h.max_volume)?;
            if max < min {
                return self.fail(p("max_volume"), format!("{max} is below min_volume {min}"));
            }
            let init = self.finite(&p("initial_volume"), h.initial_volume)?;
            if init < min || init > max {
                return self.fail(
                    p("initial_volume"),
                    format!("{init} is outside [{min}, {max}]"),
                );
            }
            let downstream = match &h.downstream {
                None => None,
                Some(d) => match names.iter().position(|n| n == d) {
                    Some(j) if j == i => {
                        return self.fail(p("downstream"), format!("'{d}' is the plant itself"))
                    }
                    Some(j) => Some(j),
                    None => {
                        return self.fail(
                            p("downstream"),
                            format!("unknown hydro '{d}' (hydros are: {})", names.join(", ")),
                        )
                    }
                },
            };
            hydros.push(Hydro {
                name: h.name.clone(),
                min_volume: min,
                max_volume: max,
                initial_volume: init,
                max_turbined: self.limit(&p("max_turbined"), h.max_turbined)?,
                productivity: self.non_negative(&p("productivity"), h.productivity)?,
                downstream,
                spill_allowed: h.spill_allowed,
                spill_cost: self.non_negative(&p("spill_cost"), h.spill_cost)?,
            });
        }
        Ok(hydros)
    }

    /// No plant's water flows back to it through its downstream chain.
    fn no_cascade_cycle(&self, hydros: &[Hydro]) -> Result<(), CaseError> {
        for start in 0..hydros.len() {
            let mut seen = vec![start];
            let mut at = start;
            while let Some(d) = hydros[at].downstream {
                if d == start {
                    let path: Vec<&str> = seen
                        .iter()
                        .chain([&start])
                        .map(|&i| hydros[i].name.as_str())
                        .collect();
                    return self.fail("hydros", format!("cascade cycle {}", path.join(" -> ")));
                }
                if seen.contains(&d) {
                    break;
                }
                seen.push(d);
                at = d;
            }
        }
        Ok(())
    }

    /// Explicit openings: one list per stage, inflows for every hydro,
    /// probabilities that sum to 1.
    fn explicit_openings(
        &self,
        stages: &[StageFile],
        t_count: usize,
        nh: usize,
    ) -> Result<Uncertainty, CaseError> {
        if stages.len() != t_count {
            return self.fail(
                "inflows",
                format!("{} entries for {t_count} stages", stages.len()),
            );
        }
        let mut probabilities = Vec::with_capacity(t_count);
        let mut inflows = Vec::with_capacity(t_count);
        for (t, st) in stages.iter().enumerate() {
            if st.openings.is_empty() {
                return self.fail(
                    format!("inflows[{t}].openings"),
                    "at least one opening is needed",
                );
            }
            let mut p_sum = 0.0;
            let mut ps = Vec::new();
            let mut flows = Vec::new();
            for (k, o) in st.openings.iter().enumerate() {
                let p = format!("inflows[{t}].openings[{k}]");
                let pr = self.non_negative(&format!("{p}.probability"), o.probability)?;
                p_sum += pr;
                if o.inflows.len() != nh {
                    return self.fail(
                        format!("{p}.inflows"),
                        format!("{} values for {nh} hydros", o.inflows.len()),
                    );
                }
                for (h, a) in o.inflows.iter().enumerate() {
                    self.non_negative(&format!("{p}.inflows[{h}]"), *a)?;
                }
                ps.push(pr);
                flows.push(o.inflows.clone());
            }
            if (p_sum - 1.0).abs() > 1e-9 {
                let shown = (p_sum * 1e12).round() / 1e12;
                return self.fail(
                    format!("inflows[{t}].openings"),
                    format!("probabilities sum to {shown}, not 1"),
                );
            }
            probabilities.push(ps);
            inflows.push(flows);
        }
        Ok(Uncertainty::Explicit {
            probabilities,
            inflows,
        })
    }

    /// A lognormal inflow model: a mean and a deviation per stage and hydro,
    /// and an opening tree of bounded size.
    fn lognormal_model(
        &self,
        m: InflowModelFile,
        t_count: usize,
        nh: usize,
    ) -> Result<Uncertainty, CaseError> {
        if m.kind != "lognormal" {
            return self.fail(
                "inflow_model.kind",
                format!("'{}' is not supported (only \"lognormal\")", m.kind),
            );
        }
        if m.openings == 0 {
            return self.fail("inflow_model.openings", "must be at least 1");
        }
        let values = m
            .openings
            .checked_mul(t_count)
            .and_then(|v| v.checked_mul(nh))
            .filter(|&v| v <= MAX_TREE_VALUES);
        if values.is_none() {
            return self.fail(
                "inflow_model.openings",
                format!(
                    "{} openings x {t_count} stages x {nh} hydros is more than the {} \
                     inflows an opening tree may hold; use fewer openings",
                    m.openings, MAX_TREE_VALUES
                ),
            );
        }
        for (key, table) in [("mean", &m.mean), ("std", &m.std)] {
            if table.len() != t_count {
                return self.fail(
                    format!("inflow_model.{key}"),
                    format!("{} rows for {t_count} stages", table.len()),
                );
            }
            for (t, row) in table.iter().enumerate() {
                if row.len() != nh {
                    return self.fail(
                        format!("inflow_model.{key}[{t}]"),
                        format!("{} values for {nh} hydros", row.len()),
                    );
                }
                for (h, v) in row.iter().enumerate() {
                    self.non_negative(&format!("inflow_model.{key}[{t}][{h}]"), *v)?;
                }
            }
        }
        Ok(Uncertainty::Lognormal {
            mean: m.mean,
            std: m.std,
            openings: m.openings,
            seed: m.seed,
        })
    }

    /// The case's training defaults: positive counts and limits.
    fn training(&self, training: TrainingFile) -> Result<TrainingFile, CaseError> {
        if let Some(0) = training.forward_passes {
            return self.fail("training.forward_passes", "must be at least 1");
        }
        if let Some(0) = training.iterations {
            return self.fail("training.iterations", "must be at least 1");
        }
        if let Some(t) = training.time_limit_secs {
            if !(t.is_finite() && t > 0.0 && t <= cobre_shm::config::MAX_SECS) {
                return self.fail(
                    "training.time_limit_secs",
                    format!(
                        "must be a positive number of seconds, at most {} (a year)",
                        cobre_shm::config::MAX_SECS
                    ),
                );
            }
        }
        if let Some(tol) = training.stall_tolerance {
            if !(tol.is_finite() && tol >= 0.0) {
                return self.fail("training.stall_tolerance", "must be a number >= 0");
            }
        }
        Ok(training)
    }
}

impl Case {
    /// Read and validate a case file.
    ///
    /// # Errors
    /// [`CaseError`] naming the file and field.
    pub fn load(path: &str) -> Result<Self, CaseError> {
        let text = std::fs::read_to_string(path).map_err(|source| CaseError::Io {
            path: path.to_string(),
            source,
        })?;
        let stem = std::path::Path::new(path)
            .file_stem()
            .map_or_else(|| "case".to_string(), |s| s.to_string_lossy().into_owned());
        Self::parse(&text, path, &stem)
    }

    /// Parse and validate case JSON; `default_name` is used when the file
    /// has no `name`.
    ///
    /// # Errors
    /// [`CaseError`] naming `origin` and the field.
    pub fn parse(text: &str, origin: &str, default_name: &str) -> Result<Self, CaseError> {
        let file: CaseFile = serde_json::from_str(text).map_err(|e| CaseError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        Self::validate(file, origin, default_name)
    }

    /// Validate a parsed file.
    ///
    /// # Errors
    /// [`CaseError::Invalid`] for the first problem found.
    pub fn validate(f: CaseFile, origin: &str, default_name: &str) -> Result<Self, CaseError> {
        let c = Checker { origin };
        let t_count = f.stages;
        if t_count == 0 {
            return c.fail("stages", "must be at least 1");
        }
        if t_count > MAX_STAGES {
            return c.fail(
                "stages",
                format!(
                    "{t_count} is more than the {MAX_STAGES} stages a case may have; \
                     shorten the horizon or use longer stages"
                ),
            );
        }
        let hydros = c.hydros(&f.hydros)?;
        c.no_cascade_cycle(&hydros)?;
        let mut thermals = Vec::with_capacity(f.thermals.len());
        for (i, th) in f.thermals.iter().enumerate() {
            thermals.push(Thermal {
                name: th.name.clone(),
                capacity: c.limit(&format!("thermals[{i}].capacity"), th.capacity)?,
                cost: c.per_stage(&format!("thermals[{i}].cost"), &th.cost, t_count)?,
            });
        }
        let demand = c.per_stage("demand", &f.demand, t_count)?;
        let mut deficit = Vec::with_capacity(f.deficit.len());
        for (i, d) in f.deficit.iter().enumerate() {
            deficit.push(Deficit {
                cost: c.non_negative(&format!("deficit[{i}].cost"), d.cost)?,
                max: c.limit(&format!("deficit[{i}].max"), d.max)?,
            });
        }
        let nh = hydros.len();
        let uncertainty = match (f.inflows, f.inflow_model) {
            (Some(_), Some(_)) => {
                return c.fail("inflows", "give either inflows or inflow_model, not both")
            }
            (None, None) => {
                return c.fail(
                    "inflows",
                    "missing: give inflows (explicit openings) or inflow_model",
                )
            }
            (Some(stages), None) => c.explicit_openings(&stages, t_count, nh)?,
            (None, Some(m)) => c.lognormal_model(m, t_count, nh)?,
        };
        let training = c.training(f.training.unwrap_or_default())?;
        Ok(Self {
            name: f
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| default_name.to_string()),
            description: f.description.unwrap_or_default(),
            stages: t_count,
            hydros,
            thermals,
            demand,
            deficit,
            uncertainty,
            training,
        })
    }

    /// Number of openings of stage `t`.
    #[must_use]
    pub fn openings(&self, t: usize) -> usize {
        match &self.uncertainty {
            Uncertainty::Explicit { probabilities, .. } => probabilities[t].len(),
            Uncertainty::Lognormal { openings, .. } => *openings,
        }
    }

    /// Probability of opening `k` of stage `t`.
    #[must_use]
    pub fn probability(&self, t: usize, k: usize) -> f64 {
        match &self.uncertainty {
            Uncertainty::Explicit { probabilities, .. } => probabilities[t][k],
            Uncertainty::Lognormal { openings, .. } => 1.0 / *openings as f64,
        }
    }

    /// Offset (in `f64`s) of stage `t` in the opening tree, and its total size.
    #[must_use]
    pub fn tree_offsets(&self) -> (Vec<usize>, usize) {
        let nh = self.hydros.len();
        let mut off = Vec::with_capacity(self.stages);
        let mut total = 0;
        for t in 0..self.stages {
            off.push(total);
            total += self.openings(t) * nh;
        }
        (off, total)
    }

    /// Write the inflows of every opening of stage `t` into `out`
    /// (opening-major, `openings(t) × hydros` values). Depends only on the
    /// case, so any rank can produce any stage.
    pub fn fill_stage_inflows(&self, t: usize, out: &mut [f64]) {
        let nh = self.hydros.len();
        match &self.uncertainty {
            Uncertainty::Explicit { inflows, .. } => {
                for (k, row) in inflows[t].iter().enumerate() {
                    out[k * nh..(k + 1) * nh].copy_from_slice(row);
                }
            }
            Uncertainty::Lognormal {
                mean,
                std,
                openings,
                seed,
            } => {
                for k in 0..*openings {
                    for h in 0..nh {
                        out[k * nh + h] = sampling::lognormal(
                            mean[t][h],
                            std[t][h],
                            [*seed, t as u64, k as u64, h as u64],
                        );
                    }
                }
            }
        }
    }
}

/// The classic three-stage hydrothermal tutorial (SDDP.jl): one reservoir
/// 0–200 starting full, inflows 0/50/100 equiprobable, demand 150, thermal
/// cost 50/100/150 by stage. Optimal expected cost 8333.33…
pub const TUTORIAL_CASE: &str = include_str!("../../../examples/hydro_thermal_tutorial.json");
