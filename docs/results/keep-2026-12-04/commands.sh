#!/usr/bin/env bash
# Thirty-third session, 2026-12-04, the 2-vCPU box (AMD EPYC, AVX-512), release builds of f927118's
# working tree. Run from the repository root; outputs land in docs/results/keep-2026-12-04/ (the
# sessions ran these commands from there with ../../../ paths; the same commands, from the root).
# The thirty-third session's machine was shut down after training; the thirty-fourth (same day,
# a fresh machine, release build of ef0fef4) trained the three seeds again — every eval.json and
# held-out line came out byte-identical — and ran the judge and the analyses below.
set -euo pipefail
R=docs/results/keep-2026-12-04
# train-policy for each seed given, side by side, with its log, eval.json and metrics beside it
train() {
  for S in "$@"; do
    D=$R/train/text-python-table-v2-keep-seed$S; mkdir -p $D
    ahr train-policy --model policies/models/text-python --env envs/text-python-short-keep.toml \
      --config configs/ppo/text-python-table-v2-keep.toml --out policies/text-python-table-v2-keep-seed$S \
      --run-dir runs/text-python-table-v2-keep-seed$S --seed $S --workers 1 > $D/train.log 2>&1 &
  done; wait
  for S in "$@"; do
    D=$R/train/text-python-table-v2-keep-seed$S
    cp runs/text-python-table-v2-keep-seed$S/eval.json $D/
    gzip -9c runs/text-python-table-v2-keep-seed$S/metrics.jsonl > $D/metrics.jsonl.gz
  done
}
# ahr eval into $R/OUT (env and further arguments given), its log and compressed raw files inside,
# and the policies' table when policies were judged
judge() {
  local out=$1; shift
  ahr eval --model policies/models/text-python "$@" --sequences 128 --workers 2 --out $R/$out > $R/$out.log 2>&1
  mv $R/$out.log $R/$out/judge.log
  gzip -9 $R/$out/metrics.json $R/$out/points.jsonl
  if [[ " $* " == *" --policy "* ]]; then scripts/judge-table.py $R/$out/metrics.json.gz > $R/$out/policies.md; fi
}
keep=(--env envs/text-python-short-keep.toml)
policies() { for S in "$@"; do echo --policy policies/text-python-table-v2-keep-seed$S; done; }

# the start is the table (reviews at 16 dropping, as envs/text-python-short-review16.toml): one
# iteration reads 1.6508 nats at 2.9 % on the env's 256 held-out windows
ahr train-policy --model policies/models/text-python --env envs/text-python-short-keep.toml \
  --config configs/ppo/text-python-table-v2-keep.toml --out /tmp/r33/init --run-dir /tmp/r33/init-run \
  --seed 1 --workers 2 --total-timesteps 16384
# 1024-byte text at 3 % with reviews at age 16 that may keep a byte to 32, 64, 128 or 256: three
# seeds side by side (384 iterations, 20 min), judged against token-class and TOVA (38 min)
train 1 2 3
judge judge-1024-keep "${keep[@]}" $(policies 1 2 3) --baselines token-class,tova --fractions 0.03
# what the policies do (32 held-out windows; seed 1 with the feature ablation: 4 min)
for S in 1 2 3; do
  A=--no-ablation; [ $S = 1 ] && A=
  ahr analyze --model policies/models/text-python --policy policies/text-python-table-v2-keep-seed$S \
    "${keep[@]}" --sequences 32 --lengths none $A \
    --out $R/analyze-1024/text-python-table-v2-keep-seed$S > $R/analyze-1024/analyze-seed$S.log 2>&1
done
# the byte table given every storage the keep reviews produce as a write option (no reviews):
# keep-storage-as-writes.toml, token-class alone at seed 1's memory (3.17 %; 45 min beside CI, niced)
judge judge-1024-keep-writes --env $R/keep-storage-as-writes.toml --baselines token-class --fractions 0.0317
# three more seeds (4-6, side by side, 17 min) and the policies alone on the judge's 128 windows with
# TOVA (paired); against token-class unpaired, from judge-1024-keep's fitted settings (same windows,
# same write menu)
train 4 5 6
judge judge-1024-keep-seeds456 "${keep[@]}" $(policies 4 5 6) --baselines tova --fractions 0.03
