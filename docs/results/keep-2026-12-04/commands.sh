#!/usr/bin/env bash
# Thirty-third session, 2026-12-04, the 2-vCPU box (AMD EPYC, AVX-512), release builds of f927118's
# working tree. Run from the repository root; outputs land in docs/results/keep-2026-12-04/.
# The thirty-third session's machine was shut down after training; the thirty-fourth (same day,
# a fresh machine, release build of ef0fef4) trained the three seeds again — every eval.json and
# held-out line came out byte-identical — and ran the judge and the analyses below.
set -euo pipefail
# the start is the table (reviews at 16 dropping, as envs/text-python-short-review16.toml): one
# iteration reads 1.6508 nats at 2.9 % on the env's 256 held-out windows
ahr train-policy --model policies/models/text-python --env envs/text-python-short-keep.toml \
  --config configs/ppo/text-python-table-v2-keep.toml --out /tmp/r33/init --run-dir /tmp/r33/init-run \
  --seed 1 --workers 2 --total-timesteps 16384
# 1024-byte text at 3 % with reviews at age 16 that may keep a byte to 32, 64, 128 or 256: three
# seeds side by side (384 iterations, 20 min)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python --env envs/text-python-short-keep.toml \
    --config configs/ppo/text-python-table-v2-keep.toml --out policies/text-python-table-v2-keep-seed$S \
    --run-dir runs/text-python-table-v2-keep-seed$S --seed $S --workers 1 \
    > docs/results/keep-2026-12-04/train/text-python-table-v2-keep-seed$S/train.log 2>&1 &
done; wait
cd docs/results/keep-2026-12-04
ahr eval --model ../../../policies/models/text-python --env ../../../envs/text-python-short-keep.toml \
  --policy ../../../policies/text-python-table-v2-keep-seed1 --policy ../../../policies/text-python-table-v2-keep-seed2 \
  --policy ../../../policies/text-python-table-v2-keep-seed3 --baselines token-class,tova --sequences 128 \
  --fractions 0.03 --workers 2 --out judge-1024-keep > judge-1024-keep.log 2>&1   # 38 min
mv judge-1024-keep.log judge-1024-keep/judge.log
gzip -9 judge-1024-keep/metrics.json judge-1024-keep/points.jsonl
../../../scripts/judge-table.py judge-1024-keep/metrics.json.gz > judge-1024-keep/policies.md
# what the policies do (32 held-out windows; seed 1 with the feature ablation: 4 min)
for S in 1 2 3; do
  A=--no-ablation; [ $S = 1 ] && A=
  ahr analyze --model ../../../policies/models/text-python --policy ../../../policies/text-python-table-v2-keep-seed$S \
    --env ../../../envs/text-python-short-keep.toml --sequences 32 --lengths none $A \
    --out analyze-1024/text-python-table-v2-keep-seed$S > analyze-1024/analyze-seed$S.log 2>&1
done
# the byte table given every storage the keep reviews produce as a write option (no reviews):
# keep-storage-as-writes.toml, token-class alone at seed 1's memory (3.17 %; 45 min beside CI, niced)
ahr eval --model ../../../policies/models/text-python --env keep-storage-as-writes.toml --baselines token-class \
  --sequences 128 --fractions 0.0317 --workers 2 --out judge-1024-keep-writes > judge-1024-keep-writes.log 2>&1
mv judge-1024-keep-writes.log judge-1024-keep-writes/judge.log
gzip -9 judge-1024-keep-writes/metrics.json judge-1024-keep-writes/points.jsonl
# three more seeds (4-6, side by side, 17 min) and the policies alone on the judge's 128 windows with
# TOVA (paired); against token-class unpaired, from judge-1024-keep's fitted settings (same windows,
# same write menu)
cd ../../..
for S in 4 5 6; do
  ahr train-policy --model policies/models/text-python --env envs/text-python-short-keep.toml \
    --config configs/ppo/text-python-table-v2-keep.toml --out policies/text-python-table-v2-keep-seed$S \
    --run-dir runs/text-python-table-v2-keep-seed$S --seed $S --workers 1 \
    > docs/results/keep-2026-12-04/train/text-python-table-v2-keep-seed$S/train.log 2>&1 &
done; wait
cd docs/results/keep-2026-12-04
ahr eval --model ../../../policies/models/text-python --env ../../../envs/text-python-short-keep.toml \
  --policy ../../../policies/text-python-table-v2-keep-seed4 --policy ../../../policies/text-python-table-v2-keep-seed5 \
  --policy ../../../policies/text-python-table-v2-keep-seed6 --baselines tova --sequences 128 --fractions 0.03 \
  --workers 2 --out judge-1024-keep-seeds456 > judge-1024-keep-seeds456.log 2>&1
mv judge-1024-keep-seeds456.log judge-1024-keep-seeds456/judge.log
gzip -9 judge-1024-keep-seeds456/metrics.json judge-1024-keep-seeds456/points.jsonl
../../../scripts/judge-table.py judge-1024-keep-seeds456/metrics.json.gz > judge-1024-keep-seeds456/policies.md
