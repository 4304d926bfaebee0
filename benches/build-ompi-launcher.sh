#!/usr/bin/env bash
# Build a copy of the launcher linked against Open MPI (the default `mpi`
# build links MPICH, which ferrompi's pkg-config probe finds first), for the
# Open MPI column of `cargo bench -p cobre-shm-bench --features mpi --bench sddp`. Rebuilds the
# MPICH default afterwards so target/release/cobre-shm is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
MPI_PKG_CONFIG=ompi cargo build --release -p cobre-shm-launcher --features mpi
cp "$CARGO_TARGET_DIR/release/cobre-shm" "$CARGO_TARGET_DIR/release/cobre-shm-openmpi"
cargo build --release --workspace --features mpi
echo "built $CARGO_TARGET_DIR/release/cobre-shm-openmpi"
