#!/usr/bin/env bash
# Build the engine as it was before the stage-LP cache (commit 8f38506: one
# HiGHS model per (thread, stage) on highs-sys 1.15) for side-by-side
# comparisons, and print the path of its launcher. Idempotent; needs git
# history, cmake and libclang-dev (bindgen). Usage:
#   COBRE_SHM_BASELINE=$(benches/build-baseline.sh) cargo bench -p cobre-shm-bench --bench memory
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${BASELINE_REV:-8f38506}
out="$HOME/.cache/cobre-shm/baseline/cobre-shm-$rev"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
dpkg -s libclang-dev >/dev/null 2>&1 || {
  sudo_ apt-get update -qq >&2
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev cmake >&2
}
tree="$HOME/.cache/cobre-shm/baseline/src-$rev"
[ -d "$tree" ] || git worktree add --detach "$tree" "$rev" >&2
CARGO_TARGET_DIR="$HOME/.cache/cobre-shm/baseline/target" cargo build --release --manifest-path "$tree/Cargo.toml" -p cobre-shm-launcher >&2
mkdir -p "$(dirname "$out")"
cp "$HOME/.cache/cobre-shm/baseline/target/release/cobre-shm" "$out"
echo "$out"
