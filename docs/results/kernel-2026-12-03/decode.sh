#!/bin/bash
# Side by side: the previous binary (33a9e2d, /tmp/bin/ahr6) and the shared-factor pass (/tmp/bin/ahr9),
# seven rounds interleaved (ROUNDS="8 ... 14" for more), 25 steps each, nothing else running.
out=$(dirname "$0")
for round in ${ROUNDS:-1 2 3 4 5 6 7}; do
  for b in before:/tmp/bin/ahr6 after:/tmp/bin/ahr9; do
    name=${b%%:*}; bin=${b#*:}
    $bin bench decode --model /work/main/policies/models/mqar --policy /work/main/policies/mqar-budget-seed2 --env /work/main/envs/mqar.toml \
      --ctx 1024,4096,16384 --batch 1,8 --reps 25 --out $out/decode-$name-round$round.json > $out/decode-$name-round$round.log 2>&1
    echo "$name round $round done $(date +%T)"
  done
done
