#!/usr/bin/env bash
# GPU check: on one device, the pretraining step against the same step in PyTorch eager
# (`bench train`), a short pretrain, a short train-policy and `bench decode`, gathered into one
# JSON. Meant for the lent GPU machine (no Rust toolchain there): build the binary here with
# scripts/gpu-build.sh (libtorch of the torch that machine has), carry `target/gpu`, and run
#
#   scripts/gpu-check.sh --device tch-cuda --out "$OUT/gpu-check.json"
#
# Options: [--device tch-cuda] [--bin target/gpu/ahr] [--python python3] [--out gpu-check.json]
# [--quick]. The binary's torch libraries are found through the Python's torch. Every phase has a
# time limit (together 8 minutes) and the JSON holds what finished, with each phase's exit code
# and wall time, so a slow or failing phase still leaves the others' figures (the script then
# exits 1). --quick shrinks
# everything for a CPU smoke run (`--device cpu` or `tch-cpu`) and gives each phase four times its
# limit: on a CPU the limits only guard against a hang (CI's run of it timed out in `pretrain` on a
# loaded 2-core machine, 20 steps taking over 90 s), on a GPU they keep the device budget.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=tch-cuda BIN=target/gpu/ahr PYTHON=python3 OUT=gpu-check.json QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "error: unknown option $1" >&2; exit 1 ;;
  esac
done
[ -x "$BIN" ] || { echo "error: $BIN not found; build it with scripts/gpu-build.sh" >&2; exit 1; }
TORCH_VERSION=$("$PYTHON" -W ignore -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if ldd "$BIN" | grep -q "libtorch.*not found"; then
  [ -n "$TORCH_VERSION" ] || { echo "error: $BIN links libtorch and $PYTHON has no torch" >&2; exit 1; }
  TORCH_LIB=$("$PYTHON" -W ignore -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
BUILT_FOR=$(cat "$(dirname "$BIN")/torch-version" 2>/dev/null || true)
if [ -n "$BUILT_FOR" ] && [ "${TORCH_VERSION%%+*}" != "$BUILT_FOR" ]; then
  echo "warning: $BIN was built against torch $BUILT_FOR but $PYTHON has torch $TORCH_VERSION (libtorch's ABI differs between versions)" >&2
fi
case "$DEVICE" in
  tch-cuda*) PT_DEVICE="cuda${DEVICE#tch-cuda}" ;;
  *) PT_DEVICE=cpu ;;
esac
if [ "$QUICK" = 1 ]; then STEPS=20 TIMESTEPS=16384 CTX=1024,4096 BENCH_STEPS=3 LIMIT_SCALE=4
else STEPS=300 TIMESTEPS=65536 CTX=1024,4096,16384 BENCH_STEPS=20 LIMIT_SCALE=1; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export AHR_DEVICE="$DEVICE"

# phase NAME LIMIT_S COMMAND…: run with a time limit; stdout and stderr to $WORK/NAME.{txt,err}.
FAILED=0
phase() {
  local name=$1 limit=$(($2 * LIMIT_SCALE)) start end rc
  shift 2
  start=$(date +%s.%N)
  timeout "$limit" "$@" > "$WORK/$name.txt" 2> "$WORK/$name.err"
  rc=$?
  end=$(date +%s.%N)
  echo "$name $rc $start $end" >> "$WORK/phases"
  if [ "$rc" = 0 ]; then
    echo "$name: ok in $(python3 -c "print(round($end - $start, 1))") s" >&2
  else
    echo "$name: exit $rc$([ "$rc" = 124 ] && echo " (over its ${limit} s)")" >&2
    tail -5 "$WORK/$name.err" >&2
    FAILED=1
  fi
  return "$rc"
}

PYTORCH_ARGS=()
[ -n "$TORCH_VERSION" ] && PYTORCH_ARGS=(--pytorch "$PYTHON" --pytorch-device "$PT_DEVICE")
phase bench-train 90 "$BIN" bench train --model-config configs/model/mqar.toml --env envs/mqar.toml \
  --devices "$DEVICE" --steps "$BENCH_STEPS" "${PYTORCH_ARGS[@]}" --out "$WORK/bench-train.json"
phase pretrain 90 "$BIN" pretrain --model-config configs/model/mqar.toml --env envs/mqar.toml \
  --out "$WORK/model" --steps "$STEPS"
if [ -f "$WORK/model/config.json" ]; then
  phase train-policy 180 "$BIN" train-policy --model "$WORK/model" --env envs/mqar.toml \
    --config configs/ppo/mqar-budget.toml --out "$WORK/policy" --run-dir "$WORK/policy-run" \
    --total-timesteps "$TIMESTEPS" --eval-examples 64
fi
if [ -d "$WORK/policy" ]; then
  phase decode 120 "$BIN" bench decode --model "$WORK/model" --policy "$WORK/policy" --env envs/mqar.toml \
    --ctx "$CTX" --batch 1,8 --out "$WORK/decode.json"
fi

GPU=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
python3 - "$WORK" "$DEVICE" "$OUT" "$TORCH_VERSION" "$BUILT_FOR" "$GPU" <<'PY'
import json, os, re, statistics, sys
work, device, out, torch_version, built_for, gpu = sys.argv[1:7]
report = {"device": device, "gpu": gpu or None, "torch": torch_version or None, "built_for_torch": built_for or None}
phases = {}
for line in open(f"{work}/phases"):
    name, rc, start, end = line.split()
    phases[name] = {"exit": int(rc), "wall_s": round(float(end) - float(start), 1)}
report["phases"] = phases
def load(name):
    path = f"{work}/{name}"
    return json.load(open(path)) if os.path.exists(path) else None
if (runs := load("bench-train.json")) is not None:
    report["bench_train"] = [{k: r[k] for k in ("device", "tokens_per_sec")} for r in runs]
    ahr = [r["tokens_per_sec"] for r in runs if not r["device"].startswith("pytorch")]
    ref = [r["tokens_per_sec"] for r in runs if r["device"].startswith("pytorch")]
    if ahr and ref:
        report["ahr_over_pytorch_eager"] = round(ahr[0] / ref[0], 3)
if os.path.exists(f"{work}/pretrain.txt"):
    if m := re.search(r"at (\d+) tokens/s", open(f"{work}/pretrain.txt").read()):
        report["pretrain_tokens_per_sec"] = float(m.group(1))
metrics = f"{work}/policy-run/metrics.jsonl"
if os.path.exists(metrics):
    rows = [json.loads(l) for l in open(metrics) if l.strip()]
    sps = [r["charts/SPS"] for r in rows if "charts/SPS" in r]
    if sps:
        report["train_policy_sps"] = round(statistics.mean(sps), 1)
        report["train_policy_env_steps"] = max(r.get("step", 0) for r in rows)
if (decode := load("decode.json")) is not None:
    report["decode"] = decode
json.dump(report, open(out, "w"), indent=2)
print(json.dumps({k: v for k, v in report.items() if k != "decode"}, indent=1))
PY
exit "$FAILED"
