#!/usr/bin/env bash
# Build the highs-sys side of the solver-choice benchmark (needs cmake and
# libclang-dev for bindgen; installs them) and print the binary's path.
set -euo pipefail
cd "$(dirname "$0")"
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
dpkg -s libclang-dev >/dev/null 2>&1 || {
  sudo_ apt-get update -qq >&2
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev cmake >&2
}
export CARGO_TARGET_DIR="$HOME/.cache/cobre-shm/solver-choice-target"
cargo build --release >&2
echo "$CARGO_TARGET_DIR/release/solver-choice-highs-sys"
