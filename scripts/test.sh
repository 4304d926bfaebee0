#!/usr/bin/env bash
# Set up this machine, then run the whole test suite (this is what CI runs).
# When an MPI is installed (scripts/install-mpi.sh), the parts the `mpi`
# feature changes run a second time with it, adding the shm-vs-MPI comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/fetch-upstream-cases.sh
. scripts/env.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
# `cargo test` builds only the launcher's unit-test harness; the tests run the
# real `cobre-shm` binary, so build it first.
cargo build --release --workspace
cargo test --release --workspace
# The shared-memory protocols under Miri (skipped with a notice without nightly).
./scripts/miri.sh
if pkg-config --exists mpich 2>/dev/null || pkg-config --exists ompi 2>/dev/null; then
  echo "test: MPI found: running the suite again with --features mpi"
  cargo clippy --release --workspace --all-targets --features mpi -- -D warnings
  cargo build --release --workspace --features mpi
  # What the feature changes: the communicator (its unit and doc tests, and
  # its examples, which tests/mpi.rs runs under mpiexec), the conformance
  # suite with MPI's narrower CommData, the HiGHS check, and the shm-vs-MPI
  # comparison. The rest ran above on the same code. The test package is
  # built --workspace: alone it resolves its dependencies' features
  # differently and rebuilds them (HiGHS included), minutes on a fresh machine.
  cargo test --release --features mpi -p cobre-shm
  cargo test --release --workspace --features mpi --test mpi --test conformance --test highs_clash
else
  echo "test: NOTICE: no MPI installed: skipping the --features mpi run (scripts/install-mpi.sh installs Open MPI and MPICH)"
fi
left=$(ls /dev/shm | grep -E '^cobre-shm' || true)
if [ -n "$left" ]; then
  echo "test: segments left in /dev/shm: $left" >&2
  exit 1
fi
echo "test: all passed"
