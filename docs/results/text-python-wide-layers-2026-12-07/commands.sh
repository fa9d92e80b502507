#!/usr/bin/env bash
# The staged TOVA families (tova-layers, tova-class with its tilt stage) on the dense text model
# text-python-wide at 5 %, against the 51st session's evicters started at tova-out. 2026-12-07,
# fifty-fifth session, the 2-vCPU AMD EPYC box, release build of 544b3dd; ~22 min beside a CI run
# and three analyze runs.
set -euo pipefail
P="--policy policies/text-python-wide-evict25-out-seed1 --policy policies/text-python-wide-evict25-out-seed2 --policy policies/text-python-wide-evict25-out-seed3"
ahr eval --model policies/models/text-python-wide --env envs/text-python-short-evict25-out.toml $P \
  --baselines tova-layers,tova-class --sequences 64 --fractions none --workers 2 --out judge-evict25-out-policies
