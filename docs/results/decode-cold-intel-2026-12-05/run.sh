#!/usr/bin/env bash
# Thirty-eighth session, 2026-12-05, a 2-vCPU Intel Xeon box with a 260 MiB L3 (not the AMD EPYC,
# 32 MiB L3, of docs/results/decode-cold-2026-12-05): `ahr bench decode` warm and --cold (now
# sweeping four times the largest cache: 1040 MiB here), interleaved process by process, the mqar
# preset and its policy at 16k tokens, batch 1 and 8, one binary, nothing else running.
#   docs/results/decode-cold-intel-2026-12-05/run.sh AHR OUT
set -euo pipefail
bin=$1; out=$2; mkdir -p "$out"
for round in 1 2 3 4 5; do
  for mode in warm cold; do
    flag=$([ $mode = cold ] && echo --cold || true)
    "$bin" bench decode --model policies/models/mqar --policy policies/mqar-budget-seed2 --env envs/mqar.toml \
      --ctx 16384 --batch 1,8 --reps 25 $flag --out "$out/decode-mqar-$mode-round$round.json" > "$out/decode-mqar-$mode-round$round.log" 2>&1
  done
done
# One probe each (the binary of this change), threads of the decode pool fixed:
#   RAYON_NUM_THREADS=1|2 AHR bench decode --model policies/models/mqar --ctx 16384 --batch 1 --reps 15 --cold \
#     --out decode-mqar-cold-threads1|2.json
# The kernel alone, three rounds:
#   FLUSH=1040 [SPLIT=1] cargo run --release -q -p ahr-tpa --example attend_micro -- 16384 200 > attend-micro-flush1040[-split]-roundR.txt
