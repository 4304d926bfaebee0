#!/usr/bin/env bash
# System packages the build needs, from Debian's archive (idempotent):
#   cmake, g++, make     HiGHS is built from source by cobre-solver (CMake)
#   libnuma-dev          libnuma for NUMA binding (loaded at run time; optional)
set -euo pipefail
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for pkg in cmake libnuma-dev g++ make; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
