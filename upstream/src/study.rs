//! Loading: rank 0 reads the case directory once, the other ranks receive
//! what it read, and every rank builds the same upstream `StudySetup`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cobre_comm::Communicator;
use cobre_core::System;
use cobre_io::{BroadcastScalarParameter, Config, PolicyMode, SetupTimings};
use cobre_sddp::{
    BoundaryStateRequirements, EstimationPath, EstimationReport, PrepareHydroModelsResult,
    StudySetup,
};
use cobre_stochastic::{OpeningTree, StochasticContext};
use serde::{Deserialize, Serialize};

use crate::share;
use crate::{RunError, RunOptions};

/// What every phase needs: the communicator and where things go.
pub struct Context<'c, C> {
    /// The ranks.
    pub comm: &'c C,
    /// The options of the run.
    pub opts: &'c RunOptions,
    /// Output directory.
    pub output_dir: PathBuf,
    /// This host's name.
    pub hostname: String,
}

impl<'c, C: Communicator> Context<'c, C> {
    /// The context of `opts` on `comm`.
    pub fn new(comm: &'c C, opts: &'c RunOptions) -> Self {
        Self {
            comm,
            opts,
            output_dir: opts.output_dir(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        }
    }

    /// This rank is rank 0 (it reads the case and writes the outputs).
    pub fn root(&self) -> bool {
        self.comm.rank() == 0
    }

    /// A progress line on stderr from rank 0, unless quiet.
    pub fn say(&self, line: &str) {
        if self.root() && !self.opts.quiet {
            eprintln!("{line}");
        }
    }

    /// Fail on every rank alike when any rank's `local` failed: the failing
    /// rank returns its own error, the others name it.
    /// When several fail alike (every rank refusing the same study), only
    /// the lowest says why.
    pub fn in_step<T>(
        &self,
        local: Result<T, RunError>,
        phase: &'static str,
    ) -> Result<T, RunError> {
        match share::first_failed(self.comm, local.is_ok(), phase)? {
            None => local,
            Some(rank) if rank == self.comm.rank() => local,
            Some(rank) => Err(RunError::Peer { rank, phase }),
        }
    }
}

/// A user-supplied opening tree, as plain vectors for the wire.
#[derive(Serialize, Deserialize)]
struct WireTree {
    data: Vec<f64>,
    openings_per_stage: Vec<usize>,
    dim: usize,
}

/// What rank 0 read and every rank needs, sent as one value.
#[derive(Serialize, Deserialize)]
struct Shared {
    /// After rank 0's inflow-model estimation.
    system: System,
    /// `config.json` as written: every rank parses the same text.
    config_text: String,
    scalar_parameters: Vec<BroadcastScalarParameter>,
    boundary: BoundaryStateRequirements,
    tree: Option<WireTree>,
}

/// What only rank 0 keeps (for its output files).
struct RootOnly {
    config: Config,
    stochastic: StochasticContext,
    hydro_models: PrepareHydroModelsResult,
    estimation_report: Option<EstimationReport>,
    estimation_path: EstimationPath,
    timings: SetupTimings,
}

/// The study as every rank holds it.
pub struct Study {
    /// The (estimated) system.
    pub system: System,
    /// Upstream's setup: templates, cut pools, stochastic context.
    pub setup: StudySetup,
    /// `config.json`.
    pub config: Config,
    /// `training.enabled`.
    pub training_enabled: bool,
    /// The parameters the setup was built from (it keeps some of them
    /// private: solver profiles, stopping rules, cut management).
    pub params: cobre_sddp::setup::StudyParams,
    /// Rank 0: how the inflow model was obtained (for provenance).
    pub estimation: Option<(Option<EstimationReport>, EstimationPath)>,
    /// Rank 0: setup wall times (for `metadata.json`).
    pub timings: Option<SetupTimings>,
}

fn config_path(case_dir: &Path) -> PathBuf {
    case_dir.join("config.json")
}

/// Rank 0: read and prepare everything the study needs.
fn load_on_root(opts: &RunOptions, output_dir: &Path) -> Result<(Shared, RootOnly), RunError> {
    let case_dir = &opts.case_dir;
    if !case_dir.is_dir() {
        return Err(RunError::Load(cobre_io::LoadError::io(
            case_dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a case directory (give the folder holding config.json)",
            ),
        )));
    }
    let mut timings = SetupTimings::default();
    let start = Instant::now();
    let cobre_io::LoadedCase { system, artifacts } = cobre_io::load_case_with_artifacts(case_dir)?;
    let path = config_path(case_dir);
    let config = cobre_io::parse_config(&path)?;
    let config_text =
        std::fs::read_to_string(&path).map_err(|e| cobre_io::LoadError::io(&path, e))?;
    refuse_unsupported(&config)?;
    crate::limits::check(&config, &system)?;
    config
        .policy
        .check_dir(&path, output_dir, config.policy_dir_intent())?;
    let boundary = cobre_sddp::resolve_boundary_state_requirements(case_dir, &config)?;
    timings.load_seconds = start.elapsed().as_secs_f64();

    let params = cobre_sddp::setup::StudyParams::from_config(&config, Vec::new())?;
    let training_source = config.training_scenario_source(&path)?;
    let start = Instant::now();
    let prepared = cobre_sddp::prepare_stochastic(
        system,
        case_dir,
        &config,
        params.seed,
        &training_source,
        boundary.inflow_lag_depth(),
    )?;
    timings.stochastic_fit_seconds = start.elapsed().as_secs_f64();
    let mut fit = cobre_sddp::HydroFitTimings::default();
    let hydro_models = cobre_sddp::hydro_models::prepare_hydro_models_from_artifacts(
        &prepared.system,
        &artifacts,
        config.exports.fpha_deviation_points,
        Some(&mut fit),
    )?;
    timings.production_fit_seconds = fit.production_fit_seconds;
    timings.evaporation_fit_seconds = fit.evaporation_fit_seconds;

    let tree = (prepared.stochastic.provenance().opening_tree
        == cobre_stochastic::ComponentProvenance::UserSupplied)
        .then(|| {
            let t = prepared.stochastic.opening_tree();
            WireTree {
                data: t.data().to_vec(),
                openings_per_stage: t.openings_per_stage_slice().to_vec(),
                dim: t.dim(),
            }
        });
    let shared = Shared {
        system: prepared.system,
        config_text,
        scalar_parameters: artifacts
            .scalar_parameters
            .iter()
            .map(BroadcastScalarParameter::from)
            .collect(),
        boundary,
        tree,
    };
    let root = RootOnly {
        config,
        stochastic: prepared.stochastic,
        hydro_models,
        estimation_report: prepared.estimation_report,
        estimation_path: prepared.estimation_path,
        timings,
    };
    Ok((shared, root))
}

/// What `cobre run` does and this runner does not.
fn refuse_unsupported(config: &Config) -> Result<(), RunError> {
    let mode = match config.policy.mode {
        PolicyMode::Fresh => None,
        PolicyMode::WarmStart => Some("warm_start"),
        PolicyMode::Resume => Some("resume"),
    };
    if let Some(mode) = mode {
        return Err(RunError::Unsupported(format!(
            "policy.mode = \"{mode}\" (training from a stored policy) is not supported by \
             cobre-shm run"
        )));
    }
    if config.policy.boundary.is_some() {
        return Err(RunError::Unsupported(
            "policy.boundary (terminal boundary cuts) is not supported by cobre-shm run".into(),
        ));
    }
    Ok(())
}

/// Rank 0 loads; everyone receives and builds the setup (collective).
///
/// # Errors
/// Loading failed on rank 0 (every rank fails), or building the setup
/// failed on some rank.
pub fn load_and_share<C: Communicator>(ctx: &Context<'_, C>) -> Result<Study, RunError> {
    let (mine, root_err) = if ctx.root() {
        ctx.say(&format!("loading case {}", ctx.opts.case_dir.display()));
        match load_on_root(ctx.opts, &ctx.output_dir) {
            Ok((shared, root)) => (Some((shared, root)), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let (shared, root) = match mine {
        Some((s, r)) => (Some(s), Some(r)),
        None => (None, None),
    };
    let start = Instant::now();
    let shared = share::from_root(ctx.comm, "the case", shared);
    let shared = match (shared, root_err) {
        (_, Some(e)) => return Err(e),
        // Rank 0 says why; the others only follow it.
        (Err(share::ShareError::RootFailed(_)), None) => {
            return Err(RunError::Peer {
                rank: 0,
                phase: "loading the case",
            })
        }
        (s, None) => s?,
    };
    let built = build(ctx, shared, root, start);
    ctx.in_step(built, "building the study")
}

/// Every rank: the setup from what rank 0 sent (and, on rank 0, kept).
fn build<C: Communicator>(
    ctx: &Context<'_, C>,
    shared: Shared,
    root: Option<RootOnly>,
    broadcast_start: Instant,
) -> Result<Study, RunError> {
    let case_dir = &ctx.opts.case_dir;
    let path = config_path(case_dir);
    let config = match &root {
        Some(r) => r.config.clone(),
        None => serde_json::from_str::<Config>(&shared.config_text)
            .map_err(|e| cobre_io::LoadError::parse(&path, e.to_string()))?,
    };
    let scalar_parameters = shared
        .scalar_parameters
        .into_iter()
        .map(cobre_core::ScalarParameter::from)
        .collect();
    let mut params = cobre_sddp::setup::StudyParams::from_config(&config, scalar_parameters)?;
    params.boundary = shared.boundary;
    let training_source = config.training_scenario_source(&path)?;
    let simulation_source = config.simulation_scenario_source(&path)?;
    let (stochastic, hydro_models, estimation, mut timings) = match root {
        Some(r) => (
            r.stochastic,
            r.hydro_models,
            Some((r.estimation_report, r.estimation_path)),
            Some(r.timings),
        ),
        None => {
            let tree = shared
                .tree
                .map(|t| OpeningTree::from_parts(t.data, t.openings_per_stage, t.dim));
            // As upstream's non-root ranks: the stochastic context is rebuilt
            // from the estimated system and the shared tree, and the hydro
            // production models from the case directory (one filesystem).
            let stochastic = cobre_sddp::build_stochastic_context_for_study(
                &shared.system,
                case_dir,
                params.seed,
                &training_source,
                params.boundary.inflow_lag_depth(),
                tree,
                None,
            )?;
            let hydro = cobre_sddp::prepare_hydro_models(&shared.system, case_dir, false)?;
            (stochastic, hydro, None, None)
        }
    };
    let kept_params = params.clone();
    let setup = StudySetup::from_broadcast_params(
        &shared.system,
        stochastic,
        params,
        hydro_models,
        &training_source,
        &simulation_source,
    )?;
    if let Some(t) = timings.as_mut() {
        t.broadcast_seconds = broadcast_start.elapsed().as_secs_f64();
    }
    Ok(Study {
        system: shared.system,
        setup,
        training_enabled: config.training.enabled,
        params: kept_params,
        config,
        estimation,
        timings,
    })
}

/// Rank 0: clear stale markers and outputs, write the hydro-model summary,
/// provenance, stochastic exports and scaling report (collective: every
/// rank learns whether rank 0 succeeded).
///
/// # Errors
/// A write on rank 0 failed.
pub fn write_pre_training<C: Communicator>(
    ctx: &Context<'_, C>,
    study: &Study,
) -> Result<(), RunError> {
    let local = if ctx.root() {
        root_exports(ctx, study)
    } else {
        Ok(())
    };
    ctx.in_step(local, "writing the pre-training outputs")
}

fn root_exports<C: Communicator>(ctx: &Context<'_, C>, study: &Study) -> Result<(), RunError> {
    let out = &ctx.output_dir;
    let (setup, system) = (&study.setup, &study.system);
    if study.config.training.enabled {
        cobre_io::remove_success_marker(&out.join("training"))?;
    }
    if setup.simulation_config.n_scenarios > 0 {
        cobre_io::remove_success_marker(&out.join("simulation"))?;
        cobre_io::remove_simulation_outputs(out)?;
    }
    if study.config.training.enabled {
        cobre_io::remove_conditional_training_outputs(out)?;
    }
    let summary = cobre_sddp::build_hydro_model_summary(&setup.hydro_models, system);
    cobre_io::write_hydro_model_summary(&out.join("training/hydro_models.json"), &summary)?;
    if let Some((report, path)) = &study.estimation {
        let mut provenance = cobre_sddp::build_provenance_report(
            *path,
            report.as_ref(),
            setup.inputs.stochastic.provenance(),
            system.hydros(),
            &setup.hydro_models.provenance,
        );
        provenance.inflow.historical_library_seed_digest = setup
            .inputs
            .scenario_libraries
            .training
            .historical
            .as_ref()
            .map(cobre_stochastic::HistoricalScenarioLibrary::seed_digest);
        cobre_io::write_provenance_report(
            &out.join("training/model_provenance.json"),
            &provenance,
        )?;
    }
    if study.config.exports.stochastic {
        let quiet = ctx.opts.quiet;
        let mut warn = |msg: &str| {
            if !quiet {
                eprintln!("warning: stochastic export failed ({msg})");
            }
        };
        cobre_sddp::policy::orchestration::export_stochastic_artifacts(
            out,
            &setup.inputs.stochastic,
            system,
            study.estimation.as_ref().and_then(|(r, _)| r.as_ref()),
            &mut warn,
        );
    }
    cobre_io::write_scaling_report(
        &out.join("training/scaling_report.json"),
        &setup.inputs.stage_data.scaling_report,
    )?;
    Ok(())
}
