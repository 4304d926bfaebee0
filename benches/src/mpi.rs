//! The MPIs installed on this machine (Debian's `mpiexec.mpich` /
//! `mpiexec.openmpi` and their `mpicc`), and which one this binary links.
#![forbid(unsafe_code)]

use std::process::{Command, Stdio};

/// An installed MPI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mpi {
    /// `MPICH` or `Open MPI`.
    pub label: &'static str,
    /// Its launcher.
    pub mpiexec: &'static str,
    /// Arguments it needs here (Open MPI: shared-memory transport,
    /// oversubscription allowed, no binding, root allowed when root).
    pub args: Vec<&'static str>,
    /// Its C compiler wrapper.
    pub mpicc: &'static str,
}

impl Mpi {
    /// `mpiexec … -n ranks` (the program follows).
    #[must_use]
    pub fn mpiexec(&self, ranks: usize) -> Command {
        let mut c = Command::new(self.mpiexec);
        c.args(&self.args).args(["-n", &ranks.to_string()]);
        c
    }
}

fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every MPI found, MPICH first.
#[must_use]
pub fn installed() -> Vec<Mpi> {
    let mut v = Vec::new();
    if runs("mpiexec.mpich") {
        v.push(Mpi {
            label: "MPICH",
            mpiexec: "mpiexec.mpich",
            args: Vec::new(),
            mpicc: "mpicc.mpich",
        });
    }
    if runs("mpiexec.openmpi") {
        let mut args = Vec::new();
        if nix::unistd::geteuid().is_root() {
            args.push("--allow-run-as-root");
        }
        args.extend([
            "--oversubscribe",
            "--bind-to",
            "none",
            "--mca",
            "btl",
            "self,vader",
        ]);
        v.push(Mpi {
            label: "Open MPI",
            mpiexec: "mpiexec.openmpi",
            args,
            mpicc: "mpicc.openmpi",
        });
    }
    v
}

/// The MPI this process links (built with the `mpi` feature), read from its
/// own memory map: `MPICH` or `Open MPI`.
#[must_use]
pub fn linked() -> Option<&'static str> {
    if !cfg!(feature = "mpi") {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if maps.contains("libmpich") {
        Some("MPICH")
    } else if maps.contains("libmpi.so") {
        Some("Open MPI")
    } else {
        None
    }
}
