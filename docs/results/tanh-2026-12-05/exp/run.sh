#!/usr/bin/env bash
# Thirty-ninth session, 2026-12-05: the policy's vectorised tanh (BEFORE, 77bcfb1) against the same
# with `exp` and `log_softmax` on the host skipping the C library's underflow path (AFTER), PPO on
# 1024-byte text with reviews (32 iterations), 3 interleaved rounds, bits compared. From the
# repository root:  docs/results/tanh-2026-12-05/exp/run.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3
mkdir -p $OUT
for round in 1 2 3; do
  for tag in tanh exp; do
    bin=$B; [ $tag = exp ] && bin=$A
    rm -rf /tmp/x-$tag
    /usr/bin/time -f "%e" -o $OUT/text-keep-$tag-round$round.time $bin train-policy --model policies/models/text-python --env envs/text-python-short-keep.toml \
      --config configs/ppo/text-python-table-v2-keep.toml --total-timesteps 524288 --seed 1 --workers 2 --eval-examples 32 \
      --out /tmp/x-$tag/policy --run-dir /tmp/x-$tag/run > $OUT/text-keep-$tag-round$round.log 2>&1
    cp /tmp/x-$tag/run/eval.json $OUT/text-keep-$tag-round$round-eval.json
  done
  python3 - <<'PY'
import json, struct
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None); return h, b[8 + n:]
assert load("/tmp/x-tanh/policy/policy.safetensors") == load("/tmp/x-exp/policy/policy.safetensors")
PY
  cmp $OUT/text-keep-tanh-round$round-eval.json $OUT/text-keep-exp-round$round-eval.json
done
echo "same bits"
