#!/usr/bin/env bash
# Fortieth session, 2026-12-05: the judge's label log-probabilities (`ahr_train::evaluate`, untracked)
# with burn's log_softmax (BEFORE, e147f9f) against `ahr_policy::ops::log_softmax` (AFTER): the first
# round of a token-class fit on 1024-byte text, 3 interleaved rounds, its losses compared.
#   docs/results/expf-2026-12-05/label-logprobs/run.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3; mkdir -p "$OUT"
for round in 1 2 3; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    start=$(date +%s.%N)
    $bin eval --model policies/models/text-python --env envs/text-python-short.toml --baselines token-class \
      --sequences 2 --fractions 0.03 --fit-sequences 16 --workers 2 --out /tmp/ll-fit-$tag > /tmp/ll-fit-$tag.log 2>&1 & pid=$!
    while ! grep -q "round 2" /tmp/ll-fit-$tag.log; do sleep 0.5; done
    echo "$(echo "$(date +%s.%N) - $start" | bc)" > $OUT/fit-round1-$tag-round$round.time; kill $pid; wait $pid || true
    grep "round 2" /tmp/ll-fit-$tag.log > $OUT/fit-round1-$tag-round$round.log
  done
  cmp $OUT/fit-round1-before-round$round.log $OUT/fit-round1-after-round$round.log
done
echo "same losses"
