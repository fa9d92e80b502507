#!/usr/bin/env bash
# Installs what the `mpi` feature needs to build and run (README "Many machines"): OpenMPI
# (`mpirun`, headers and `mpicc`, which rsmpi's build probes) and libclang (for bindgen).
# Debian/Ubuntu packages; does nothing when they are already there.
set -euo pipefail
have_libclang() { ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; }
if command -v mpirun >/dev/null && command -v mpicc >/dev/null && have_libclang; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev libclang-dev >/dev/null
