#!/usr/bin/env bash
# Install stock cobre-cli 0.18.0 (upstream's `cobre`), the reference every
# `cobre-shm run` figure and comparison test is held against, into
# ~/.cache/cobre-shm/cobre-cli (idempotent; about 20 minutes on 2 cores the
# first time: it builds its own HiGHS). Prints the binary's path.
# Tests and benches find it there (or at $COBRE_CLI) and skip with a notice
# when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${COBRE_CLI_ROOT:-$HOME/.cache/cobre-shm/cobre-cli}"
bin="$root/bin/cobre"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q '0\.18\.0'; then
  echo "$bin"
  exit 0
fi
./scripts/setup.sh >&2
cargo install cobre-cli --version 0.18.0 --locked --root "$root" >&2
echo "$bin"
