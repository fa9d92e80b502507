#!/usr/bin/env bash
# Pretraining steps and peak memory, glibc (BEFORE) against mimalloc (AFTER), three rounds
# interleaved: the mqar preset (10 steps) and the text-python preset (4 steps), `bench train` on flex.
#   docs/results/mimalloc-2026-12-05/pretrain.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3; mkdir -p "$OUT"
for round in 1 2 3; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    for preset in mqar:envs/mqar.toml:10 text-python:envs/text-python.toml:4; do
      IFS=: read -r name env steps <<< "$preset"
      /usr/bin/time -f "%M" -o $OUT/pretrain-$name-$tag-round$round.maxrss-kb \
        $bin bench train --model-config configs/model/$name.toml --env $env --steps $steps \
        --out $OUT/pretrain-$name-$tag-round$round.json > /dev/null 2>&1
    done
  done
done
# Peak RSS of a rollout process (the re-assignment model, L = 1024, 2 workers, 4 rollouts), one run each:
#   /usr/bin/time -f "%M" -o $OUT/rollout-L1024-<before|after>.maxrss-kb BIN bench rollout \
#     --model policies/models/mqar-tiny-updates-1024-ft3 --env docs/results/rollout-2026-12-03/mqar-tiny-updates-1024.toml \
#     --workers 2 --num-envs 4 --iterations 4 --out /tmp/r.json
