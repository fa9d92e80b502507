#!/usr/bin/env bash
# Forty-first session, 2026-12-05: the parallel forward's host attention (`host::masked_attention`)
# before (BEFORE, main at e85ee78: each feature's weighted values in its own pass over the weights,
# the visible maximum in chunks of 8 with `f32::max`, keys scored one block of 32 at a time) and
# after (AFTER: every feature's values in one pass, two per 16-lane vector; the maximum in vectors;
# four blocks of keys at a time) — the same bits. Release builds of `ahr-cli`, nothing else running,
# rounds interleaved, 2-vCPU Intel Xeon box (KVM, AVX-512, 260 MiB L3). From the repository root:
#   docs/results/masked-kernel-2026-12-05/run.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3; mkdir -p "$OUT"
fit_round1() { # tag bin
  local start pid; start=$(date +%s.%N)
  $2 eval --model policies/models/text-python --env envs/text-python-short.toml --baselines token-class \
    --sequences 2 --fractions 0.03 --fit-sequences 16 --workers 2 --out /tmp/mk-fit-$1 > /tmp/mk-fit-$1.log 2>&1 & pid=$!
  while ! grep -q "round 2" /tmp/mk-fit-$1.log; do sleep 0.5; done
  echo "$(echo "$(date +%s.%N) - $start" | bc)" > $OUT/fit-round1-$1-round$round.time
  kill $pid; wait $pid || true
  grep "round 2" /tmp/mk-fit-$1.log > $OUT/fit-round1-$1-round$round.log
}
for round in 1 2 3; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    rm -rf /tmp/mk-ppo-$tag
    /usr/bin/time -f "%e" -o $OUT/text-keep-$tag-round$round.time \
      $bin train-policy --model policies/models/text-python --env envs/text-python-short-keep.toml \
      --config configs/ppo/text-python-table-v2-keep.toml --total-timesteps 524288 --seed 1 --workers 2 \
      --eval-examples 32 --out /tmp/mk-ppo-$tag/policy --run-dir /tmp/mk-ppo-$tag/run > $OUT/text-keep-$tag-round$round.log 2>&1
    cp /tmp/mk-ppo-$tag/run/eval.json $OUT/text-keep-$tag-round$round-eval.json
    fit_round1 $tag $bin
  done
  scripts/same-policy.py /tmp/mk-ppo-before/policy /tmp/mk-ppo-after/policy \
    $OUT/text-keep-before-round$round-eval.json $OUT/text-keep-after-round$round-eval.json
  cmp $OUT/fit-round1-before-round$round.log $OUT/fit-round1-after-round$round.log
done
echo "same bits"
