#!/usr/bin/env bash
# PPO with observation version 4 (the repeat features) on the text model that reads further back
# (policies/models/text-python-wide), 1024-byte Python documentation at 3 %, started at the same
# byte table and with the same PPO settings as docs/results/wide-table-2026-12-05/; then the judge.
# 2026-12-05, the 2-vCPU Intel Xeon box, release build of 763a011 (the judge: 763a011 too; 032c44b changed only the fitted rules' measurement store).
set -euo pipefail
# three policies side by side, --workers 1 each (38 min, the last 20 beside a CI run)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python-wide --env envs/text-python-short-repeats.toml \
    --config configs/ppo/text-python-wide-table.toml --out policies/text-python-wide-repeats-seed$S --seed $S --workers 1 &
done; wait
# the judge: as for the version-3 policies (the byte table refitted at each policy's memory and at 3 %,
# TOVA, StreamingLLM, per-layer windows; the same 64 held-out windows; 80 min, the byte-table fit 66 of them)
ahr eval --model policies/models/text-python-wide --env envs/text-python-short-repeats.toml \
  --policy policies/text-python-wide-repeats-seed1 --policy policies/text-python-wide-repeats-seed2 \
  --policy policies/text-python-wide-repeats-seed3 \
  --baselines token-class,tova,streaming-llm,layer-windows --sequences 64 --fractions 0.03 --workers 2 --out judge-1024-repeats
# what PPO changed, and which features its decisions read (each seed, ~2 min)
for S in 1 2 3; do
  ahr analyze --model policies/models/text-python-wide --policy policies/text-python-wide-repeats-seed$S \
    --env envs/text-python-short-repeats.toml --sequences 32 --lengths none --out analyze-seed$S
done
# the byte-table fit with its measurements kept (release build of 032c44b, nothing else running):
# first 720 s, again 19 s; both tables byte for byte the committed configs/prior/text-python-wide-short-3pct.json
for i in first again; do
  /usr/bin/time -f "wall %e s" ahr fit-rule --model policies/models/text-python-wide --env envs/text-python-short.toml \
    --fraction 0.03 --workers 2 --fit-cache fit-cache --out table-$i.json
done
