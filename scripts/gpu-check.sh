#!/usr/bin/env bash
# GPU check: a short pretrain, a short train-policy and `bench decode` on one device, with the
# throughputs gathered into one JSON. Meant for the lent GPU machine (no Rust toolchain there):
# build `ahr` with `--features tch` here, carry the binary, and point LD_LIBRARY_PATH at the
# torch libraries on that machine. Tested on CPU with `--device tch-cpu` (or `cpu`).
#
#   scripts/gpu-check.sh [--device tch-cuda] [--bin target/release/ahr] [--out gpu-check.json] [--quick]
#
# Budget: under 8 minutes on a GPU (pretrain 300 steps, 131 072 policy env steps, decode at
# 1k/4k/16k tokens × batch 1/8); --quick shrinks everything for a CPU smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=tch-cuda BIN=target/release/ahr OUT=gpu-check.json QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "error: unknown option $1" >&2; exit 1 ;;
  esac
done
[ -x "$BIN" ] || { echo "error: $BIN not found; build it with: cargo build --release -p ahr-cli --features tch" >&2; exit 1; }
if [ "$QUICK" = 1 ]; then STEPS=20 TIMESTEPS=16384 CTX=1024,4096 ; else STEPS=300 TIMESTEPS=131072 CTX=1024,4096,16384; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export AHR_DEVICE="$DEVICE"
t0=$(date +%s.%N)
"$BIN" pretrain --model-config configs/model/mqar.toml --env envs/mqar.toml --out "$WORK/model" --steps "$STEPS" > "$WORK/pretrain.txt"
t1=$(date +%s.%N)
"$BIN" train-policy --model "$WORK/model" --env envs/mqar.toml --config configs/ppo/mqar-budget.toml \
  --out "$WORK/policy" --run-dir "$WORK/policy-run" --total-timesteps "$TIMESTEPS" --eval-examples 64 > "$WORK/policy.txt"
t2=$(date +%s.%N)
"$BIN" bench decode --model "$WORK/model" --policy "$WORK/policy" --env envs/mqar.toml --ctx "$CTX" --batch 1,8 \
  --out "$WORK/decode.json" 2> "$WORK/decode.txt"
t3=$(date +%s.%N)
python3 - "$WORK" "$DEVICE" "$OUT" "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, re, statistics, sys
work, device, out, t0, t1, t2, t3 = sys.argv[1], sys.argv[2], sys.argv[3], *map(float, sys.argv[4:])
pre = open(f"{work}/pretrain.txt").read()
tps = float(re.search(r"at (\d+) tokens/s", pre).group(1))
rows = [json.loads(l) for l in open(f"{work}/policy-run/metrics.jsonl")]
sps = statistics.mean(r["charts/SPS"] for r in rows)
decode = json.load(open(f"{work}/decode.json"))
report = {
    "device": device,
    "pretrain_tokens_per_sec": tps,
    "pretrain_wall_s": round(t1 - t0, 1),
    "train_policy_sps": round(sps, 1),
    "train_policy_wall_s": round(t2 - t1, 1),
    "decode_wall_s": round(t3 - t2, 1),
    "decode": decode,
}
json.dump(report, open(out, "w"), indent=2)
print(json.dumps({k: v for k, v in report.items() if k != "decode"}))
PY
