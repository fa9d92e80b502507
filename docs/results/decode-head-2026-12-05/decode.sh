#!/bin/bash
# Issue 17, the decode step's LM head split over the cores when the step's attention just ran on
# them (bd2d68d) against main before it. Binaries: /tmp/bin/ahr36base (main at ce5cfd4) and
# /tmp/bin/ahr36c (bd2d68d), `cargo build --release -p ahr-cli`. Nothing else running. Summary:
# scripts/decode-summary.py DIR [64k].
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
side=$here/../../../scripts/decode-side-by-side.sh
# The mqar preset (3 heads × 16, vocabulary 8192, tied head) with a policy's mix: 1k-16k tokens,
# batch 1 and 8, fifteen rounds; 64k, five rounds.
ROUNDS="$(seq -s ' ' 1 15)" "$side" /tmp/bin/ahr36base /tmp/bin/ahr36c "$here"
CTX=65536 TAG=64k ROUNDS="1 2 3 4 5" "$side" /tmp/bin/ahr36base /tmp/bin/ahr36c "$here"
