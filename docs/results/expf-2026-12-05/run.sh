#!/usr/bin/env bash
# Fortieth session, 2026-12-05: burn's `exp` (BEFORE, main at c3589c5: the C library's expf once per
# element in SiLU's sigmoid, log_softmax and exp) against `ahr_tpa::expf` (AFTER, this change: the
# same bits, vectorised), release builds of `ahr-cli`, nothing else running, rounds interleaved.
# 2-vCPU Intel Xeon box (KVM, AVX-512, 260 MiB L3). Run from the repository root:
#   docs/results/expf-2026-12-05/run.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3; mkdir -p "$OUT"
run_ppo() { # tag bin name model env config steps|all
  local tag=$1 bin=$2 name=$3 steps=""; rm -rf /tmp/expf-$name-$tag
  [ "$7" != all ] && steps="--total-timesteps $7"
  /usr/bin/time -f "%e" -o $OUT/$name-$tag-round$round.time \
    $bin train-policy --model $4 --env $5 --config $6 $steps --seed 1 --workers 2 \
    --eval-examples 32 --out /tmp/expf-$name-$tag/policy --run-dir /tmp/expf-$name-$tag/run > $OUT/$name-$tag-round$round.log 2>&1
  cp /tmp/expf-$name-$tag/run/eval.json $OUT/$name-$tag-round$round-eval.json
}
fit_round1() { # tag bin: the first round of a token-class fit on 1024-byte text (its SwiGLU model's forwards)
  local start pid; start=$(date +%s.%N)
  $2 eval --model policies/models/text-python --env envs/text-python-short.toml --baselines token-class \
    --sequences 2 --fractions 0.03 --fit-sequences 16 --workers 2 --out /tmp/expf-fit-$1 > /tmp/expf-fit-$1.log 2>&1 & pid=$!
  while ! grep -q "round 2" /tmp/expf-fit-$1.log; do sleep 0.5; done
  echo "$(echo "$(date +%s.%N) - $start" | bc)" > $OUT/fit-round1-$1-round$round.time; kill $pid; wait $pid || true
  grep "round 2" /tmp/expf-fit-$1.log > $OUT/fit-round1-$1-round$round.log
}
R=docs/results/rollout-2026-12-03
for round in 1 2 3; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    # 1. PPO on 1024-byte text with reviews (SwiGLU model, 256-byte vocabulary): 32 iterations of 16k steps
    run_ppo $tag $bin text-keep policies/models/text-python envs/text-python-short-keep.toml \
      configs/ppo/text-python-table-v2-keep.toml 524288
    # 2. the quickstart's policy stage end to end (mqar model, V = 8192: the exact baseline's log_softmax)
    run_ppo $tag $bin quickstart policies/models/mqar envs/mqar.toml configs/ppo/mqar-budget.toml all
    # 3. the judge's fit, first round
    fit_round1 $tag $bin
    # 4. rollouts alone (2 workers) at L = 128 and 1024
    for L in 128 1024; do
      $bin bench rollout --model policies/models/mqar-tiny-updates-1024-ft3 --env $R/mqar-tiny-updates-$L.toml \
        --workers 2 --num-envs 4 --iterations $(( 4096 / L > 2 ? 4096 / L : 2 )) --out $OUT/rollout-L$L-$tag-round$round.json > /dev/null
    done
  done
  for name in text-keep quickstart; do
    scripts/same-policy.py /tmp/expf-$name-before/policy /tmp/expf-$name-after/policy \
      $OUT/$name-before-round$round-eval.json $OUT/$name-after-round$round-eval.json
  done
  cmp $OUT/fit-round1-before-round$round.log $OUT/fit-round1-after-round$round.log
done
echo "same bits"
