# Sourced by the scripts: one cargo target directory outside the clone, so a
# fresh clone (CI, a new session) reuses the HiGHS build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cobre-shm/target}"
export PATH="$CARGO_TARGET_DIR/release:$PATH"
