#!/usr/bin/env bash
# Fifty-ninth session (2026-12-07), the 2-vCPU AMD EPYC box; each judge beside another and beside
# .ci/run. The Python documentation's six 256-byte policies (started at the byte table) against the
# per-byte table fitted on 64 training windows with the fit's trim (the fifty-eighth session judged
# seeds 4-6 against token-class only), and against token-entropy (new: token-class with each class
# split at the median next-token entropy), with token-class beside it.
set -euo pipefail
P6=""; for S in 1 2 3 4 5 6; do P6="$P6 --policy policies/text-demote-python-table-seed$S"; done
# 1. seeds 4-6 against token-table, 64 windows (48 min; release build of c73d476)
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-table-seed4 --policy policies/text-demote-python-table-seed5 \
  --policy policies/text-demote-python-table-seed6 --baselines token-table --fit-sequences 64 \
  --sequences 128 --fractions none --workers 2 --fit-cache fitcache-table --out python-456-table64
# 2. all six against token-class and token-entropy, 16 windows (43 min beside 1.; release build of ec1a9cd)
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml $P6 \
  --baselines token-class,token-entropy --sequences 128 --fractions none --workers 2 \
  --fit-cache fitcache-entropy --out python-entropy16
# 3. all six against token-table, 64 windows, the measurements of 1. reused from its fit cache
#    (37 min beside 2. and .ci/run; release build of ec1a9cd)
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml $P6 \
  --baselines token-table --fit-sequences 64 --sequences 128 --fractions none --workers 2 \
  --fit-cache fitcache-table --out python-six-table64
# 4. the per-byte table fitted at 10 % as a prior (64 training windows, the best of its settings on 64
#    other training windows; 13 min beside .ci/run)
ahr fit-rule --model policies/models/text-tiny --env envs/text-demote-python.toml --family token-table \
  --fraction 0.10 --workers 2 --fit-cache fitcache-prior --out configs/prior/text-demote-python-table-10pct.json > fit-rule.log
# 5. three policies started there, side by side (7 min)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-tiny --env envs/text-demote-python.toml \
    --config configs/ppo/text-demote-python-ptable.toml --out policies/text-demote-python-ptable-seed$S \
    --run-dir runs/text-demote-python-ptable-seed$S --seed $S --workers 1 > ppo/seed$S-train.txt &
done; wait
# 6. them against the per-byte table fitted on 64 windows with the trim (the measurements of 1. and 3. reused)
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-ptable-seed1 --policy policies/text-demote-python-ptable-seed2 \
  --policy policies/text-demote-python-ptable-seed3 --baselines token-table --fit-sequences 64 \
  --sequences 128 --fractions none --workers 2 --fit-cache fitcache-table --out ptable-table64
for d in python-456-table64 python-entropy16 python-six-table64 ptable-table64; do
  scripts/judge-table.py $d/metrics.json > $d/policies.md
  ./margins.py $d/metrics.json > $d/margins.txt   # (run on the gzipped files: <(zcat $d/metrics.json.gz))
done
