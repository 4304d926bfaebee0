#!/usr/bin/env bash
# Set up this machine, build, and run the main job on a bundled example.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace --examples
cobre-shm topology
cobre-shm -p 2 --tag-output -- "$CARGO_TARGET_DIR/release/examples/hello_collectives"
cobre-shm -p 2 train examples/hydro_thermal_tutorial.json --output output/hydro_thermal_tutorial
