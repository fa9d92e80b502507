#!/bin/bash
# `ahr bench decode` warm (as before) and --cold (every timed step after a 128 MiB sweep on every
# core), interleaved process by process, one binary, nothing else running.
# usage: run.sh AHR_BIN OUT [SMALL_MODEL_DIR]
#   mqar preset + its policy at 16k and 64k, batch 1 and 8: 15 rounds; text model with a
#   table-v2 policy (expiring/demoting options) and the small preset (8 heads x 32, TPA query
#   rank 6; `ahr pretrain --model-config configs/model/small.toml --env envs/text.toml --steps 1`): 5 rounds
set -euo pipefail
bin=$1; out=$2; small=${3:-/tmp/small-model}
root=$(cd "$(dirname "$0")/../../.." && pwd)
mkdir -p "$out"
for round in $(seq 1 15); do
  for mode in warm cold; do
    flag=$([ $mode = cold ] && echo --cold || true)
    "$bin" bench decode --model "$root/policies/models/mqar" --policy "$root/policies/mqar-budget-seed2" \
      --env "$root/envs/mqar.toml" --ctx 16384,65536 --batch 1,8 --reps 25 $flag \
      --out "$out/decode-mqar-$mode-round$round.json" > "$out/decode-mqar-$mode-round$round.log" 2>&1
    if [ "$round" -le 5 ]; then
      "$bin" bench decode --model "$root/policies/models/text-python" --policy "$root/policies/text-python-table-v2-seed1" \
        --env "$root/envs/text-python-short.toml" --ctx 16384 --batch 1,8 --reps 25 $flag \
        --out "$out/decode-text-$mode-round$round.json" > "$out/decode-text-$mode-round$round.log" 2>&1
      "$bin" bench decode --model "$small" --ctx 16384 --batch 1,8 --reps 25 $flag \
        --out "$out/decode-small-$mode-round$round.json" > "$out/decode-small-$mode-round$round.log" 2>&1
    fi
    echo "$mode round $round done $(date +%T)"
  done
done
