#!/usr/bin/env bash
# Fifty-ninth session (2026-12-07), the 2-vCPU AMD EPYC box, release build of 219878e (ahr analyze's
# `as_table`), beside a judge. What is a 256-byte policy beyond a per-token table? Each policy's own
# table (every (layer, byte) at the option it chose most often over held-out windows 128-255) against
# the policy, both scored on held-out windows 0-127 through the parallel forward, paired; and every
# meta-feature at its mean (the `context: ...` ablation). ~25 s per policy.
set -euo pipefail
for S in 1 2 3 4 5 6; do
  mkdir -p python-seed$S; ahr analyze --model policies/models/text-tiny --policy policies/text-demote-python-table-seed$S \
    --env envs/text-demote-python.toml --sequences 128 --lengths none --out python-seed$S 2> python-seed$S/analyze.log
done
# /usr/share/doc (the four .md files OpenMPI adds left out by the env's `exclude`)
for P in text-demote1k-seed{1,2,3,4,5,6} text-demote-table-seed{1,2,3}; do
  mkdir -p $P; ahr analyze --model policies/models/text-tiny --policy policies/$P \
    --env envs/text-demote.toml --sequences 128 --lengths none --out $P 2> $P/analyze.log
done
./summary.py > summary.md
# the three policies started at the per-byte table (docs/results/python-table-2026-12-07/commands.sh, 4.-5.)
for S in 1 2 3; do
  mkdir -p ptable-seed$S; ahr analyze --model policies/models/text-tiny --policy policies/text-demote-python-ptable-seed$S \
    --env envs/text-demote-python.toml --sequences 128 --lengths none --out ptable-seed$S 2> ptable-seed$S/analyze.log
done
./summary.py > summary.md
