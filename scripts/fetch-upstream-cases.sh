#!/usr/bin/env bash
# Put the sources of cobre-cli 0.18.0 (its `1dtoy` template) and cobre-sddp
# 0.18.0 (its tests/fixtures case directories) into cargo's registry, where
# the coverage tests read upstream's own cases (idempotent; downloads
# sources only, builds nothing).
set -euo pipefail
home="${CARGO_HOME:-$HOME/.cargo}"
have() { ls -d "$home"/registry/src/*/"$1" >/dev/null 2>&1; }
if have cobre-cli-0.18.0 && have cobre-sddp-0.18.0; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src"
cat > "$tmp/Cargo.toml" <<'TOML'
[package]
name = "fetch-upstream-cases"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
cobre-cli = "=0.18.0"
cobre-sddp = "=0.18.0"
TOML
echo 'fn main() {}' > "$tmp/src/main.rs"
cargo fetch --manifest-path "$tmp/Cargo.toml" >&2
