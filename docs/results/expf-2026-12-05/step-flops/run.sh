#!/usr/bin/env bash
# Fortieth session, 2026-12-05: the environment's per-step attention FLOPs from a table built once
# (`cost::StepFlops`, AFTER) against `cost::step_attention_flops` per stream and layer (BEFORE, bd1520c),
# PPO on 1024-byte text with reviews (32 iterations) and the attention policy on re-assignment MQAR
# (100 iterations), rounds interleaved, trained policies and held-out lines compared.
#   docs/results/expf-2026-12-05/step-flops/run.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3; mkdir -p "$OUT"
run_ppo() { # tag bin name model env config steps
  rm -rf /tmp/sf-$3-$1
  /usr/bin/time -f "%e" -o $OUT/$3-$1-round$round.time \
    $2 train-policy --model $4 --env $5 --config $6 --total-timesteps $7 --seed 1 --workers 2 \
    --eval-examples 32 --out /tmp/sf-$3-$1/policy --run-dir /tmp/sf-$3-$1/run > $OUT/$3-$1-round$round.log 2>&1
  cp /tmp/sf-$3-$1/run/eval.json $OUT/$3-$1-round$round-eval.json
}
for round in 1 2 3; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    run_ppo $tag $bin text-keep policies/models/text-python envs/text-python-short-keep.toml configs/ppo/text-python-table-v2-keep.toml 524288
    run_ppo $tag $bin attention policies/models/mqar-tiny-updates envs/mqar-tiny-updates-review.toml configs/ppo/mqar-tiny-budget-attention.toml 51200
  done
  for name in text-keep attention; do
    scripts/same-policy.py /tmp/sf-$name-before/policy /tmp/sf-$name-after/policy \
      $OUT/$name-before-round$round-eval.json $OUT/$name-after-round$round-eval.json
  done
done
echo "same bits"
