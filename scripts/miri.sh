#!/usr/bin/env bash
# Run the shared-memory protocol tests under Miri (data-race and UB checks):
# the header publication and the barrier/staging protocol, raced between
# threads over a heap-backed control block (Miri cannot map shm objects).
# Needs a nightly toolchain with the miri component; installs the component
# when rustup can, and otherwise says it skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "miri: NOTICE: no nightly toolchain: skipping the Miri run (rustup toolchain install nightly --component miri)"
  exit 0
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  if ! rustup component add --toolchain nightly miri >/dev/null 2>&1; then
    echo "miri: NOTICE: cannot install the miri component: skipping the Miri run"
    exit 0
  fi
fi
# One Miri target directory per checkout: cargo-miri's test "binaries"
# record the directory they were built in, and one shared between two
# clones (CI's and a developer's) ran the tests in the other, vanished one
# ("No such file or directory").
checkout_key=$(pwd -P | cksum | cut -d' ' -f1)
export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/../miri-target/$checkout_key"
cargo +nightly miri setup >/dev/null 2>&1 || { echo "miri: NOTICE: miri setup failed: skipping"; exit 0; }
cargo +nightly miri test -p cobre-shm --lib -- protocol header
