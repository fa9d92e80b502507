#!/usr/bin/env bash
# Late reviews on the text model that reads to ~256 bytes (policies/models/text-python-wide), 1024-byte
# Python documentation at 10 % of the exact memory: a byte kept at a plain option comes up at age 64
# and may be kept to 128, 256, 512 or the end, or dropped (envs/text-python-short-review64.toml),
# started at this model's byte table fitted at 10 % with its recent:64 bytes written as `full` and
# dropped at review (the table's storage); then the judge at the policies' own memory.
# 2026-12-06, the 2-vCPU AMD EPYC box, release build of 0d32579 (nothing in the code changed).
set -euo pipefail
# the prior: the forty-sixth session's 10 % table (configs/prior/text-python-wide-short-10pct.json,
# `ahr fit-rule`, 18 min) with recent:64 written as full (272 entries)
scripts/prior-swap.py configs/prior/text-python-wide-short-10pct.json recent:64 full \
  configs/prior/text-python-wide-short-10pct-review64.json
# where PPO starts: the same config for one iteration at a learning rate of 1e-12 (the actor is the
# table's storage), judged against TOVA on the same 64 held-out windows (4 min)
sed -e 's/^total_timesteps = .*/total_timesteps = 16384/' -e 's/^learning_rate = .*/learning_rate = 1e-12/' \
  configs/ppo/text-python-wide-table-review64-10pct.toml > start.toml
ahr train-policy --model policies/models/text-python-wide --env envs/text-python-short-review64.toml \
  --config start.toml --out start --seed 1 --workers 2
# (start/train.log is that run's console output as printed, copied into the file by hand; start/eval.json
# and start/manifest.json are the files it wrote)
ahr eval --model policies/models/text-python-wide --env envs/text-python-short-review64.toml \
  --policy start --baselines tova --sequences 64 --fractions none --workers 1 --out judge-start-tova
# three policies side by side, --workers 1 each (37 min)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python-wide --env envs/text-python-short-review64.toml \
    --config configs/ppo/text-python-wide-table-review64-10pct.toml \
    --out policies/text-python-wide-review64-10pct-seed$S --seed $S --workers 1 &
done; wait
# the judge at the policies' own memory on the same 64 held-out windows as every text-python-wide
# judge: TOVA, StreamingLLM, per-layer windows, uniform (18 min) ...
ahr eval --model policies/models/text-python-wide --env envs/text-python-short-review64.toml \
  --policy policies/text-python-wide-review64-10pct-seed1 --policy policies/text-python-wide-review64-10pct-seed2 \
  --policy policies/text-python-wide-review64-10pct-seed3 --baselines tova,streaming-llm,layer-windows,uniform \
  --sequences 64 --fractions none --workers 2 --out judge-rules
# ... what the policies do and what the attention-received features are worth (32 windows each,
# run beside the judge above)
for S in 1 2 3; do
  ahr analyze --model policies/models/text-python-wide --policy policies/text-python-wide-review64-10pct-seed$S \
    --env envs/text-python-short-review64.toml --sequences 32 --lengths none --out analyze-seed$S
done
# ... and the byte table (standard fit, 16 training windows) at seed 1's memory, the highest of the three
ahr eval --model policies/models/text-python-wide --env envs/text-python-short-review64.toml \
  --policy policies/text-python-wide-review64-10pct-seed1 --baselines token-class --sequences 64 --fractions none \
  --fit-cache fit-cache --workers 2 --out judge-seed1-token-class
