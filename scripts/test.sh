#!/usr/bin/env bash
# Set up this machine, then run the whole test suite (this is what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace
left=$(ls /dev/shm | grep -E '^cobre-shm' || true)
if [ -n "$left" ]; then
  echo "test: segments left in /dev/shm: $left" >&2
  exit 1
fi
echo "test: all passed"
