#!/bin/bash
# Issue 17, the decode kernel with the next block prefetched (0a9235b, 7623b4e, 80707e0) against
# the one before it. Binaries: /tmp/bin/ahr34 (main at ef0fef4: the kernel before) and
# /tmp/bin/ahr35 (80707e0); /tmp/bin/attend_micro_{before,after}: `cargo build --release -p
# ahr-tpa --example attend_micro` at 0a9235b~1 and 80707e0. Nothing else running. Summaries:
# scripts/decode-summary.py DIR [TAG], DIR/micro-summary.py, DIR/rollout-summary.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$here/../../..
side=$root/scripts/decode-side-by-side.sh
# The kernel alone (one group of 16384 tokens, the mqar preset's shape): in cache / streamed from
# memory (FLUSH) × one thread / split over both cores (SPLIT), five rounds interleaved.
for round in 1 2 3 4 5; do
  for mode in cache flush split split-flush; do
    for side_ in before after; do
      env MODE=$mode $( [[ $mode == *split* ]] && echo SPLIT=1 ) $( [[ $mode == *flush* ]] && echo FLUSH=1 ) \
        /tmp/bin/attend_micro_$side_ 16384 400 > "$here/micro-$side_-$mode-round$round.txt"
    done
  done
done
# The mqar preset (3 heads × 16, menu drop / rank:1 / rank:2 / full) with a policy's mix: 1k-16k
# tokens, batch 1 and 8, seven rounds; 64k tokens, five rounds.
"$side" /tmp/bin/ahr34 /tmp/bin/ahr35 "$here"
CTX=65536 TAG=64k ROUNDS="1 2 3 4 5" "$side" /tmp/bin/ahr34 /tmp/bin/ahr35 "$here"
# Expiring and demoting caches: the text-python model (4 heads × 16) with a policy whose menu holds
# recent:4..64 and full/W/rank:1/M schedules (every option as a uniform cache, and the policy's mix),
# 1k-64k tokens at batch 1, 16k at batch 8, five rounds.
export MODEL=$root/policies/models/text-python POLICY=$root/policies/text-python-table-v2-seed1 ENV=$root/envs/text-python-short.toml
CTX=1024,4096,16384,65536 BATCH=1 TAG=text ROUNDS="1 2 3 4 5" "$side" /tmp/bin/ahr34 /tmp/bin/ahr35 "$here"
CTX=16384 BATCH=8 TAG=text-b8 ROUNDS="1 2 3 4 5" "$side" /tmp/bin/ahr34 /tmp/bin/ahr35 "$here"
# Rollouts (where PPO spends its time): the hard-task model on re-assignment MQAR at L = 128-2048
# (the env files of docs/results/rollout-2026-12-03), 2 workers, 4 envs x 4 streams, >= 16k env
# steps per run, three rounds, the two binaries interleaved.
envs=$here/../rollout-2026-12-03
for round in 1 2 3; do
  for L in 128 512 1024 2048; do
    it=$(( 4096 / L )); [ $it -lt 2 ] && it=2
    for b in before:/tmp/bin/ahr34 after:/tmp/bin/ahr35; do
      "${b#*:}" bench rollout --model "$root/policies/models/mqar-tiny-updates-1024-ft3" --env "$envs/mqar-tiny-updates-$L.toml" \
        --workers 2 --num-envs 4 --iterations $it --out "$here/rollout-${b%%:*}-L$L-round$round.json" > /dev/null 2>&1
    done
  done
done
# Afterwards, batch 1 at 16k alone, fifteen more rounds (the first run put it at the line):
CTX=16384 BATCH=1 TAG=16k-b1-more ROUNDS="$(seq -s ' ' 1 15)" "$side" /tmp/bin/ahr34 /tmp/bin/ahr35 "$here"
