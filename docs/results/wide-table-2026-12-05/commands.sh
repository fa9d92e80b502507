#!/usr/bin/env bash
# PPO on the text model that reads further back (policies/models/text-python-wide), 1024-byte Python
# documentation at 3 %, started at the judge's byte table fitted on that model; then the judge.
# 2026-12-05, the 2-vCPU Intel Xeon box, release build of 3f2cb37 (no code change since).
set -euo pipefail
# the byte table (12 min)
ahr fit-rule --model policies/models/text-python-wide --env envs/text-python-short.toml --fraction 0.03 --workers 2 \
  --out configs/prior/text-python-wide-short-3pct.json
# three policies side by side, --workers 1 each (29 min)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python-wide --env envs/text-python-short.toml \
    --config configs/ppo/text-python-wide-table.toml --out policies/text-python-wide-table-seed$S --seed $S --workers 1 &
done; wait
# the judge: byte table refitted at each policy's memory and at 3 %, TOVA, StreamingLLM, per-layer windows; 64 windows (80 min)
ahr eval --model policies/models/text-python-wide --env envs/text-python-short.toml \
  --policy policies/text-python-wide-table-seed1 --policy policies/text-python-wide-table-seed2 \
  --policy policies/text-python-wide-table-seed3 \
  --baselines token-class,tova,streaming-llm,layer-windows --sequences 64 --fractions 0.03 --workers 2 --out judge-1024-wide
# what PPO changed, and which features its decisions read (1 min)
ahr analyze --model policies/models/text-python-wide --policy policies/text-python-wide-table-seed3 \
  --env envs/text-python-short.toml --sequences 32 --lengths none --out analyze-seed3
