#!/usr/bin/env bash
# A chain of reviews from age 16 on the text model that reads to ~256 bytes
# (policies/models/text-python-wide), 1024-byte Python documentation at 10 % of the exact memory:
# a byte kept at a plain option comes up at 16 and may be dropped, demoted, kept to the end or kept
# to 32; there again (drop, keep to 64, keep to the end), and so at 64, 128, 256 and 512
# (envs/text-python-short-review16-again.toml). The start is the 10 % byte table's storage (its
# recent:64 bytes written full, kept on at 16 and 32 and dropped at 64 by the review heads'
# preferences), the memory price as the single review at 64 (docs/results/wide-review64-10pct-2026-12-06).
# Then the judge at the policies' own memory on the same 64 held-out windows.
# 2026-12-06, the 2-vCPU AMD EPYC box, release build of 878047f.
set -euo pipefail
# where PPO starts: one iteration at a learning rate of 1e-12 (start/: its held-out eval.json,
# metrics.jsonl and manifest; deterministic, it stores as the table: 1.2617 nats per byte at 8.8 %,
# the single review's start to the last digit)
sed -e 's/^total_timesteps = .*/total_timesteps = 16384/' -e 's/^learning_rate = .*/learning_rate = 1e-12/' \
  configs/ppo/text-python-wide-table-review16-again-10pct.toml > start.toml
ahr train-policy --model policies/models/text-python-wide --env envs/text-python-short-review16-again.toml \
  --config start.toml --out start-policy --run-dir start --seed 1 --workers 1
# three policies side by side, --workers 1 each (beside a CI run)
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python-wide --env envs/text-python-short-review16-again.toml \
    --config configs/ppo/text-python-wide-table-review16-again-10pct.toml \
    --out policies/text-python-wide-review16-again-10pct-seed$S --seed $S --workers 1 &
done; wait
# the judge at the policies' own memory on the same 64 held-out windows as every text-python-wide
# judge: TOVA first (2 min) ...
ahr eval --model policies/models/text-python-wide --env envs/text-python-short-review16-again.toml \
  --policy policies/text-python-wide-review16-again-10pct-seed1 --policy policies/text-python-wide-review16-again-10pct-seed2 \
  --policy policies/text-python-wide-review16-again-10pct-seed3 --baselines tova \
  --sequences 64 --fractions none --workers 2 --out judge-tova
# ... then per-layer windows, StreamingLLM and uniform (started; it did not finish in the session,
# so no judge-rules/ is committed)
ahr eval --model policies/models/text-python-wide --env envs/text-python-short-review16-again.toml \
  --policy policies/text-python-wide-review16-again-10pct-seed1 --policy policies/text-python-wide-review16-again-10pct-seed2 \
  --policy policies/text-python-wide-review16-again-10pct-seed3 --baselines layer-windows,streaming-llm,uniform \
  --sequences 64 --fractions none --workers 2 --out judge-rules
# what the chain does and what the hindsight features are worth (32 windows each, beside the judge)
for S in 1 2 3; do
  ahr analyze --model policies/models/text-python-wide --policy policies/text-python-wide-review16-again-10pct-seed$S \
    --env envs/text-python-short-review16-again.toml --sequences 32 --lengths none --out analyze-seed$S
done
