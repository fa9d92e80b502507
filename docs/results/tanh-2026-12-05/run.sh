#!/usr/bin/env bash
# Thirty-ninth session, 2026-12-05: burn's `tanh` (BEFORE, main at ddd6bc9: the C library's tanhf per
# element, evaluated again in autodiff's backward pass) against the policy's own vectorised tanh
# (AFTER, this change), release builds of `ahr-cli`, nothing else running, rounds interleaved.
# 2-vCPU Intel Xeon box (KVM, 260 MiB L3). Run from the repository root:
#   docs/results/tanh-2026-12-05/run.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3; mkdir -p "$OUT"
same_tensors() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None); return h, b[8 + n:]
assert load(sys.argv[1]) == load(sys.argv[2]), f"{sys.argv[1]} and {sys.argv[2]} differ"
PY
}
run_ppo() { # tag bin name model env config steps|all
  local tag=$1 bin=$2 name=$3 steps=""; rm -rf /tmp/tanh-$name-$tag
  [ "$7" != all ] && steps="--total-timesteps $7"
  /usr/bin/time -f "%e" -o $OUT/$name-$tag-round$round.time \
    $bin train-policy --model $4 --env $5 --config $6 $steps --seed 1 --workers 2 \
    --eval-examples 32 --out /tmp/tanh-$name-$tag/policy --run-dir /tmp/tanh-$name-$tag/run > $OUT/$name-$tag-round$round.log 2>&1
  cp /tmp/tanh-$name-$tag/run/eval.json $OUT/$name-$tag-round$round-eval.json
  cp /tmp/tanh-$name-$tag/run/metrics.jsonl $OUT/$name-$tag-round$round-metrics.jsonl
}
R=docs/results/rollout-2026-12-03
for round in 1 2 3; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    # 1. PPO on 1024-byte text with reviews (the thirty-third session's design): 32 iterations of 16k steps
    run_ppo $tag $bin text-keep policies/models/text-python envs/text-python-short-keep.toml \
      configs/ppo/text-python-table-v2-keep.toml 524288
    # 2. the attention-over-meta-features policy (tanh on [N, K, H]) on re-assignment MQAR, 100 iterations
    run_ppo $tag $bin attention policies/models/mqar-tiny-updates envs/mqar-tiny-updates-review.toml \
      configs/ppo/mqar-tiny-budget-attention.toml 51200
    # 3. rollouts alone (2 workers) at L = 128 and 1024
    for L in 128 1024; do
      $bin bench rollout --model policies/models/mqar-tiny-updates-1024-ft3 --env $R/mqar-tiny-updates-$L.toml \
        --workers 2 --num-envs 4 --iterations $(( 4096 / L > 2 ? 4096 / L : 2 )) --out $OUT/rollout-L$L-$tag-round$round.json > /dev/null
    done
  done
  for name in text-keep attention; do
    same_tensors /tmp/tanh-$name-before/policy/policy.safetensors /tmp/tanh-$name-after/policy/policy.safetensors
    cmp /tmp/tanh-$name-before/policy/manifest.json /tmp/tanh-$name-after/policy/manifest.json
    cmp $OUT/$name-before-round$round-eval.json $OUT/$name-after-round$round-eval.json
  done
done
for round in 1 2; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    # 4. the quickstart's policy stage end to end (PPO, 250 iterations, held-out evaluation)
    run_ppo $tag $bin quickstart policies/models/mqar envs/mqar.toml configs/ppo/mqar-budget.toml all
  done
  same_tensors /tmp/tanh-quickstart-before/policy/policy.safetensors /tmp/tanh-quickstart-after/policy/policy.safetensors
  cmp $OUT/quickstart-before-round$round-eval.json $OUT/quickstart-after-round$round-eval.json
done
echo "same bits"
