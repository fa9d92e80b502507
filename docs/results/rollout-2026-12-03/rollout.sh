#!/bin/bash
# Rollout SPS of the hard-task model (policies/models/mqar-tiny-updates-1024-ft3) on tiny MQAR with
# re-assignments at L = 128, 512, 1024, 2048 (the env files here: envs/mqar-tiny-updates-512.toml
# with seq_len = L), 2 workers, 4 envs × 4 streams, ≥ 16k env steps per run, three rounds interleaved.
out=$(dirname "$0")
bin=${AHR:-ahr}
for round in 1 2 3; do
for L in 128 512 1024 2048; do
  it=$(( 4096 / L )); [ $it -lt 2 ] && it=2
  $bin bench rollout --model /work/main/policies/models/mqar-tiny-updates-1024-ft3 --env $out/mqar-tiny-updates-$L.toml --workers 2 --num-envs 4 --iterations $it --out $out/rollout-L$L-round$round.json > /dev/null 2>&1
  echo "L=$L round $round: $(grep -o '"sps": *[0-9.]*' $out/rollout-L$L-round$round.json)"
done; done
