#!/usr/bin/env bash
# The judge on text-python-tpa (rank-4 factors only) at 5.2 % of the exact memory, and learned
# eviction with a second tier started at its best rule. 2026-12-07, fifty-third session, the 2-vCPU
# AMD EPYC box; release builds of 890b9e2 (judge-5pct-tova) and of 332288c (the rest).
set -euo pipefail
m=policies/models/text-python-tpa
# 1. the TOVA families at 5.2 % (judge-5pct-tova/; 7 min, 1 worker): tova-tiers scored by tova-out only
ahr eval --model $m --env envs/text-python.toml --baselines tova,tova-ema,tova-out,tova-tiers \
  --sequences 64 --fractions 0.052 --workers 1 --out judge-5pct-tova
# 2. tova-tiers with both scores (judge-5pct-tiers/; ~8 min): the best setting, tova-ema-scored
#    21 keys at rank 4 + 10 at rank 2, decay 0.9, is envs/text-python-tpa-tiers.toml's evict
ahr eval --model $m --env envs/text-python.toml --baselines tova-tiers \
  --sequences 64 --fractions 0.052 --workers 1 --out judge-5pct-tiers
# 3. three learned evicters with that second tier, started at that rule, side by side (train/)
for S in 1 2 3; do
  ahr train-policy --model $m --env envs/text-python-tpa-tiers.toml --config configs/ppo/text-python-tpa-tiers.toml \
    --out policies/text-python-tpa-tiers-seed$S --run-dir runs/text-python-tpa-tiers-seed$S \
    --seed $S --workers 1 --eval-examples 64 &
done; wait
P="--policy policies/text-python-tpa-tiers-seed1 --policy policies/text-python-tpa-tiers-seed2 --policy policies/text-python-tpa-tiers-seed3"
e=envs/text-python-tpa-tiers.toml
# 4. the policies against the TOVA families (judge-policies/, 6 min), then the other default families
#    (judge-policies-rest/eval-partial.log: stopped in layer-surprisal after 40 min; its lines give each
#    family's settings, unpaired), then the window families, H2O and tova-full-cache paired (judge-policies-windows/, 4 min)
ahr eval --model $m --env $e $P --baselines tova,tova-ema,tova-out,tova-tiers --sequences 64 --fractions none --workers 2 --out judge-policies
ahr eval --model $m --env $e $P --baselines uniform,streaming-llm,layer-windows,h2o,h2o-full-cache,tova-full-cache,k-norm,entropy,entropy-ladder,surprisal,surprisal-full-cache,layer-surprisal,superseded,spike,superseded-spike,random \
  --sequences 64 --fractions none --workers 2 --out judge-policies-rest
ahr eval --model $m --env $e $P --baselines streaming-llm,layer-windows,h2o,tova-full-cache --sequences 64 --fractions none --workers 2 --out judge-policies-windows
# 5. two-tier windows (recent keys at rank 4, older ones in the window at rank 2 or 1): the same
#    families with demotion schedules on the menu (tiers-schedules.toml; no policies: their menu differs)
ahr eval --model $m --env tiers-schedules.toml --baselines streaming-llm,layer-windows --sequences 64 --fractions 0.052 --workers 2 --out judge-windows-schedules
# 6. each policy against its start rule on 256 windows (analyze/seed*/, 1.5 min each)
for S in 1 2 3; do
  ahr analyze --model $m --env $e --policy policies/text-python-tpa-tiers-seed$S --sequences 256 --out analyze/seed$S
done
# 7. on another corpus: 1024-byte windows of /usr/share/doc (doc-tiers.toml; judge-doc-corpus/, 8 min)
ahr eval --model $m --env doc-tiers.toml $P --baselines tova-ema,tova-tiers,streaming-llm,layer-windows \
  --sequences 64 --fractions none --workers 2 --out judge-doc-corpus
# 8. hand-written scores in the two-tier environment, with byte-class biases on the smoothed weight
#    (evict-scores.md, ~8 min; evict-scores-fine.md at the smaller biases)
EVICT_KAPPAS="" EVICT_CLASS_BIAS=0.02,0.05,0.1,0.2 cargo run --release -p ahr-eval --example evict_scores -- $m $e 64 > evict-scores.md
EVICT_KAPPAS="" EVICT_CLASS_BIAS=0.01,0.015,0.03 cargo run --release -p ahr-eval --example evict_scores -- $m $e 64 > evict-scores-fine.md
# 9. layer-windows on 256 windows, paired with the policies (judge-256-layer-windows/, 15 min)
ahr eval --model $m --env $e $P --baselines layer-windows --sequences 256 --fractions none --workers 2 --out judge-256-layer-windows
