#!/usr/bin/env bash
# Build the `ahr` binary that scripts/gpu-check.sh runs on the lent GPU machine.
#
#   scripts/gpu-build.sh [--torch 2.11.0]
#
# That machine has no Rust toolchain and no internet; its python3 has torch 2.11.0 (CUDA 13.0).
# libtorch's C++ ABI changes between torch versions, so the binary is compiled against that same
# torch: the PyPI wheel of 2.11.0 is the CUDA 13.0 build. tch 0.22 expects torch 2.9.0;
# LIBTORCH_BYPASS_VERSION_CHECK=1 lets it compile against another one, and the whole test suite
# passes on `tch-cpu` built this way (docs/BENCHMARKS.md, "Backends"). The torch venv (~4.6 GB) and
# the target directory are cached under $AHR_CACHE (default ~/.cache/ahr). Writes the stripped
# binary (~20 MB, inside the device tool's 64 MiB carry) to target/gpu/ahr and the torch version
# it links to target/gpu/torch-version; carry `target/gpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=2.11.0
while [ $# -gt 0 ]; do
  case "$1" in
    --torch) TORCH="$2"; shift 2 ;;
    *) echo "error: unknown option $1" >&2; exit 1 ;;
  esac
done
CACHE="${AHR_CACHE:-$HOME/.cache/ahr}"
VENV="$CACHE/venv-torch-$TORCH"
if ! "$VENV/bin/python" -W ignore -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH')" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH"
fi
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1
[ "$TORCH" = 2.9.0 ] || export LIBTORCH_BYPASS_VERSION_CHECK=1
export CARGO_TARGET_DIR="$CACHE/target-torch-$TORCH"
cargo build --release -p ahr-cli --features tch
mkdir -p target/gpu
strip -o target/gpu/ahr "$CARGO_TARGET_DIR/release/ahr"
echo "$TORCH" > target/gpu/torch-version
echo "target/gpu/ahr: $(du -h target/gpu/ahr | cut -f1), linked against torch $TORCH"
