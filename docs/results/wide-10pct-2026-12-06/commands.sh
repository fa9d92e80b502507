#!/usr/bin/env bash
# PPO on the text model that reads to ~256 bytes (policies/models/text-python-wide), 1024-byte Python
# documentation at 10 % of the exact memory (envs/text-python-short.toml), started at this model's
# byte table fitted at 10 %; then the judge at the policies' own memory.
# 2026-12-06, the 2-vCPU AMD EPYC box, release builds of 56f37a0 (fit-rule, train-policy) and d2ec33a (eval:
# `--fractions none`; nothing else changed).
set -euo pipefail
# the byte table at 10 % (its measurements kept for the judge's fits)
ahr fit-rule --model policies/models/text-python-wide --env envs/text-python-short.toml --fraction 0.10 \
  --fit-cache fit-cache --workers 2 --out configs/prior/text-python-wide-short-10pct.json
# three policies side by side, --workers 1 each
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python-wide --env envs/text-python-short.toml \
    --config configs/ppo/text-python-wide-table-10pct.toml --out policies/text-python-wide-10pct-seed$S --seed $S --workers 1 &
done; wait
# the judge at the policies' own memory (--fractions none: no fixed target). The byte table refitted
# (standard fit, 16 training windows) at seed 1's memory only, reusing the fit-rule's measurements
# (16 min; a first try with all three policies and five families was killed after 5 min, when the
# three fits would have taken ~1.5 h: judge-1024-10pct-seed1/eval-first-try-killed.log.gz) ...
ahr eval --model policies/models/text-python-wide --env envs/text-python-short.toml \
  --policy policies/text-python-wide-10pct-seed1 --baselines token-class --sequences 64 --fractions none \
  --fit-cache fit-cache --workers 2 --out judge-1024-10pct-seed1
# ... and the other families at all three policies' memory (16 min); the same 64 held-out windows
ahr eval --model policies/models/text-python-wide --env envs/text-python-short.toml \
  --policy policies/text-python-wide-10pct-seed1 --policy policies/text-python-wide-10pct-seed2 \
  --policy policies/text-python-wide-10pct-seed3 --baselines tova,streaming-llm,layer-windows,uniform \
  --sequences 64 --fractions none --workers 2 --out judge-1024-10pct-rules
