//! SDDP runs for the report: `train` on a generated case as a user would
//! run it, read back from `summary.json`.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::collectives::shell_line;
use super::mpi::Mpi;

/// The case and iteration counts every run uses.
#[derive(Clone, Debug)]
pub struct Study<'a> {
    /// Case file.
    pub case: &'a Path,
    /// Iterations.
    pub iterations: usize,
    /// Forward passes per iteration.
    pub passes: usize,
}

/// One training run.
#[derive(Clone, Debug)]
pub struct TrainRun {
    /// What it is in the report.
    pub label: String,
    /// Ranks.
    pub ranks: usize,
    /// Threads per rank.
    pub threads: usize,
    /// The exact command.
    pub command: String,
    /// Its `summary.json`, when it succeeded.
    pub summary: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
}

impl TrainRun {
    fn num(&self, path: &[&str]) -> Option<f64> {
        let mut v = self.summary.as_ref()?;
        for k in path {
            v = v.get(k)?;
        }
        v.as_f64()
    }

    /// Wall time per iteration, s (setup included: what the user waits).
    #[must_use]
    pub fn secs_per_iteration(&self) -> Option<f64> {
        Some(self.num(&["time_secs", "total"])? / self.num(&["iterations"])?.max(1.0))
    }

    /// LP solves per second over all ranks.
    #[must_use]
    pub fn solves_per_sec(&self) -> Option<f64> {
        Some(self.num(&["lp_solves"])? / self.num(&["time_secs", "total"])?.max(1e-9))
    }

    /// Final lower bound.
    #[must_use]
    pub fn lower_bound(&self) -> Option<f64> {
        self.num(&["final", "lower_bound"])
    }

    /// Node PSS at the end, MB.
    #[must_use]
    pub fn node_pss_mb(&self) -> Option<f64> {
        Some(self.num(&["memory", "node_pss_bytes"])? / 1e6)
    }

    /// Peak node PSS, MB.
    #[must_use]
    pub fn node_peak_mb(&self) -> Option<f64> {
        Some(self.num(&["memory", "node_peak_pss_bytes"])? / 1e6)
    }

    /// The run as JSON for `results.json`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "label": self.label,
            "ranks": self.ranks,
            "threads": self.threads,
            "command": self.command,
            "error": self.error,
            "secs_per_iteration": self.secs_per_iteration(),
            "lp_solves_per_sec": self.solves_per_sec(),
            "lower_bound": self.lower_bound(),
            "node_pss_mb": self.node_pss_mb(),
            "node_peak_pss_mb": self.node_peak_mb(),
        })
    }
}

fn finish(label: String, ranks: usize, threads: usize, mut cmd: Command, out: &Path) -> TrainRun {
    let command = shell_line(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (summary, error) = match cmd.output() {
        Ok(o) if o.status.success() => {
            match std::fs::read_to_string(out.join("summary.json"))
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
            {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(format!("no summary.json: {e}"))),
            }
        }
        Ok(o) => (None, Some(super::collectives::failure(&o))),
        Err(e) => (None, Some(format!("cannot start: {e}"))),
    };
    TrainRun {
        label,
        ranks,
        threads,
        command,
        summary,
        error,
    }
}

fn train_args<'a>(study: &'a Study<'_>, out: &'a Path) -> Vec<String> {
    vec![
        "train".into(),
        study.case.to_string_lossy().into_owned(),
        "--iterations".into(),
        study.iterations.to_string(),
        "--forward-passes".into(),
        study.passes.to_string(),
        "--checkpoint-every".into(),
        "0".into(),
        "--output".into(),
        out.to_string_lossy().into_owned(),
    ]
}

/// `cobre-shm -p ranks --threads threads [launcher_args] train … [extra]`.
#[must_use]
pub fn shm(
    exe: &Path,
    study: &Study<'_>,
    out: &Path,
    (ranks, threads): (usize, usize),
    launcher_args: &[&str],
    extra: &[&str],
) -> TrainRun {
    let mut cmd = Command::new(exe);
    cmd.args([
        "-q",
        "-p",
        &ranks.to_string(),
        "--threads",
        &threads.to_string(),
    ])
    .args(launcher_args)
    .args(train_args(study, out))
    .args(extra);
    let mut label = format!("{ranks}×{threads}");
    for a in launcher_args.iter().chain(extra) {
        label.push(' ');
        label.push_str(a);
    }
    finish(label, ranks, threads, cmd, out)
}

/// `mpiexec -n ranks cobre-shm --threads 1 train … --backend mpi`.
#[must_use]
pub fn mpi(exe: &Path, mpi: &Mpi, study: &Study<'_>, out: &Path, ranks: usize) -> TrainRun {
    let mut cmd = mpi.mpiexec(ranks);
    cmd.arg(exe)
        .args(["-q", "--threads", "1"])
        .args(train_args(study, out))
        .args(["--backend", "mpi"]);
    finish(format!("{} × {ranks}", mpi.label), ranks, 1, cmd, out)
}
