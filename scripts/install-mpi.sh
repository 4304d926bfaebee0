#!/usr/bin/env bash
# Install Open MPI and MPICH (runtimes, compilers, headers) from Debian's
# packages, for the optional `mpi` feature and the MPI comparisons.
# Idempotent: apt-get install -y does nothing for packages already present.
set -euo pipefail
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for pkg in openmpi-bin libopenmpi-dev mpich libmpich-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "MPI: $(mpiexec.openmpi --version 2>/dev/null | head -1) / $(mpiexec.mpich --version 2>/dev/null | grep -m1 -i version)"
