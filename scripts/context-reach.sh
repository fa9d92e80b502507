#!/usr/bin/env bash
# How far back a text model reads: bits per byte on held-out windows with every byte kept exact for
# only the next W queries (a sliding window, W = 16 … 512, envs/text-python-reach.toml), beside the
# exact cache. A loss that stops falling at W = 128 means nothing further back is read.
#
#   scripts/context-reach.sh AHR MODEL OUT [SEQUENCES]
#
# MODEL is a model directory, or a pretraining run directory (its latest checkpoint is judged: the
# run's config.json comes from --model-config, so pass the run's preset as MODEL_CONFIG=… then).
# Writes OUT/judge (ahr eval's files) and the window curve, OUT/curve.txt (also printed); SEQUENCES defaults to 64.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 AHR MODEL OUT [SEQUENCES]" >&2; exit 2; }
AHR=$1 MODEL=$2 OUT=$3 SEQ=${4:-64}
ENV=${ENV:-envs/text-python-reach.toml}
mkdir -p "$OUT"
if [ -f "$MODEL/checkpoint/model.bpk" ] && [ ! -f "$MODEL/config.json" ]; then
  # A run in progress: its checkpoint's weights with the preset's model config.
  [ -n "${MODEL_CONFIG:-}" ] || { echo "$0: $MODEL is a run directory; set MODEL_CONFIG to its preset" >&2; exit 2; }
  "$(dirname "$0")/checkpoint-model.py" "$MODEL" "$MODEL_CONFIG" "$OUT/model"
  MODEL=$OUT/model
fi
if ! "$AHR" eval --model "$MODEL" --env "$ENV" --baselines uniform --sequences "$SEQ" --fractions 0.5 --workers 1 \
  --out "$OUT/judge" > "$OUT/eval.log" 2>&1; then
  echo "$0: ahr eval failed ($OUT/eval.log):" >&2
  tail -5 "$OUT/eval.log" >&2
  exit 1
fi
(python3 - "$OUT/judge/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
pts = {p["setting"]: p for p in m["points"] if p["name"] == "uniform"}
exact = pts["full"]["metric"]
print(f"{'storage':<12} {'bits/byte':>10} {'vs exact':>9} {'bytes/token':>12}")
order = sorted((s for s in pts if s.startswith("recent:")), key=lambda s: int(s.split(":")[1])) + ["full"]
order += [s for s in ("rank:1", "rank:2") if s in pts]
for s in order:
    p = pts[s]
    print(f"{s:<12} {p['metric']:>10.4f} {p['metric'] - exact:>+9.4f} {p['kv_bytes_per_token']:>12.1f}")
PY
) | tee "$OUT/curve.txt"
