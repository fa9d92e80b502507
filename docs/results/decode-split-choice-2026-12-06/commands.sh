#!/usr/bin/env bash
# A split of a lone stream's cache across the cores chosen by measuring both ways as the model
# decodes (tried, not kept). BEFORE = main at 56f37a0; the attention-level variant (one choice per
# layer, timing the attention call) and the step-level one (one choice per step, timing the whole
# step, so the LM head's use of the awake threads counts: step-level.patch) were built from it.
# 2026-12-06, the 2-vCPU AMD EPYC box, nothing else running. Six rounds, before and after in turn:
for r in 1 2 3 4 5 6; do for b in before split; do   # attention-level/ (step-level/: split2)
  ahr-$b bench decode --model policies/models/mqar --policy policies/mqar-budget-seed2 --env envs/mqar.toml \
    --ctx 16384 --batch 1 --reps 100 --cold --out mqar-$b-cold-r$r.json > mqar-$b-cold-r$r.log 2>&1
done; done
