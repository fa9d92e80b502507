#!/usr/bin/env bash
# Thirty-first session, 2026-12-04, the 2-vCPU box, release builds of 4a0f86e (training) and of the
# working tree of 3ed9fcf (judges; judge-256-table16 with the token-table grain fitted on 16 windows,
# before 3ed9fcf moved it to 64).
set -euo pipefail
# 1024-byte text at 3 %: three policies from the mended table (384 iterations, side by side, 16 min),
# then the judge with token-class and TOVA on 128 held-out windows (~55 min: the fit at four targets)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python --env envs/text-python-short.toml \
    --config configs/ppo/text-python-table-v2.toml --out policies/text-python-table-v2-seed$S \
    --run-dir runs/v2/seed$S --seed $S --workers 1 &
done; wait
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-table-v2-seed1 --policy policies/text-python-table-v2-seed2 \
  --policy policies/text-python-table-v2-seed3 --baselines token-class,tova --sequences 128 --fractions 0.03 \
  --workers 2 --out judge-1024-v2
# 256-byte Python docs: the thirtieth session's table-started policies against the per-byte table,
# fitted on 16 windows (judge-256-table16, with token-class beside it; 15 min) and on 64 (judge-256-table64)
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-table-seed1 --policy policies/text-demote-python-table-seed2 \
  --policy policies/text-demote-python-table-seed3 --baselines token-class,token-table \
  --sequences 128 --fractions 0.1 --workers 2 --out judge-256-table16
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-table-seed1 --policy policies/text-demote-python-table-seed2 \
  --policy policies/text-demote-python-table-seed3 --baselines token-table \
  --sequences 128 --fractions 0.1 --workers 2 --out judge-256-table64
for d in judge-*; do scripts/judge-table.py $d/metrics.json.gz > $d/policies.md; done
# what the 1024-byte policies learnt (32 windows; the rows "off their token's most common option" and
# "against the per-token table the policy started from")
for S in 1 2 3; do
  ahr analyze --model policies/models/text-python --policy policies/text-python-table-v2-seed$S \
    --env envs/text-python-short.toml --sequences 32 --lengths none --no-ablation --out analyze-1024/text-python-table-v2-seed$S
done
# the same from the table at prior_logit 3 (configs/ppo/text-python-table-v2-logit3.toml), beside .ci/run
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python --env envs/text-python-short.toml \
    --config configs/ppo/text-python-table-v2-logit3.toml --out policies/text-python-table-v2-logit3-seed$S \
    --run-dir runs/v2l3/seed$S --seed $S --workers 1 &
done; wait
# (the three-policy judge below was started and stopped unfinished; seed 1 alone, token-class only:
#  ahr eval … --policy policies/text-python-table-v2-logit3-seed1 --baselines token-class … --out judge-1024-logit3-seed1)
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-table-v2-logit3-seed1 --policy policies/text-python-table-v2-logit3-seed2 \
  --policy policies/text-python-table-v2-logit3-seed3 --baselines token-class,tova --sequences 128 --fractions 0.03 \
  --workers 2 --out judge-1024-logit3
