//! The same engine on MPI (cobre-comm's ferrompi backend) and on shared
//! memory: `cobre-shm -p 2 train` and `mpiexec -n 2 cobre-shm train --backend
//! mpi` must write bit-identical convergence and policy files, and so must
//! `cobre-shm -p 2 run` and `mpiexec -n 2 cobre-shm run` on an upstream
//! case directory. Needs a build
//! with `--features mpi` and an MPI installation (`scripts/install-mpi.sh`);
//! otherwise the tests print a notice and return.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `mpiexec` matching the MPI the launcher was linked against, with the
/// arguments it needs here, or a reason to skip.
fn mpiexec() -> Result<(String, Vec<String>), String> {
    if !cfg!(feature = "mpi") {
        return Err("built without the `mpi` feature".into());
    }
    let ldd = Command::new("ldd")
        .arg(common::launcher_bin())
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let libs = String::from_utf8_lossy(&ldd.stdout).to_string();
    let (prog, args): (&str, &[&str]) = if libs.contains("libmpich") {
        ("mpiexec.mpich", &[])
    } else if libs.contains("libmpi.so") {
        (
            "mpiexec.openmpi",
            &["--oversubscribe", "--allow-run-as-root"],
        )
    } else {
        return Err("the launcher is not linked against an MPI library".into());
    };
    Command::new(prog)
        .arg("--version")
        .output()
        .map_err(|_| format!("{prog} is not installed (scripts/install-mpi.sh)"))?;
    Ok((
        prog.to_string(),
        args.iter().map(|s| (*s).to_string()).collect(),
    ))
}

/// [`mpiexec`], or `None` after a notice that `what` is skipped and why.
fn mpiexec_or_notice(what: &str) -> Option<(String, Vec<String>)> {
    mpiexec()
        .map_err(|why| eprintln!("NOTICE: skipping the {what}: {why}"))
        .ok()
}

fn workdir(tag: &str) -> PathBuf {
    common::work_dir(&format!("mpi-{tag}"))
}

/// `(name, storage)` of every shared region the run reports.
fn storage(dir: &Path) -> Vec<(String, String)> {
    common::summary(dir)["shared_regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (field("name"), field("storage"))
        })
        .collect()
}

#[test]
fn shm_and_mpi_train_bit_identically() {
    let Some((mpiexec, mpi_args)) = mpiexec_or_notice("shm-vs-MPI test") else {
        return;
    };
    let dir = workdir("train");
    let case = dir.join("case.json");
    common::generate_case(&case, [3, 5, 4, 2, 4]);
    let common_args = [
        "--iterations",
        "6",
        "--forward-passes",
        "10",
        "--seed",
        "2",
        "--quiet",
        "--output",
    ];
    let shm_out = dir.join("shm");
    let o = Command::new(common::launcher_bin())
        .args(["-p", "2", "--threads", "1", "train"])
        .arg(&case)
        .args(common_args)
        .arg(&shm_out)
        .output()
        .expect("shm run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mpi_out = dir.join("mpi");
    let o = Command::new(&mpiexec)
        .args(&mpi_args)
        .args(["-n", "2"])
        .arg(common::launcher_bin())
        .args(["--threads", "1", "train"])
        .arg(&case)
        .args(common_args)
        .arg(&mpi_out)
        .output()
        .expect("mpiexec run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        common::csv_without_clock(&mpi_out),
        common::csv_without_clock(&shm_out),
        "convergence differs"
    );
    let (a, b) = (
        std::fs::read(mpi_out.join("policy.json")).expect("policy"),
        std::fs::read(shm_out.join("policy.json")).expect("policy"),
    );
    assert!(a == b, "policy.json differs between MPI and shm");
    // The same regions on both paths; one copy per node only under shm.
    let (shm, mpi) = (storage(&shm_out), storage(&mpi_out));
    let names = |v: &[(String, String)]| v.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&shm), names(&mpi));
    for name in ["opening_tree", "stage_lp_cache", "cut_pool"] {
        assert!(
            names(&shm).iter().any(|n| n == name),
            "{name} missing: {shm:?}"
        );
    }
    assert!(shm.iter().all(|r| r.1 == "posix_shm"), "{shm:?}");
    assert!(
        mpi.iter().all(|r| r.1 == "cobre_comm_heap_fallback"),
        "{mpi:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn shm_and_mpi_run_an_upstream_study_bit_identically() {
    let Some((mpiexec, mpi_args)) = mpiexec_or_notice("shm-vs-MPI run test") else {
        return;
    };
    let dir = workdir("run");
    let case = dir.join("case");
    let o = Command::new(common::launcher_bin())
        .arg("generate-cobre-case")
        .arg(&case)
        .args(["--hydros", "3", "--stages", "6", "--iterations", "5"])
        .output()
        .expect("generate-cobre-case");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shm_out = dir.join("shm");
    let o = Command::new(common::launcher_bin())
        .args(["-q", "-p", "2", "--threads", "1", "run"])
        .arg(&case)
        .arg("--output")
        .arg(&shm_out)
        .output()
        .expect("shm run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mpi_out = dir.join("mpi");
    let o = Command::new(&mpiexec)
        .args(&mpi_args)
        .args(["-n", "2"])
        .arg(common::launcher_bin())
        .args(["-q", "--threads", "1", "run"])
        .arg(&case)
        .arg("--output")
        .arg(&mpi_out)
        .output()
        .expect("mpiexec run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = |out: &Path, f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(f)).expect(f)).expect("JSON")
    };
    let (s, m) = (
        meta(&shm_out, "training/metadata.json"),
        meta(&mpi_out, "training/metadata.json"),
    );
    assert_eq!(s["engine"], "shared");
    assert_eq!(m["engine"], "shared");
    assert_eq!(m["distribution"]["backend"], "mpi");
    assert_eq!(s["bounds"], m["bounds"], "training bounds differ");
    let (s, m) = (
        meta(&shm_out, "simulation/metadata.json"),
        meta(&mpi_out, "simulation/metadata.json"),
    );
    assert_eq!(s["cost"], m["cost"], "simulated costs differ");
    for stage in std::fs::read_dir(shm_out.join("policy/cuts")).expect("cuts") {
        let name = stage.expect("entry").file_name();
        assert!(
            std::fs::read(shm_out.join("policy/cuts").join(&name)).expect("shm cuts")
                == std::fs::read(mpi_out.join("policy/cuts").join(&name)).expect("mpi cuts"),
            "policy/cuts/{} differs between shm and MPI",
            name.to_string_lossy()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn create_communicator_detects_an_mpi_launch() {
    let Some((mpiexec, mpi_args)) = mpiexec_or_notice("MPI auto-detection test") else {
        return;
    };
    let example = common::launcher_bin()
        .with_file_name("examples")
        .join("hello_collectives");
    assert!(example.exists(), "cargo test builds the examples");
    let o = Command::new(&mpiexec)
        .args(&mpi_args)
        .args(["-n", "2"])
        .arg(example)
        .env_remove("COBRE_COMM_BACKEND")
        .output()
        .expect("mpiexec");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("rank 0 of 2 (mpi)") && text.contains("rank 1 of 2 (mpi)"),
        "{text}"
    );
}

/// Every rank of an MPI job fails on a bad case: the job ends (the ranks
/// agree on the failure after MPI_Init and finalise) instead of one rank
/// waiting in MPI_Init for a peer that already exited, and each rank says
/// why.
#[test]
fn a_bad_case_under_mpiexec_ends_the_job() {
    let Some((mpiexec, mpi_args)) = mpiexec_or_notice("MPI failure test") else {
        return;
    };
    let mut child = Command::new(&mpiexec)
        .args(&mpi_args)
        .args(["-n", "2"])
        .arg(common::launcher_bin())
        .args(["train", "/nonexistent/case.json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mpiexec");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("mpiexec still running after 60 s: a rank hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(!status.success(), "{status}: {err}");
    assert!(
        err.contains("rank 0: cannot read case file")
            && err.contains("rank 1: cannot read case file"),
        "{status}: {err}"
    );
}
