#!/usr/bin/env bash
# Fortieth session, 2026-12-05: pretraining with burn's `exp` and `sigmoid` (BEFORE, 48e57af) against
# `ahr_tpa::elementwise` under autodiff too (AFTER): `bench train` of the text-python (SwiGLU, 4 steps)
# and mqar (10 steps) presets, 3 interleaved rounds; then short pretraining runs of both presets
# (8 and 30 steps, seed 0) whose per-step losses, gradient norms and rank curves are compared.
#   docs/results/expf-2026-12-05/pretrain/run.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3; mkdir -p "$OUT"
for round in 1 2 3; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    for preset in text-python:envs/text-python.toml:4 mqar:envs/mqar.toml:10; do
      IFS=: read -r name env steps <<< "$preset"
      $bin bench train --model-config configs/model/$name.toml --env $env --steps $steps \
        --out $OUT/bench-train-$name-$tag-round$round.json > /dev/null 2>&1
    done
  done
done
for tag in before after; do
  bin=$B; [ $tag = after ] && bin=$A
  for preset in text-python:envs/text-python.toml:8 mqar:envs/mqar.toml:30; do
    IFS=: read -r name env steps <<< "$preset"
    rm -rf /tmp/ptx-$tag-$name
    $bin pretrain --model-config configs/model/$name.toml --env $env --out /tmp/ptx-$tag-$name --seed 0 --steps $steps > /dev/null 2>&1
    python3 -c "import json,sys; [print(json.dumps({k: r[k] for k in ('step', 'loss', 'grad_norm') if k in r})) for r in map(json.loads, open(sys.argv[1]))]" \
      /tmp/ptx-$tag-$name/metrics.jsonl > $OUT/pretrain-$name-$tag-losses.jsonl
    cp /tmp/ptx-$tag-$name/rank_curve.json $OUT/pretrain-$name-$tag-rank_curve.json
  done
done
for name in text-python mqar; do
  cmp $OUT/pretrain-$name-before-losses.jsonl $OUT/pretrain-$name-after-losses.jsonl
  cmp $OUT/pretrain-$name-before-rank_curve.json $OUT/pretrain-$name-after-rank_curve.json
done
echo "same losses, gradient norms and rank curves"
