#!/bin/bash
# Side by side: before (/tmp/bin/ahr32c, dd8e086: the decode step called from the main thread) and
# after (/tmp/bin/ahr32d: bench decode's loop on a worker of the decode pool), rounds interleaved,
# 25 steps each, nothing else running. Then: scripts/decode-summary.py docs/results/decode-pool-2026-12-04
out=$(dirname "$0")
for round in ${ROUNDS:-1 2 3 4 5 6 7}; do
  for b in before:/tmp/bin/ahr32c after:/tmp/bin/ahr32d; do
    name=${b%%:*}; bin=${b#*:}
    $bin bench decode --model /work/main/policies/models/mqar --policy /work/main/policies/mqar-budget-seed2 --env /work/main/envs/mqar.toml \
      --ctx 1024,4096,16384 --batch 1,8 --reps 25 --out $out/decode-$name-round$round.json > $out/decode-$name-round$round.log 2>&1
    echo "$name round $round done $(date +%T)"
  done
done
