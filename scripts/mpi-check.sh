#!/usr/bin/env bash
# Checks of the MPI build on one machine (issue #18, README "Many machines"), run by .ci/run:
#   scripts/mpi-check.sh BIN [WORKDIR]
# BIN is `ahr` built with `--features mpi`. Two ranks over loopback (oversubscribed, unbound),
# every launch under a timeout so that a hang fails the check instead of stalling CI:
#   (a) every rank ends with the same parameters (digests printed by each rank);
#   (b) 2 ranks with half the batch each take the steps 1 rank takes on the whole batch, for
#       pretraining and for PPO (2 ranks × 2 envs vs 1 rank × 4 envs, one minibatch per update);
#   (c) a 2-rank pretrain stopped and resumed, and one killed (SIGKILL) and resumed, continue the
#       uninterrupted 2-rank trajectory exactly;
#   (d) a failing or panicking rank ends the whole job with a non-zero exit, and a binary without
#       the feature refuses to run as several processes.
set -euo pipefail
BIN=$(realpath "$1")
WORK=${2:-$(mktemp -d)}
cd "$(dirname "$0")/.."
mkdir -p "$WORK"
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
MPI=(timeout 180 mpirun -n 2 --oversubscribe --bind-to none)
TINY=(pretrain --model-config configs/model/tiny.toml --env envs/mqar-tiny.toml --seed 5)
PRE=("${TINY[@]}" --steps 24)
fail() { echo "mpi-check: FAIL: $*" >&2; exit 1; }
digests() { grep -o "$1 digest [0-9a-f]*" "$2" | sort -u | wc -l; }

echo "mpi-check: pretraining, 1 rank and 2 ranks" >&2
"$BIN" "${PRE[@]}" --out "$WORK/one" >/dev/null 2>&1
"${MPI[@]}" "$BIN" "${PRE[@]}" --out "$WORK/two" >"$WORK/two.log" 2>&1 || { cat "$WORK/two.log"; fail "2-rank pretrain"; }
[ "$(grep -c 'parameters digest' "$WORK/two.log")" = 2 ] || fail "expected a digest line from each rank"
[ "$(digests parameters "$WORK/two.log")" = 1 ] || fail "(a) ranks ended with different parameters"

echo "mpi-check: resume after a stop and after a kill" >&2
"${MPI[@]}" "$BIN" "${PRE[@]}" --out "$WORK/stop" --stop-after 9 >/dev/null 2>&1
"${MPI[@]}" "$BIN" "${PRE[@]}" --out "$WORK/stop" --resume >/dev/null 2>&1
# (In a subshell whose stderr is discarded, so the shell's "Killed" notice stays out of the log.)
( "${MPI[@]}" "$BIN" "${TINY[@]}" --steps 4000 --out "$WORK/kill" >"$WORK/kill.log" 2>&1 &
  echo $! >"$WORK/kill.pid"; wait ) 2>/dev/null &
SUBSHELL=$!
for _ in $(seq 50); do [ -s "$WORK/kill.pid" ] && break; sleep 0.1; done
LAUNCHER=$(cat "$WORK/kill.pid")
for _ in $(seq 600); do grep -qs '"step": *[1-9]' "$WORK/kill/checkpoint/state.json" && break; sleep 0.1; done
kill -9 "$LAUNCHER" 2>/dev/null || true
pkill -9 -f -- "--out $WORK/kill" 2>/dev/null || true
wait "$SUBSHELL" 2>/dev/null || true
[ -f "$WORK/kill/checkpoint/state.json" ] || { cat "$WORK/kill.log"; fail "the killed run left no checkpoint"; }
cp "$WORK/kill/checkpoint/state.json" "$WORK/kill/resumed-from.json"
# The killed run is resumed for 24 more steps of the same 4000-step schedule; an uninterrupted
# reference run of 120 steps must agree with it step by step.
"${MPI[@]}" "$BIN" "${TINY[@]}" --steps 4000 --out "$WORK/kill" --resume --stop-after 24 >/dev/null 2>&1 \
  || fail "resuming the killed run"
"${MPI[@]}" "$BIN" "${TINY[@]}" --steps 4000 --out "$WORK/kill-ref" --stop-after 120 >/dev/null 2>&1

echo "mpi-check: DD-PPO, 1 rank × 4 envs and 2 ranks × 2 envs" >&2
for n in 1 2; do
  sed -e "s/^num_envs = .*/num_envs = $((4 / n))/" -e 's/^num_minibatches = .*/num_minibatches = 1/' \
    -e 's/^update_epochs = .*/update_epochs = 1/' configs/ppo/tiny.toml >"$WORK/ppo$n.toml"
done
PPO=(train-policy --model "$WORK/one" --env envs/mqar-tiny.toml --total-timesteps 1024 --workers 1)
"$BIN" "${PPO[@]}" --config "$WORK/ppo1.toml" --out "$WORK/p1" --run-dir "$WORK/r1" >/dev/null 2>&1
"${MPI[@]}" "$BIN" "${PPO[@]}" --config "$WORK/ppo2.toml" --out "$WORK/p2" --run-dir "$WORK/r2" >"$WORK/ppo.log" 2>&1 \
  || { cat "$WORK/ppo.log"; fail "2-rank train-policy"; }
[ "$(grep -c 'policy digest' "$WORK/ppo.log")" = 2 ] || fail "expected a policy digest from each rank"
[ "$(digests policy "$WORK/ppo.log")" = 1 ] || fail "(a) ranks ended with different policies"

python3 - "$WORK" <<'PY' || fail "(b)/(c) trajectories differ (see above)"
import json, math, sys
w = sys.argv[1]
def lines(path):
    out = {}
    for line in open(path):
        d = json.loads(line)
        out.setdefault(d["step"], {}).update(d)
    return out
def close(a, b, rel):
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))
bad = []
one, two = lines(f"{w}/one/metrics.jsonl"), lines(f"{w}/two/metrics.jsonl")
for s in one:
    for k in ("loss", "grad_norm"):
        if not close(one[s][k], two[s][k], 1e-4):
            bad.append(f"(b) pretrain step {s} {k}: 1 rank {one[s][k]} vs 2 ranks {two[s][k]}")
def same_steps(run, ref, steps):
    for s in steps:
        for k in ("loss", "grad_norm"):
            if run.get(s, {}).get(k) != ref[s][k]:
                bad.append(f"(c) step {s} {k}: resumed {run.get(s, {}).get(k)} vs uninterrupted {ref[s][k]}")
same_steps(lines(f"{w}/stop/metrics.jsonl"), two, two)
if json.load(open(f"{w}/two/rank_curve.json")) != json.load(open(f"{w}/stop/rank_curve.json")):
    bad.append("(c) stop+resume: the rank curve differs from the uninterrupted run's")
killed, ref = lines(f"{w}/kill/metrics.jsonl"), lines(f"{w}/kill-ref/metrics.jsonl")
resumed_from = json.load(open(f"{w}/kill/resumed-from.json"))["step"]
if max(killed) != resumed_from + 24 or max(killed) > max(ref):
    bad.append(f"(c) kill+resume: resumed from step {resumed_from}, ended at {max(killed)} (reference: {max(ref)})")
same_steps(killed, ref, [s for s in killed if s in ref])
r1, r2 = lines(f"{w}/r1/metrics.jsonl"), lines(f"{w}/r2/metrics.jsonl")
for s in r1:
    for k in ("charts/episodic_return", "env/mem_frac", "losses/value_loss", "losses/entropy", "losses/explained_variance"):
        if k in r1[s] and not close(r1[s][k], r2[s][k], 1e-4):
            bad.append(f"(b) PPO step {s} {k}: 1 rank {r1[s][k]} vs 2 ranks {r2[s][k]}")
e1, e2 = (json.load(open(f"{w}/{r}/eval.json")) for r in ("r1", "r2"))
for k in ("accuracy", "task_loss", "mem_frac"):
    if not close(e1[k], e2[k], 1e-3):
        bad.append(f"(b) PPO held-out {k}: 1 rank {e1[k]} vs 2 ranks {e2[k]}")
print("\n".join(bad) or "mpi-check: 1 rank = 2 ranks (pretraining and PPO); resumed runs = uninterrupted", file=sys.stderr)
sys.exit(1 if bad else 0)
PY

echo "mpi-check: failures end the job" >&2
set +e
"${MPI[@]}" "$BIN" "${PRE[@]}" --out "$WORK/two" >"$WORK/exists.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "already holds a run" "$WORK/exists.log" || fail "(d) rank 0's error: rc $rc"
AHR_FAULT_RANK=1 "${MPI[@]}" -x AHR_FAULT_RANK "$BIN" "${PRE[@]}" --out "$WORK/fault" >"$WORK/fault.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "injected failure" "$WORK/fault.log" || fail "(d) rank 1's panic: rc $rc"
if [ -n "${AHR_PLAIN_BIN:-}" ]; then
  "${MPI[@]}" "$AHR_PLAIN_BIN" "${PRE[@]}" --out "$WORK/plain" >"$WORK/plain.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "without the \`mpi\` feature" "$WORK/plain.log" || fail "(d) plain binary under mpirun: rc $rc"
fi
set -e
echo "mpi-check: all passed" >&2
