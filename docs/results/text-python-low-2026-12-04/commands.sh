#!/usr/bin/env bash
# Long text at a few percent of the exact memory (envs/text-python-short.toml, configs/ppo/text-python-low.toml),
# 2026-12-04, the 2-vCPU box; the Python documentation of scripts/get-corpus.sh
# (python3.11-doc 3.11.2-6+deb12u7: 497 files, corpus hash a71b07fb…fb5d; python-doc-files.txt).
set -euo pipefail
# PPO, S = 1, 2, 3 side by side (--workers 1 each; ~19 min for the three)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python --env envs/text-python-short.toml \
    --config configs/ppo/text-python-low.toml --out policies/text-python-low-seed$S --seed $S --workers 1 &
done; wait
scripts/ppo-summary.py --marks 64,128,256,384,512 "low (4 % target)=ppo" > ppo/summary.md
# the judge: first 32 held-out windows (~8 min), then 128 (the published table, ~32 min), then the other families on 32
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-low-seed1 --policy policies/text-python-low-seed2 --policy policies/text-python-low-seed3 \
  --baselines uniform,streaming-llm,layer-windows,tova,tova-full-cache,h2o,h2o-full-cache \
  --sequences 32 --fractions 0.04 --workers 2 --out judge32
ahr eval … --sequences 128 --fractions 0.04 --workers 2 --out judge
ahr eval … --baselines k-norm,entropy,entropy-ladder,surprisal,surprisal-full-cache,layer-surprisal,superseded,spike,superseded-spike,random \
  --sequences 32 --fractions 0.04 --workers 2 --out judge-rest   # stopped after 55 min, in own-cache surprisal's storage variants
ahr eval … --baselines surprisal,surprisal-full-cache,layer-surprisal,superseded,spike,superseded-spike,random \
  --sequences 32 --fractions 0.04 --workers 2 --out judge-rest2   # the seven not finished above, to the end (36 min)
scripts/judge-table.py judge-rest2/metrics.json.gz > judge-rest2/policies.md
scripts/judge-table.py judge/metrics.json.gz > judge/policies.md
# the same policies on 1024-byte windows of /usr/share/doc text (envs/text-doc-short.toml; the corpus of
# transfer/corpus-files.txt, the same 776 files as docs/results/text-demote-2026-12-03/), 128 windows (~30 min)
ahr eval --model policies/models/text-python --env envs/text-doc-short.toml \
  --policy policies/text-python-low-seed1 --policy policies/text-python-low-seed2 --policy policies/text-python-low-seed3 \
  --baselines uniform,streaming-llm,layer-windows,tova,tova-full-cache,h2o,h2o-full-cache \
  --sequences 128 --fractions 0.04 --workers 2 --out transfer
# the per-sequence oracle over the menu's per-layer pairs (the judge's first 32 windows, ~6 min)
cargo run --release -p ahr-eval --example sequence_oracle -- \
  policies/models/text-python envs/text-python-short.toml 32 0.02,0.025,0.028,0.03,0.031,0.035,0.04,0.05,0.06 \
  > sequence-oracle-32.md
# half the memory: configs/ppo/text-python-low2.toml (2 % target, started at recent:8), then the judge on 64 windows
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python --env envs/text-python-short.toml \
    --config configs/ppo/text-python-low2.toml --out policies/text-python-low2-seed$S --seed $S --workers 1 &
done; wait
scripts/ppo-summary.py --marks 64,128,256,384,512 "low2 (2 % target)=ppo-low2" > ppo-low2/summary.md
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-low2-seed1 --policy policies/text-python-low2-seed2 --policy policies/text-python-low2-seed3 \
  --baselines uniform,streaming-llm,layer-windows,tova,tova-full-cache,h2o,h2o-full-cache \
  --sequences 64 --fractions 0.02 --workers 2 --out judge-low2
ahr eval … --sequences 128 --fractions 0.02 --workers 2 --out judge-low2-128   # the same, on the 128 windows of judge/ (65 min beside PPO)
scripts/judge-table.py judge-low2-128/metrics.json.gz > judge-low2-128/policies.md
# the attention-over-meta-features policy, the same recipe (98 min for three side by side, the first hour beside the judge above)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python --env envs/text-python-short.toml \
    --config configs/ppo/text-python-low-attention.toml --out policies/text-python-low-attn-seed$S --seed $S --workers 1 &
done; wait
scripts/ppo-summary.py --marks 64,128,256,384,512 "low (MLP)=ppo" "low, attention policy=ppo-attn" > ppo-attn/summary.md
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-low-attn-seed1 --policy policies/text-python-low-attn-seed2 --policy policies/text-python-low-attn-seed3 \
  --baselines uniform,streaming-llm,layer-windows,tova,tova-full-cache,h2o,h2o-full-cache \
  --sequences 32 --fractions 0.04 --workers 2 --out judge-attn32
scripts/judge-table.py judge-attn32/metrics.json.gz > judge-attn32/policies.md
ahr eval … --sequences 128 --fractions 0.04 --workers 2 --out judge-attn128   # the same on the 128 windows of judge/ (30 min)
scripts/judge-table.py judge-attn128/metrics.json.gz > judge-attn128/policies.md
