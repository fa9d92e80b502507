#!/usr/bin/env bash
# Fifty-seventh session (2026-12-07), the 2-vCPU AMD EPYC box, release build of 2cc6b18 (= 34d6a05's
# code). Is the scoreboard's one win (256-byte /usr/share/doc text, the demotion menu) a property of
# the recipe or of three seeds, and does it hold against the per-byte table (`token-table`), the one
# fitted rule it had not met? The corpus is /usr/share/doc as the policies were trained on it
# (sha256 bf50d48b…): OpenMPI's install adds four .md files (libibverbs1, libjs-jquery-ui,
# libpmix-dev, librdmacm1) that change the held-out windows; they were moved aside for every run here.
set -euo pipefail
# 1. three more seeds of the same recipe, side by side (~35 min beside CI and a judge)
for S in 4 5 6; do
  ahr train-policy --model policies/models/text-tiny --env envs/text-demote.toml \
    --config configs/ppo/text-demote-long.toml --out policies/text-demote1k-seed$S \
    --run-dir runs/text-demote1k-seed$S --seed $S --workers 1 > ppo/seed$S-train.txt &
done; wait
# 2. seeds 1-3 against the byte rules fitted on 16 and on 64 training windows (token-class, and the
#    per-byte token-table), 128 held-out windows at each policy's memory
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml \
  --policy policies/text-demote1k-seed1 --policy policies/text-demote1k-seed2 --policy policies/text-demote1k-seed3 \
  --baselines token-class,token-table --fit-sequences 16,64 --sequences 128 --fractions none \
  --workers 2 --out rejudge-demote-table
# 3. seeds 4-6 against every family but layer-surprisal (slow; 0.04 or more behind in judge1k) and
#    token-table (run 4.)
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml \
  --policy policies/text-demote1k-seed4 --policy policies/text-demote1k-seed5 --policy policies/text-demote1k-seed6 \
  --baselines uniform,streaming-llm,layer-windows,h2o,tova,tova-ema,tova-out,tova-tiers,tova-layers,tova-pooled,tova-class,h2o-full-cache,tova-full-cache,k-norm,entropy,entropy-ladder,surprisal,surprisal-full-cache,superseded,spike,superseded-spike,random,token-class \
  --sequences 128 --fractions none --workers 2 --out judge-demote-seeds456
# 4. seeds 4-6 against token-class fitted on 64 windows (the 16-window fit is in 3.): started, stopped
#    unfinished to leave the machine to 6. (nothing kept)
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml \
  --policy policies/text-demote1k-seed4 --policy policies/text-demote1k-seed5 --policy policies/text-demote1k-seed6 \
  --baselines token-class --fit-sequences 64 --sequences 128 --fractions none --workers 2 --out judge-demote-seeds456-fit64
# 5. policies started at the byte table fitted on this corpus at 10 % (3.5 min), 512 iterations,
#    three side by side (~20 min beside two judges), as on the Python documentation
ahr fit-rule --model policies/models/text-tiny --env envs/text-demote.toml --fraction 0.10 --workers 2 \
  --out configs/prior/text-demote-10pct.json > fit-rule.log
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-tiny --env envs/text-demote.toml \
    --config configs/ppo/text-demote-table.toml --out policies/text-demote-table-seed$S \
    --run-dir runs/text-demote-table-seed$S --seed $S --workers 1 > ppo-table/seed$S-train.txt &
done; wait
# 6. the judge: every family that came within 0.04 of the 1024-iteration policies (the surprisal,
#    spike and superseded families, K-norm, entropy and random were 0.07 or more behind in 3.), with
#    token-class fitted on 16 and on 64 windows
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml \
  --policy policies/text-demote-table-seed1 --policy policies/text-demote-table-seed2 --policy policies/text-demote-table-seed3 \
  --baselines uniform,streaming-llm,layer-windows,h2o,tova,tova-ema,tova-out,tova-tiers,tova-layers,tova-pooled,tova-class,h2o-full-cache,tova-full-cache,token-class \
  --fit-sequences 16,64 --sequences 128 --fractions none --workers 2 --out judge-demote-table-policies
for d in rejudge-demote-table judge-demote-seeds456 judge-demote-seeds456-fit64 judge-demote-table-policies; do
  scripts/judge-table.py $d/metrics.json > $d/policies.md
done
