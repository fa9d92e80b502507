#!/usr/bin/env bash
# The judge's per-layer budgets (tova-layers, and tova-class's tilted last stage) and one pool of keys
# per stream (tova-pooled) on text-python-tpa at 5.2 %, and learned evicters started at the best of
# them. 2026-12-07, fifty-fifth session, the 2-vCPU AMD EPYC box; release builds of 43ee223 (1, 2),
# 073a913 (3) and 544b3dd (4: tilts filled to the largest budget within the target).
set -euo pipefail
m=policies/models/text-python-tpa
# 1. tova-layers and tova-class (with its tilt stage) against the 54th session's class-started
#    evicters (judge-class-policies/; 18 min, 2 workers: the bases' grids 690 s, shared by both)
P="--policy policies/text-python-tpa-class-seed1 --policy policies/text-python-tpa-class-seed2 --policy policies/text-python-tpa-class-seed3"
ahr eval --model $m --env envs/text-python-tpa-class.toml $P --baselines tova-layers,tova-class \
  --sequences 64 --fractions none --workers 2 --out judge-class-policies
# 2. three learned evicters with the second tier and the budget tilted by 6 (27 keys in layer 0, 15
#    in layer 1), started at tova-class's best setting (envs/text-python-tpa-layers.toml), side by
#    side (train/; ~55 min beside the judges and test builds)
for S in 1 2 3; do
  ahr train-policy --model $m --env envs/text-python-tpa-layers.toml --config configs/ppo/text-python-tpa-tiers.toml \
    --out policies/text-python-tpa-layers-seed$S --run-dir runs/text-python-tpa-layers-seed$S \
    --seed $S --workers 1 --eval-examples 64 &
done; wait
# 3. tova-pooled beside tova-layers, no policies (judge-pooled/)
ahr eval --model $m --env envs/text-python-tpa-class.toml --baselines tova-pooled,tova-layers \
  --sequences 64 --fractions 0.052 --workers 2 --out judge-pooled
# 4. the three evicters against tova-layers, tova-pooled and tova-class at their memory (79.8 bytes:
#    the tilted rule's; judge-layers-policies/)
P="--policy policies/text-python-tpa-layers-seed1 --policy policies/text-python-tpa-layers-seed2 --policy policies/text-python-tpa-layers-seed3"
ahr eval --model $m --env envs/text-python-tpa-layers.toml $P --baselines tova-layers,tova-pooled,tova-class \
  --sequences 64 --fractions none --workers 2 --out judge-layers-policies
# 5. each evicter against its start rule (tova-class, tilt +6) on 256 windows (analyze/seed*/)
for S in 1 2 3; do
  ahr analyze --model $m --env envs/text-python-tpa-layers.toml --policy policies/text-python-tpa-layers-seed$S \
    --sequences 256 --out analyze/seed$S
done
# 6. the finer tilt grid of 6dab045 (shares 0.25, 0.35, 0.4 added) at the layers evicters' memory
#    (judge-fine/; 28 min beside a CI run)
ahr eval --model $m --env envs/text-python-tpa-layers.toml $P --baselines tova-layers,tova-class \
  --sequences 64 --fractions none --workers 2 --out judge-fine
