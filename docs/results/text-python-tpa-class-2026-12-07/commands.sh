#!/usr/bin/env bash
# The judge's byte-class family (tova-class) on text-python-tpa at 5.2 %, and learned evicters with a
# second tier started at its best setting. 2026-12-07, fifty-fourth session, the 2-vCPU AMD EPYC box;
# release builds of this session's code (judge: tova-class; train/judge: Eviction::keep).
set -euo pipefail
m=policies/models/text-python-tpa
P="--policy policies/text-python-tpa-tiers-seed1 --policy policies/text-python-tpa-tiers-seed2 --policy policies/text-python-tpa-tiers-seed3"
# 1. tova-class against the 53rd session's three tiered evicters (judge-policies-class/; 6 min, 2
#    workers: the tova-ema and tova-ema-scored tova-tiers grids, 88 settings, then 20 biased ones)
ahr eval --model $m --env envs/text-python-tpa-tiers.toml $P --baselines tova-class \
  --sequences 64 --fractions none --workers 2 --out judge-policies-class
# 2. three learned evicters with the second tier, started at tova-class's best setting (whitespace
#    kept as if it drew e^0.3 times its weights: envs/text-python-tpa-class.toml), side by side
#    (train/; ~32 min with a test build beside them)
for S in 1 2 3; do
  ahr train-policy --model $m --env envs/text-python-tpa-class.toml --config configs/ppo/text-python-tpa-tiers.toml \
    --out policies/text-python-tpa-class-seed$S --run-dir runs/text-python-tpa-class-seed$S \
    --seed $S --workers 1 --eval-examples 64 &
done; wait
# 3. them against tova-class (judge-class-policies/; 6 min)
P="--policy policies/text-python-tpa-class-seed1 --policy policies/text-python-tpa-class-seed2 --policy policies/text-python-tpa-class-seed3"
ahr eval --model $m --env envs/text-python-tpa-class.toml $P --baselines tova-class \
  --sequences 64 --fractions none --workers 2 --out judge-class-policies
# 4. each against its start rule (tova-class's best) on 256 windows (analyze/seed*/)
for S in 1 2 3; do
  ahr analyze --model $m --env envs/text-python-tpa-class.toml --policy policies/text-python-tpa-class-seed$S \
    --sequences 256 --out analyze/seed$S
done
