#!/bin/bash
# Rollout SPS side by side: the previous binary (d814384) and the register-chunk kernel (a28e607),
# three rounds interleaved, envs/mqar-scattered.toml at seq_len L (files in ../speed-2026-12-02/).
out=$(dirname "$0")
envs=$out/../speed-2026-12-02
for round in 1 2 3; do
for L in 128 512 1024 2048; do
for b in before:/tmp/ahr-base after:/tmp/ahr-k7; do
  name=${b%%:*}; bin=${b#*:}
  it=$(( 4096 / L )); [ $it -lt 2 ] && it=2
  $bin bench rollout --model /work/main/policies/models/mqar --env $envs/mqar-scattered-$L.toml --workers 2 --num-envs 4 --iterations $it --out $out/rollout-$name-L$L-round$round.json > /dev/null 2>&1
  echo "$name L=$L round $round: $(grep -o '"sps": *[0-9.]*' $out/rollout-$name-L$L-round$round.json)"
done; done; done
