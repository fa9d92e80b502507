#!/usr/bin/env bash
# Throughput of one rank against two on this machine (README "Many machines", docs/BENCHMARKS.md):
#   scripts/bench-mpi.sh BIN OUTDIR [REPEATS]
# BIN is `ahr` built with `--features mpi`. Same global work for every layout:
#   pretraining — the `mqar` preset (V = 8192, L = 128), global batch 64, 40 steps (`--stop-after`);
#   PPO — `envs/mqar.toml` on the committed `mqar` model, 2 environments × 8 streams in all
#         (1 rank × 2 envs with 2 rollout workers, or 2 ranks × 1 env with 1 worker), 16 iterations
#         (32,768 environment steps; wall time of the whole command, start-up and a 16-sequence
#         held-out evaluation included).
# Layouts: ranks × compute threads per rank (RAYON_NUM_THREADS): 1×2, 2×1, 2×2. Every run's log is
# kept in OUTDIR; OUTDIR/summary.json holds each repeat and the medians.
set -euo pipefail
BIN=$(realpath "$1")
OUT=$(realpath -m "$2")
REPEATS=${3:-3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
WORK=$(mktemp -d)
sed -e 's/^num_envs = .*/num_envs = 1/' configs/ppo/mqar.toml >"$WORK/ppo-1env.toml"
PRE=(pretrain --model-config configs/model/mqar.toml --env envs/mqar.toml --steps 5000 --stop-after 40)
PPO=(train-policy --model policies/models/mqar --env envs/mqar.toml --total-timesteps 32768 --eval-examples 16)
launch() { # ranks threads name args...
  local ranks=$1 threads=$2 name=$3
  shift 3
  local start end
  start=$(date +%s.%N)
  if [ "$ranks" = 1 ]; then
    RAYON_NUM_THREADS=$threads "$BIN" "$@" >"$OUT/$name.log" 2>&1
  else
    RAYON_NUM_THREADS=$threads timeout 900 mpirun -n "$ranks" --oversubscribe --bind-to none -x RAYON_NUM_THREADS \
      "$BIN" "$@" >"$OUT/$name.log" 2>&1
  fi
  end=$(date +%s.%N)
  echo "wall_seconds $(echo "$end - $start" | bc)" >>"$OUT/$name.log"
}
for rep in $(seq "$REPEATS"); do
  for layout in 1x2 2x1 2x2; do
    ranks=${layout%x*} threads=${layout#*x}
    echo "bench-mpi: repeat $rep, $ranks rank(s) × $threads thread(s)" >&2
    launch "$ranks" "$threads" "pretrain-$layout-$rep" "${PRE[@]}" --out "$WORK/pre-$layout-$rep"
    if [ "$ranks" = 1 ]; then
      launch 1 "$threads" "ppo-$layout-$rep" "${PPO[@]}" --config configs/ppo/mqar.toml --workers 2 \
        --out "$WORK/pol-$layout-$rep" --run-dir "$WORK/run-$layout-$rep"
    else
      launch "$ranks" "$threads" "ppo-$layout-$rep" "${PPO[@]}" --config "$WORK/ppo-1env.toml" --workers 1 \
        --out "$WORK/pol-$layout-$rep" --run-dir "$WORK/run-$layout-$rep"
    fi
  done
done
python3 - "$OUT" "$REPEATS" <<'PY'
import json, re, statistics, sys
out, repeats = sys.argv[1], int(sys.argv[2])
rows = {}
for layout in ("1x2", "2x1", "2x2"):
    pre, ppo = [], []
    for rep in range(1, repeats + 1):
        log = open(f"{out}/pretrain-{layout}-{rep}.log").read()
        pre.append(float(re.search(r"stopped after 40 steps at ([0-9.]+) tokens/s", log).group(1)))
        log = open(f"{out}/ppo-{layout}-{rep}.log").read()
        wall = float(re.search(r"wall_seconds ([0-9.]+)", log).group(1))
        ppo.append({"wall_seconds": wall, "env_steps_per_second": 32768 / wall})
    rows[layout] = {
        "ranks": int(layout[0]), "threads_per_rank": int(layout[2]),
        "pretrain_tokens_per_second": pre,
        "pretrain_tokens_per_second_median": statistics.median(pre),
        "ppo": ppo,
        "ppo_env_steps_per_second_median": statistics.median(p["env_steps_per_second"] for p in ppo),
    }
json.dump(rows, open(f"{out}/summary.json", "w"), indent=2)
base = rows["1x2"]
for k, r in rows.items():
    print(f"{k}: pretrain {r['pretrain_tokens_per_second_median']:.0f} tok/s "
          f"({r['pretrain_tokens_per_second_median'] / base['pretrain_tokens_per_second_median']:.2f}x), "
          f"PPO {r['ppo_env_steps_per_second_median']:.0f} env steps/s "
          f"({r['ppo_env_steps_per_second_median'] / base['ppo_env_steps_per_second_median']:.2f}x)")
PY
rm -rf "$WORK"
