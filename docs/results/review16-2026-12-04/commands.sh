#!/usr/bin/env bash
# Thirty-second session, 2026-12-04, the 2-vCPU box (AMD EPYC, AVX-512), release builds of dd8e086's
# working tree. Run from the repository root; outputs land in docs/results/review16-2026-12-04/.
set -euo pipefail
# the table with its recent:16 bytes written as `full` (a review at age 16 makes `full` into
# `full/16/drop`, stored as `recent:16` is)
scripts/prior-swap.py configs/prior/text-python-short-3pct-v2.json recent:16 full \
  configs/prior/text-python-short-3pct-v2-review16.json
# the start is the table: one iteration reads 1.6508 nats at 2.9 % on the env's 256 held-out
# windows, as the table run as a policy did (thirty-first session)
ahr train-policy --model policies/models/text-python --env envs/text-python-short-review16.toml \
  --config configs/ppo/text-python-table-v2-review16.toml --out /tmp/r32/init --run-dir /tmp/r32/init-run \
  --seed 1 --workers 2 --total-timesteps 16384
# 1024-byte text at 3 % with reviews at age 16: three seeds side by side (384 iterations, 17 min)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python --env envs/text-python-short-review16.toml \
    --config configs/ppo/text-python-table-v2-review16.toml --out policies/text-python-table-v2-review16-seed$S \
    --run-dir runs/text-python-table-v2-review16-seed$S --seed $S --workers 1 > docs/results/review16-2026-12-04/train/text-python-table-v2-review16-seed$S/train.log 2>&1 &
done; wait
cd docs/results/review16-2026-12-04
ahr eval --model policies/models/text-python --env envs/text-python-short-review16.toml \
  --policy policies/text-python-table-v2-review16-seed1 --policy policies/text-python-table-v2-review16-seed2 \
  --policy policies/text-python-table-v2-review16-seed3 --baselines token-class,tova --sequences 128 --fractions 0.03 \
  --workers 2 --out judge-1024-review16
for S in 1 2 3; do
  A=--no-ablation; [ $S = 1 ] && A=
  ahr analyze --model policies/models/text-python --policy policies/text-python-table-v2-review16-seed$S \
    --env envs/text-python-short-review16.toml --sequences 32 --lengths none $A \
    --out analyze-1024/text-python-table-v2-review16-seed$S
done
# 256-byte Python docs: the thirtieth session's policies against token-class fitted on 64 training
# windows instead of its default 16 (ahr eval --fit-sequences)
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-table-seed1 --policy policies/text-demote-python-table-seed2 \
  --policy policies/text-demote-python-table-seed3 --baselines token-class --fit-sequences 64 \
  --sequences 128 --fractions 0.1 --workers 2 --out judge-256-class64
# the thirty-first session's logit-3 policies, all three (that session judged seed 1 only)
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-table-v2-logit3-seed1 --policy policies/text-python-table-v2-logit3-seed2 \
  --policy policies/text-python-table-v2-logit3-seed3 --baselines token-class,tova --sequences 128 --fractions 0.03 \
  --workers 2 --out judge-1024-logit3
for d in judge-*; do scripts/judge-table.py $d/metrics.json.gz > $d/policies.md; done
