#!/bin/bash
# Decode latency of two ahr binaries side by side: `ahr bench decode` on the mqar preset with a
# policy's mix, rounds interleaved (before, after, before, …), 25 steps per cache, into
# OUT/decode-{before,after}-roundR.{json,log}; summarise with scripts/decode-summary.py OUT.
# Run with nothing else on the machine.
# usage: scripts/decode-side-by-side.sh BEFORE_BIN AFTER_BIN OUT   (ROUNDS="1 2 3" to choose rounds;
#   MODEL, POLICY, ENV, CTX, BATCH for another model, policy, env, contexts or batches; TAG=x names
#   the files OUT/decode-x-{before,after}-roundR.*)
set -euo pipefail
[ $# -eq 3 ] || { sed -n 2,9p "$0"; exit 1; }
before=$1; after=$2; out=$3
root=$(cd "$(dirname "$0")/.." && pwd)
model=${MODEL:-$root/policies/models/mqar}
policy=${POLICY:-$root/policies/mqar-budget-seed2}
env=${ENV:-$root/envs/mqar.toml}
prefix=decode${TAG:+-$TAG}
for round in ${ROUNDS:-1 2 3 4 5 6 7}; do
  for b in "before:$before" "after:$after"; do
    name=${b%%:*}; bin=${b#*:}
    "$bin" bench decode --model "$model" --policy "$policy" --env "$env" \
      --ctx "${CTX:-1024,4096,16384}" --batch "${BATCH:-1,8}" --reps 25 \
      --out "$out/$prefix-$name-round$round.json" > "$out/$prefix-$name-round$round.log" 2>&1
    echo "$name round $round done $(date +%T)"
  done
done
