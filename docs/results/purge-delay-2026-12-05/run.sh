#!/usr/bin/env bash
# Forty-first session, 2026-12-05: mimalloc's default purge delay (BEFORE, main at 0023d77: freed
# pages returned to the OS after 1 s) against the binary setting it to -1 (AFTER: never returned),
# release builds of `ahr-cli`, nothing else running, rounds interleaved. Wall time, peak RSS
# (VmHWM / GNU time's %M, KiB) and minor page faults of: `bench train` text-python (6 steps) and
# mqar (10 steps); PPO on 1024-byte text with reviews (32 iterations x 16k steps); the first round
# of the judge's token-class fit; then 8 text pretraining steps, whose losses must be the same bits.
# 2-vCPU Intel Xeon box (KVM, AVX-512, 260 MiB L3). From the repository root:
#   docs/results/purge-delay-2026-12-05/run.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3; mkdir -p "$OUT"
T="%e s, %M KiB peak, %R minor faults"
fit_round1() { # tag bin
  local start pid; start=$(date +%s.%N)
  $2 eval --model policies/models/text-python --env envs/text-python-short.toml --baselines token-class \
    --sequences 2 --fractions 0.03 --fit-sequences 16 --workers 2 --out /tmp/pd-fit-$1 > /tmp/pd-fit-$1.log 2>&1 & pid=$!
  while ! grep -q "round 2" /tmp/pd-fit-$1.log; do sleep 0.5; done
  echo "$(echo "$(date +%s.%N) - $start" | bc) s, $(grep VmHWM /proc/$pid/status | awk '{print $2}') KiB peak" \
    > $OUT/fit-round1-$1-round$round.time
  kill $pid; wait $pid || true
  grep "round 2" /tmp/pd-fit-$1.log > $OUT/fit-round1-$1-round$round.log
}
for round in 1 2 3; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    for preset in text-python:envs/text-python.toml:6 mqar:envs/mqar.toml:10; do
      IFS=: read -r name env steps <<< "$preset"
      /usr/bin/time -f "$T" -o $OUT/bench-train-$name-$tag-round$round.time \
        $bin bench train --model-config configs/model/$name.toml --env $env --steps $steps \
        --out $OUT/bench-train-$name-$tag-round$round.json > /dev/null 2>&1
    done
    rm -rf /tmp/pd-ppo-$tag
    /usr/bin/time -f "$T" -o $OUT/text-keep-$tag-round$round.time \
      $bin train-policy --model policies/models/text-python --env envs/text-python-short-keep.toml \
      --config configs/ppo/text-python-table-v2-keep.toml --total-timesteps 524288 --seed 1 --workers 2 \
      --eval-examples 32 --out /tmp/pd-ppo-$tag/policy --run-dir /tmp/pd-ppo-$tag/run > $OUT/text-keep-$tag-round$round.log 2>&1
    cp /tmp/pd-ppo-$tag/run/eval.json $OUT/text-keep-$tag-round$round-eval.json
    fit_round1 $tag $bin
  done
  scripts/same-policy.py /tmp/pd-ppo-before/policy /tmp/pd-ppo-after/policy \
    $OUT/text-keep-before-round$round-eval.json $OUT/text-keep-after-round$round-eval.json
  cmp $OUT/fit-round1-before-round$round.log $OUT/fit-round1-after-round$round.log
done
for tag in before after; do
  bin=$B; [ $tag = after ] && bin=$A
  rm -rf /tmp/pd-pt-$tag
  /usr/bin/time -f "$T" -o $OUT/pretrain-text-python-$tag.time \
    $bin pretrain --model-config configs/model/text-python.toml --env envs/text-python.toml --out /tmp/pd-pt-$tag --seed 0 --steps 8 > /dev/null 2>&1
  python3 -c "import json,sys; [print(json.dumps({k: r[k] for k in ('step', 'loss', 'grad_norm') if k in r})) for r in map(json.loads, open(sys.argv[1]))]" \
    /tmp/pd-pt-$tag/metrics.jsonl > $OUT/pretrain-text-python-$tag-losses.jsonl
done
cmp $OUT/pretrain-text-python-before-losses.jsonl $OUT/pretrain-text-python-after-losses.jsonl
echo "same bits"
