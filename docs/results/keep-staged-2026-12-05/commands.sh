#!/usr/bin/env bash
# Thirty-fifth session, 2026-12-05, the 2-vCPU box (AMD EPYC, AVX-512), release build of bf13ea9
# (the token-class fit in two stages). Run from the repository root.
# The keep-review seed 1 (the one policy that beat the byte table, docs/results/keep-2026-12-04)
# against token-class fitted first over the options a write may choose (the fit judge-1024-keep
# used), then from its best setting at each target over the whole menu, the storages only reviews
# produce included; the same 128 held-out windows (seed 1 only: the fit's cost grows
# with the targets, and each policy adds one).
set -euo pipefail
R=docs/results/keep-staged-2026-12-05
ahr eval --model policies/models/text-python --env envs/text-python-short-keep.toml \
  --policy policies/text-python-table-v2-keep-seed1 --baselines token-class --fractions 0.03 \
  --sequences 128 --workers 2 --out $R/judge-1024-keep-staged > $R/judge-1024-keep-staged.log 2>&1
mv $R/judge-1024-keep-staged.log $R/judge-1024-keep-staged/judge.log
gzip -9 $R/judge-1024-keep-staged/metrics.json $R/judge-1024-keep-staged/points.jsonl
scripts/judge-table.py $R/judge-1024-keep-staged/metrics.json.gz > $R/judge-1024-keep-staged/policies.md
