//! Launcher start-to-exit time: `cobre-shm -p N -- /bin/true` for N = 2 and
//! 8, and in the same run `mpiexec -n N /bin/true` for every MPI found
//! (skipped with a notice when none is installed).
//!
//! Run: `cargo build --release --workspace && cargo bench -p cobre-shm-bench --bench launcher`.

use std::process::{Command, Stdio};
use std::time::Instant;

fn median_ms(mut cmd: impl FnMut() -> Command, reps: usize) -> Option<f64> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut c = cmd();
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let t = Instant::now();
        let ok = c.status().ok()?.success();
        if !ok {
            return None;
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Some(times[times.len() / 2])
}

fn launcher() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("bench binary");
    exe.parent()
        .and_then(std::path::Path::parent)
        .map(|d| d.join("cobre-shm"))
        .filter(|p| p.exists())
        .expect("build the launcher first: cargo build --release --workspace")
}

/// An MPI launcher to compare with: label, program, extra arguments.
type MpiLauncher = (String, String, Vec<String>);

/// MPI launchers to compare.
fn mpi_launchers() -> Vec<MpiLauncher> {
    let mut found = Vec::new();
    for (prog, label_hint) in [
        ("mpiexec.openmpi", "Open MPI"),
        ("mpiexec.mpich", "MPICH"),
        ("mpiexec.hydra", "MPICH"),
        ("mpiexec", "mpiexec"),
    ] {
        let Ok(out) = Command::new(prog).arg("--version").output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase()
            + &String::from_utf8_lossy(&out.stderr).to_lowercase();
        let (label, args) = if text.contains("open mpi") || text.contains("open-mpi") {
            (
                "Open MPI",
                vec![
                    "--oversubscribe".to_string(),
                    "--allow-run-as-root".to_string(),
                ],
            )
        } else if text.contains("hydra") || text.contains("mpich") {
            ("MPICH", vec![])
        } else {
            (label_hint, vec![])
        };
        if found
            .iter()
            .any(|(l, _, _): &(String, String, Vec<String>)| l == label)
        {
            continue;
        }
        found.push((label.to_string(), prog.to_string(), args));
    }
    found
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 5 } else { 21 };
    let bin = launcher();
    let mpis = mpi_launchers();
    println!("# launcher start-to-exit, median of {reps} runs of /bin/true\n");
    print!("| ranks | cobre-shm |");
    for (label, _, _) in &mpis {
        print!(" mpiexec ({label}) | ratio |");
    }
    println!("\n|---:|---:|{}", "---:|---:|".repeat(mpis.len()));
    for n in [2usize, 8] {
        let ours = median_ms(
            || {
                let mut c = Command::new(&bin);
                c.args(["-p", &n.to_string(), "--", "/bin/true"]);
                c
            },
            reps,
        );
        print!(
            "| {n} | {} |",
            ours.map_or("failed".into(), |v| format!("{v:.1} ms"))
        );
        for (_, prog, args) in &mpis {
            let theirs = median_ms(
                || {
                    let mut c = Command::new(prog);
                    c.args(args).args(["-n", &n.to_string(), "/bin/true"]);
                    c
                },
                reps,
            );
            match (ours, theirs) {
                (Some(o), Some(t)) => print!(" {t:.1} ms | {:.1}x |", t / o),
                _ => print!(" failed | - |"),
            }
        }
        println!();
    }
    if mpis.is_empty() {
        println!("\nno MPI installed: mpiexec skipped (scripts/install-mpi.sh installs Open MPI and MPICH)");
    }
}
