#!/bin/bash
# 1k tokens at batch 8 only, twelve processes per binary interleaved (process-to-process spread at
# this size is ±25 %): ahr36base = main at ce5cfd4, ahr36c = bd2d68d (the head split at any batch),
# ahr36d = bd2d68d restricted to batch 1 (exploratory build, not committed). Summary: summary.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$here/../../../..
for r in $(seq 1 12); do for b in ahr36base ahr36c ahr36d; do
  /tmp/bin/$b bench decode --model $root/policies/models/mqar --policy $root/policies/mqar-budget-seed2 \
    --env $root/envs/mqar.toml --ctx 1024 --batch 8 --reps 25 --out $here/$b-run$r.json > /dev/null 2>&1
done; done
