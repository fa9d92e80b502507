#!/bin/bash
# Side by side: the previous binary (60992d5) and this commit's, 3 rounds interleaved, judge paused.
out=/work/main/docs/results/speed-2026-12-02
pids=$(pgrep -f "train-policy|eval --model" | tr '\n' ' ')
[ -n "$pids" ] && kill -STOP $pids
sleep 2
for round in 1 2 3; do
  for b in before:/tmp/ahr-base after:/tmp/ahr-k5; do
    name=${b%%:*}; bin=${b#*:}
    $bin bench decode --model /work/main/policies/models/mqar --policy /work/main/policies/mqar-budget-seed2 --env /work/main/envs/mqar.toml \
      --ctx 1024,4096,16384 --batch 1,8 --reps 9 --out $out/decode-$name-round$round.json > $out/decode-$name-round$round.log 2>&1
    echo "$name round $round done"
  done
done
[ -n "$pids" ] && kill -CONT $pids
