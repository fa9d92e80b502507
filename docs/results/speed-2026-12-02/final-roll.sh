#!/bin/bash
out=/work/main/docs/results/speed-2026-12-02
pids=$(pgrep -f "train-policy|eval --model" | tr '\n' ' ')
[ -n "$pids" ] && kill -STOP $pids
sleep 2
for round in 1 2 3; do
for L in 128 512 1024 2048; do
for b in before:/tmp/ahr-base after:/tmp/ahr-k5; do
  name=${b%%:*}; bin=${b#*:}
  it=$(( 4096 / L )); [ $it -lt 2 ] && it=2
  $bin bench rollout --model /work/main/policies/models/mqar --env /tmp/roll/mqar-scattered-$L.toml --workers 2 --num-envs 4 --iterations $it --out $out/rollout-$name-L$L-round$round.json > /dev/null 2>&1
  echo "$name L=$L round $round: $(grep -o '"sps": *[0-9.]*' $out/rollout-$name-L$L-round$round.json)"
done; done; done
[ -n "$pids" ] && kill -CONT $pids
