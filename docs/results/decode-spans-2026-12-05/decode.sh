#!/bin/bash
# Issue 17: passes over factor blocks taken a span (<= 256 KiB) at a time (2946f51) against the
# kernel before it (bd2d68d). Binaries: /tmp/bin/ahr36c (bd2d68d), /tmp/bin/ahr36f (2946f51),
# `cargo build --release -p ahr-cli`; /tmp/bin/micro_{before,after}: `cargo build --release -p
# ahr-tpa --example attend_micro` with 2946f51's example on bd2d68d's and 2946f51's kernel.
# Nothing else running. Summaries: scripts/decode-summary.py DIR text|text-b8|mqar; DIR/micro-summary.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$here/../../..
side=$root/scripts/decode-side-by-side.sh
# The kernel alone, 16k tokens, one thread, in cache and streamed (FLUSH): the text model's heads
# (4 × 16: two passes) and a realistic shape (8 × 64: three passes), five rounds interleaved.
for round in 1 2 3 4 5; do
  for shape in 4x16 8x64; do
    for mode in cache flush; do
      for side_ in before after; do
        env HEADS=${shape%x*} HEAD_DIM=${shape#*x} $( [[ $mode == flush ]] && echo FLUSH=1 ) \
          /tmp/bin/micro_$side_ 16384 200 > "$here/micro-$shape-$side_-$mode-round$round.txt"
      done
    done
  done
done
# The text-python model (4 heads × 16) with its table policy's menu, five rounds.
export MODEL=$root/policies/models/text-python POLICY=$root/policies/text-python-table-v2-seed1 ENV=$root/envs/text-python-short.toml
CTX=4096,16384,65536 BATCH=1 TAG=text ROUNDS="1 2 3 4 5" "$side" /tmp/bin/ahr36c /tmp/bin/ahr36f "$here"
CTX=16384 BATCH=8 TAG=text-b8 ROUNDS="1 2 3 4 5" "$side" /tmp/bin/ahr36c /tmp/bin/ahr36f "$here"
# The mqar preset (3 heads: one pass, no spans): unchanged, three rounds.
unset MODEL POLICY ENV
CTX=16384 TAG=mqar ROUNDS="1 2 3" "$side" /tmp/bin/ahr36c /tmp/bin/ahr36f "$here"
