//! `cobre-shm`: start N ranks of a program (or of the SDDP engine) on one
//! node, one per NUMA domain by default, bound to their CPUs and memory,
//! supervised so that a failure stops the whole job at once and nothing is
//! left in `/dev/shm`.
#![forbid(unsafe_code)]

mod bench;
mod launch;
mod limits;
mod log;
mod placement;
mod run;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cobre_shm::launch as job;
use cobre_shm::machine::Topology;
use cobre_shm::MemPolicy;

use launch::{launch, LaunchOptions, Program};
use placement::{plan, Bind};

/// Environment variable naming a topology file that `--dry-run` and
/// `topology` use instead of this machine's.
const ENV_TOPOLOGY: &str = "COBRE_SHM_TOPOLOGY";

#[derive(Parser, Debug)]
#[command(
    name = "cobre-shm",
    version,
    about = "Single-node multi-process shared-memory engine for SDDP",
    long_about = "Start N ranks on one node, one per NUMA domain by default, bound to their CPUs \
                  and memory and connected through POSIX shared memory.\n\n\
                  cobre-shm [OPTIONS] -- PROGRAM [ARGS...]   runs N ranks of any program that \
                  creates its communicator with cobre_shm::create_communicator()."
)]
struct Cli {
    /// Number of ranks [default: the number of NUMA nodes that have CPUs]
    #[arg(short = 'p', long = "ranks", global = true, value_name = "N")]
    ranks: Option<usize>,

    /// Pin each rank to its CPUs and its node's memory, or not
    #[arg(long, value_enum, default_value_t = Bind::Numa, global = true)]
    bind: Bind,

    /// Worker threads per rank [default: the CPUs of the rank's share of its node]
    #[arg(long, global = true, value_name = "T")]
    threads: Option<usize>,

    /// Print the placement plan (and check a `train` case and its sizes)
    /// and exit without starting anything
    #[arg(long, global = true)]
    dry_run: bool,

    /// Hard bound on any wait between ranks, in seconds [default: none —
    /// ranks wait as long as their peers are alive and running]
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<std::time::Duration>,

    /// Prefix every output line of rank r with "[rank r] "
    #[arg(long, global = true)]
    tag_output: bool,

    /// Say nothing on success (errors still go to stderr)
    #[arg(short, long, global = true)]
    quiet: bool,

    /// Say more (repeat for even more); RUST_LOG also works
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// NUMA policy of shared segments: first-touch, interleave or node:K
    #[arg(long, global = true, default_value = "first-touch", value_parser = MemPolicy::parse)]
    mempolicy: MemPolicy,

    #[command(subcommand)]
    command: Option<Command>,

    /// The program to run as every rank, after `--`
    #[arg(last = true, value_name = "PROGRAM")]
    program: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the NUMA topology found (nodes, CPUs, memory, distances)
    Topology,
    /// Remove segments left in /dev/shm by dead cobre-shm jobs of this user
    Clean {
        /// Only list what would be removed
        #[arg(long)]
        list: bool,
    },
    /// Train an SDDP policy for a hydrothermal case (the bundled tutorial without CASE)
    Train(train::TrainArgs),
    /// Run an upstream Cobre study (a `cobre run` case directory: train, then
    /// simulate) with upstream cobre-sddp 0.18 on shm ranks
    Run(run::RunArgs),
    /// Measure this workstation: copy bandwidth, collectives against
    /// message size (and MPI when installed), SDDP scaling, memory, NUMA
    /// placements; writes report.md, SVG plots and results.json
    Bench(bench::BenchArgs),
    /// One rank of a collectives measurement (started by `bench`)
    #[command(hide = true)]
    BenchRank {
        /// Message sizes in bytes
        #[arg(long, value_delimiter = ',', required = true)]
        sizes: Vec<u64>,
    },
    /// Write a synthetic upstream Cobre case directory (what `run` and
    /// cobre-cli's `cobre run` read) of any size
    GenerateCobreCase {
        /// The directory to write
        dir: std::path::PathBuf,
        /// Hydro plants
        #[arg(long, default_value_t = 2)]
        hydros: usize,
        /// Monthly stages
        #[arg(long, default_value_t = 6)]
        stages: usize,
        /// Openings per stage
        #[arg(long, default_value_t = 4)]
        openings: usize,
        /// Forward passes per iteration
        #[arg(long, default_value_t = 4)]
        forward_passes: usize,
        /// Training iterations
        #[arg(long, default_value_t = 8)]
        iterations: usize,
        /// Simulated scenarios (0: no simulation)
        #[arg(long, default_value_t = 16)]
        scenarios: usize,
        /// Seed
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Write a synthetic case of any size
    Generate {
        /// Hydro plants
        #[arg(long, default_value_t = 4)]
        hydros: usize,
        /// Stages
        #[arg(long, default_value_t = 12)]
        stages: usize,
        /// Openings per stage
        #[arg(long, default_value_t = 5)]
        openings: usize,
        /// Thermal plants
        #[arg(long, default_value_t = 3)]
        thermals: usize,
        /// Seed
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file [default: standard output]
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
}

fn parse_timeout(v: &str) -> Result<std::time::Duration, String> {
    cobre_shm::config::parse_secs("--timeout", v)
}

fn topology_for(dry_run: bool) -> Result<(Topology, Option<String>), String> {
    match std::env::var(ENV_TOPOLOGY) {
        Ok(path) if !path.is_empty() => {
            if dry_run {
                Topology::from_file(&path).map(|t| (t, None))
            } else {
                Err(format!(
                    "{ENV_TOPOLOGY}={path} describes another machine; it is only used by --dry-run \
                     and `cobre-shm topology`. Unset it to launch here."
                ))
            }
        }
        _ => {
            // Ranks go where this process may run: a cpuset, `taskset` or a
            // batch system's binding narrows the machine.
            let (topo, removed) = Topology::discover_allowed();
            let note = (!removed.is_empty()).then(|| {
                format!(
                    "this process may not run on CPU(s) {} (affinity mask or cpuset): ranks use \
                     the other {}",
                    cobre_shm::machine::format_list(&removed),
                    topo.cpu_count()
                )
            });
            Ok((topo, note))
        }
    }
}

fn dispatch(cli: &Cli) -> Result<i32, String> {
    match &cli.command {
        Some(Command::Topology) => show_topology(),
        Some(Command::Clean { list }) => clean(*list),
        Some(Command::Generate {
            hydros,
            stages,
            openings,
            thermals,
            seed,
            output,
        }) => generate(
            &cobre_shm_sddp::hydrothermal::generate::GenerateSpec {
                hydros: *hydros,
                stages: *stages,
                openings: *openings,
                thermals: *thermals,
                seed: *seed,
            },
            output.as_deref(),
        ),
        Some(Command::GenerateCobreCase {
            dir,
            hydros,
            stages,
            openings,
            forward_passes,
            iterations,
            scenarios,
            seed,
        }) => {
            let spec = cobre_shm_upstream::generate::ExampleSpec {
                hydros: *hydros,
                stages: *stages,
                openings: *openings,
                forward_passes: *forward_passes,
                iterations: *iterations,
                scenarios: *scenarios,
                seed: *seed,
            };
            cobre_shm_upstream::generate::write_case(dir, &spec).map_err(|e| e.to_string())?;
            Ok(0)
        }
        Some(Command::Bench(args)) => {
            if cli.ranks.is_some() || cli.threads.is_some() {
                return Err(
                    "bench picks its own ranks and threads; give rank counts with \
                     --rank-counts 2,4,8"
                        .into(),
                );
            }
            bench::report(args, cli.quiet)
        }
        Some(Command::BenchRank { sizes }) => {
            cobre_shm_bench::rank_main(sizes, cobre_shm_bench::Kernel::from_env())
        }
        Some(Command::Train(_) | Command::Run(_)) | None => start_job(cli),
    }
}

/// `cobre-shm topology`.
fn show_topology() -> Result<i32, String> {
    let (topo, note) = topology_for(true)?;
    print_topology(&topo, note.as_deref());
    Ok(0)
}

/// The topology ranks are placed on, and which CPUs were left out of it.
fn print_topology(topo: &Topology, note: Option<&str>) {
    print!("{}", topo.render());
    if let Some(n) = note {
        println!("{n}");
    }
}

/// `cobre-shm clean [--list]`.
fn clean(list: bool) -> Result<i32, String> {
    let found = job::scan("");
    if found.is_empty() {
        println!("no cobre-shm segments of this user in {}", job::SHM_DIR);
        return Ok(0);
    }
    for s in &found {
        let state = if s.alive {
            "in use (creator alive): kept"
        } else if list {
            "stale: would remove"
        } else {
            "stale: removed"
        };
        println!(
            "{:<48} {:>12} bytes  creator pid {:<8} {state}",
            s.name, s.bytes, s.creator_pid
        );
    }
    if !list {
        let removed = job::remove_dead("");
        println!("removed {} segment(s)", removed.len());
    }
    Ok(0)
}

/// `cobre-shm generate`: a synthetic case of bounded size, to a file or
/// standard output.
fn generate(
    spec: &cobre_shm_sddp::hydrothermal::generate::GenerateSpec,
    output: Option<&std::path::Path>,
) -> Result<i32, String> {
    let (hydros, stages, openings, thermals) =
        (spec.hydros, spec.stages, spec.openings, spec.thermals);
    if [hydros, stages, openings].contains(&0) {
        return Err("--hydros, --stages and --openings must be at least 1".into());
    }
    if stages > cobre_shm_sddp::hydrothermal::case::MAX_STAGES {
        return Err(format!(
            "--stages {stages} is more than the {} stages a case may have",
            cobre_shm_sddp::hydrothermal::case::MAX_STAGES
        ));
    }
    // The file holds a mean and a deviation per (stage, hydro); the
    // tree openings × stages × hydros inflows.
    const MAX_VALUES: usize = 1 << 26;
    let table = stages.checked_mul(hydros);
    let tree = table.and_then(|v| v.checked_mul(openings));
    if thermals > MAX_VALUES
        || table.is_none_or(|v| v > MAX_VALUES)
        || tree.is_none_or(|v| v > cobre_shm_sddp::hydrothermal::case::MAX_TREE_VALUES)
    {
        return Err(format!(
            "--hydros {hydros} --stages {stages} --openings {openings} --thermals \
             {thermals} is too large to generate (at most {MAX_VALUES} stage x hydro \
             values and {} inflows in the opening tree)",
            cobre_shm_sddp::hydrothermal::case::MAX_TREE_VALUES
        ));
    }
    let text =
        serde_json::to_string_pretty(&cobre_shm_sddp::hydrothermal::generate::generate(spec))
            .map_err(|e| format!("cannot serialise the case: {e}"))?;
    match output {
        Some(path) => std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(0)
}

/// Plan the job (`-p`, `--bind`, `--threads`, `--mempolicy` checked
/// against the machine) and start it: a program after `--`, `train` or
/// `run`, or only print the plan with `--dry-run`.
fn start_job(cli: &Cli) -> Result<i32, String> {
    let (topo, topo_note) = topology_for(cli.dry_run)?;
    check_mempolicy(&topo, cli.mempolicy)?;
    let cpus = topo.cpu_count().max(1);
    if let Some(n) = cli.ranks {
        let limit = cobre_shm_layout::MAX_RANKS
            .min(cobre_shm::launch::MAX_THREADS_PER_CPU.saturating_mul(cpus));
        if n > limit {
            return Err(format!(
                "-p {n}: at most {limit} ranks here ({} at most in any job, {} per CPU on {cpus} \
                 CPU(s))",
                cobre_shm_layout::MAX_RANKS,
                cobre_shm::launch::MAX_THREADS_PER_CPU
            ));
        }
    }
    let plan = plan(&topo, cli.ranks, cli.bind, cli.threads)?;
    limits::check_threads(plan.ranks.iter().map(|r| r.threads).sum(), cpus)?;
    let verbosity = log::Verbosity {
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let settings = rank_settings(plan.ranks.len(), cli.timeout)?;
    // What decides whether ranks outnumber CPUs, here and in every rank.
    let job_cpus = settings.job_cpus.unwrap_or(cpus);
    let staging_bytes = settings.staging(job_cpus, cobre_shm::machine::shm_free_bytes());
    let opts = LaunchOptions {
        timeout: cli.timeout,
        tag_output: cli.tag_output,
        mempolicy: cli.mempolicy,
        staging_bytes,
        staging_automatic: settings.staging_bytes.is_none(),
        job_cpus: Some(job_cpus),
        ..LaunchOptions::default()
    };
    if cli.dry_run {
        print_topology(&topo, topo_note.as_deref());
        print!("{}", plan.render());
        println!("mempolicy for shared segments: {}", cli.mempolicy);
        println!(
            "staging buffers: 2 x {} KiB (COBRE_SHM_STAGING_BYTES)",
            staging_bytes >> 10
        );
        if !cli.program.is_empty() {
            println!("program: {}", cli.program.join(" "));
        }
    }
    let dry = cli.dry_run;
    match &cli.command {
        Some(Command::Train(args)) => {
            let code = train::start(args, &plan, &opts, cli.threads, verbosity, dry)?;
            if dry {
                println!("case and sizes: ok");
            }
            Ok(code)
        }
        Some(Command::Run(args)) => {
            let code = run::start(args, &plan, &opts, cli.threads, verbosity, dry)?;
            if dry {
                println!("case directory: ok");
            }
            Ok(code)
        }
        _ if dry => Ok(0),
        _ if cli.program.is_empty() => Err(
            "nothing to run: give a program after `--`, or a subcommand (see --help)".to_string(),
        ),
        _ => launch(&plan, &Program::Exec(&cli.program), &opts),
    }
}

/// `--mempolicy node:K` names a node that has memory.
fn check_mempolicy(topo: &Topology, policy: MemPolicy) -> Result<(), String> {
    if let MemPolicy::Node(k) = policy {
        if !topo
            .nodes
            .iter()
            .any(|n| n.id == k && n.memory_bytes != Some(0))
        {
            let ids: Vec<String> = topo.nodes.iter().map(|n| n.id.to_string()).collect();
            return Err(format!(
                "--mempolicy node:{k}: no such NUMA node with memory (nodes: {})",
                ids.join(", ")
            ));
        }
    }
    Ok(())
}

/// The `COBRE_SHM_*` settings every rank will read, checked once here so a
/// bad value is one clear error before anything starts instead of one per
/// rank after the fork. The launcher's own variables (name, rank, size,
/// creator, and the timeout when `--timeout` sets it) get the values the
/// ranks will see; every other one comes from the environment.
fn rank_settings(
    size: usize,
    timeout: Option<std::time::Duration>,
) -> Result<cobre_shm::ShmConfig, String> {
    use cobre_shm::config::{ENV_CREATOR_PID, ENV_NAME, ENV_RANK, ENV_SIZE, ENV_TIMEOUT};
    let size = size.to_string();
    cobre_shm::ShmConfig::from_lookup(|key| match key {
        ENV_NAME => Some("/cobre-shm-settings".to_string()),
        ENV_RANK => Some("0".to_string()),
        ENV_SIZE => Some(size.clone()),
        ENV_CREATOR_PID => Some(std::process::id().to_string()),
        ENV_TIMEOUT => timeout
            .map(|t| t.as_secs_f64().to_string())
            .or_else(|| std::env::var(key).ok()),
        _ => std::env::var(key).ok(),
    })
    .map_err(|e| match e {
        cobre_comm::BackendError::InitializationFailed { source, .. } => {
            format!("{source} (in the environment; fix or unset it)")
        }
        other => other.to_string(),
    })
}

fn main() -> ExitCode {
    job::make_sent_faults_fatal();
    let cli = Cli::parse();
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(msg) => {
            crate::launch::line(&format!("cobre-shm: {msg}"));
            ExitCode::from(2)
        }
    }
}
