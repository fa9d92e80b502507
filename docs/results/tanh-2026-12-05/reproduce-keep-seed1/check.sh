#!/usr/bin/env bash
# Thirty-ninth session, 2026-12-05: retrain a committed policy with this session's code (the policy's
# own tanh, exp and log_softmax) and compare it with the committed one — seed 1 of the thirty-third
# session's 1024-byte text policies (384 iterations; trained there on the AMD box with 1 worker).
# From the repository root: docs/results/tanh-2026-12-05/reproduce-keep-seed1/check.sh AHR_BINARY
set -euo pipefail
BIN=$1; T=$(mktemp -d)
/usr/bin/time -f "%e s" $BIN train-policy --model policies/models/text-python --env envs/text-python-short-keep.toml \
  --config configs/ppo/text-python-table-v2-keep.toml --out $T/seed1 --run-dir $T/run1 --seed 1 --workers 2
python3 - "$T/seed1/policy.safetensors" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None); return h, b[8 + n:]
assert load(sys.argv[1]) == load("policies/text-python-table-v2-keep-seed1/policy.safetensors"), "tensors differ"
PY
cmp $T/seed1/manifest.json policies/text-python-table-v2-keep-seed1/manifest.json
cmp $T/run1/eval.json docs/results/keep-2026-12-04/train/text-python-table-v2-keep-seed1/eval.json
echo "identical to the committed policy: tensors, manifest, held-out eval.json"
