#!/usr/bin/env bash
# Decode at 16k, batch 1, the mqar preset, 100 repeats, cold (every cache and weight streamed from
# memory) and warm; release build of 3c9ea60, 2026-12-06 21:15, the 2-vCPU AMD EPYC box, nothing
# else running. uniform:drop (no cache at all) is the step's fixed cost: projections and the LM head.
ahr bench decode --model policies/models/mqar --policy policies/mqar-budget-seed2 --env envs/mqar.toml \
  --ctx 16384 --batch 1 --reps 100 --cold --out mqar-16k-b1-cold.json
ahr bench decode --model policies/models/mqar --policy policies/mqar-budget-seed2 --env envs/mqar.toml \
  --ctx 16384 --batch 1 --reps 100 --out mqar-16k-b1-warm.json
