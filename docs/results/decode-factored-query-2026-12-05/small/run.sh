#!/bin/bash
# Decode of the `small` preset (8 heads x 32, TPA query rank 6, K/V rank up to 4, 4 layers, SwiGLU;
# weights after one pretraining step: speed does not depend on them), before (main at cd8c0fe) and
# after (this change) side by side, five rounds of 25 steps per cache; nothing else running.
# The model:  ahr pretrain --model-config configs/model/small.toml --env envs/text.toml --steps 1 --out /tmp/small-model
# usage: run.sh BEFORE_BIN AFTER_BIN OUT; summary: scripts/decode-summary.py OUT small
set -euo pipefail
for round in 1 2 3 4 5; do
  for b in "before:$1" "after:$2"; do
    "${b#*:}" bench decode --model /tmp/small-model --ctx 4096,16384 --batch 1,8 --reps 25 \
      --out "$3/decode-small-${b%%:*}-round$round.json" > "$3/decode-small-${b%%:*}-round$round.log" 2>&1
  done
done
