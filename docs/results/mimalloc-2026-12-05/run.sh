#!/usr/bin/env bash
# Thirty-eighth session, 2026-12-05: glibc's malloc (BEFORE, main at 9b570a5) against mimalloc as
# the global allocator (AFTER, this change), release builds of `ahr-cli`, nothing else running,
# rounds interleaved. Run from the repository root:
#   docs/results/mimalloc-2026-12-05/run.sh BEFORE AFTER OUT
set -euo pipefail
B=$1; A=$2; OUT=$3; mkdir -p "$OUT"
R=docs/results/rollout-2026-12-03
for round in 1 2 3 4 5; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    # 1. rollouts of the hard-task model at L = 128 … 2048 (2 workers, 4 envs × 4 streams, 4096 / L rollouts)
    for L in 128 512 1024 2048; do
      $bin bench rollout --model policies/models/mqar-tiny-updates-1024-ft3 --env $R/mqar-tiny-updates-$L.toml \
        --workers 2 --num-envs 4 --iterations $(( 4096 / L > 2 ? 4096 / L : 2 )) --out $OUT/rollout-L$L-$tag-round$round.json > /dev/null
    done
    # 2. decode steps, the mqar preset, 1k and 16k tokens, batch 1 and 8
    $bin bench decode --model policies/models/mqar --ctx 1024,16384 --batch 1,8 --reps 15 --out $OUT/decode-$tag-round$round.json > /dev/null
  done
done
for round in 1 2; do
  for tag in before after; do
    bin=$B; [ $tag = after ] && bin=$A
    # 3. the quickstart's policy stage end to end (PPO, 250 iterations, held-out evaluation): wall time,
    #    and the trained policy and its held-out line must be the same bytes
    rm -rf /tmp/mi-$tag
    /usr/bin/time -f "%e" -o $OUT/train-policy-$tag-round$round.time \
      $bin train-policy --model policies/models/mqar --env envs/mqar.toml --config configs/ppo/mqar-budget.toml \
      --seed 1 --workers 2 --out /tmp/mi-$tag/policy --run-dir /tmp/mi-$tag/run > $OUT/train-policy-$tag-round$round.log 2>&1
    cp /tmp/mi-$tag/run/eval.json $OUT/train-policy-$tag-round$round-eval.json
    # 4. pretraining steps of the mqar preset (flex)
    $bin bench train --model-config configs/model/mqar.toml --env envs/mqar.toml --steps 10 --out $OUT/train-$tag-round$round.json > /dev/null
    # 5. the judge: the first round of a token-class fit on 1024-byte text (as docs/results/judge-prefix-2026-12-05)
    start=$(date +%s.%N)
    $bin eval --model policies/models/text-python --env envs/text-python-short.toml --baselines token-class \
      --sequences 2 --fractions 0.03 --fit-sequences 16 --workers 2 --out /tmp/mi-fit-$tag > /tmp/mi-fit-$tag.log 2>&1 & pid=$!
    while ! grep -q "round 2" /tmp/mi-fit-$tag.log; do sleep 0.5; done
    echo "$(echo "$(date +%s.%N) - $start" | bc)" > $OUT/fit-round1-$tag-round$round.time; kill $pid; wait $pid || true
    grep "round 2" /tmp/mi-fit-$tag.log > $OUT/fit-round1-$tag-round$round.log
  done
done
# the same bits: the trained policies' tensors (safetensors data and tensor table; the metadata's key
# order and burn's random parameter ids in policy.bpk differ from run to run), their manifests and
# held-out lines, the fit's losses after round 1
python3 - <<'PY'
import json, struct
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None); return h, b[8 + n:]
assert load("/tmp/mi-before/policy/policy.safetensors") == load("/tmp/mi-after/policy/policy.safetensors")
PY
cmp /tmp/mi-before/policy/manifest.json /tmp/mi-after/policy/manifest.json
for r in 1 2; do cmp $OUT/train-policy-before-round$r-eval.json $OUT/train-policy-after-round$r-eval.json; done
for r in 1 2; do cmp $OUT/fit-round1-before-round$r.log $OUT/fit-round1-after-round$r.log; done
echo "same bits"
