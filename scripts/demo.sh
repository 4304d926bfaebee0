#!/usr/bin/env bash
# Set up this machine, build, and run the main job on a bundled example.
# Runs the binary it has just built, by its path (never one left on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace --bins --examples
bin="$CARGO_TARGET_DIR/release/cobre-shm"
"$bin" topology
"$bin" -p 2 --tag-output -- "$CARGO_TARGET_DIR/release/examples/hello_collectives"
"$bin" -p 2 train examples/hydro_thermal_tutorial.json --output output/hydro_thermal_tutorial
