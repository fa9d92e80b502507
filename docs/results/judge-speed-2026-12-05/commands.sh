#!/usr/bin/env bash
# Thirty-sixth session, 2026-12-05, the 2-vCPU AMD box, nothing else running. The parallel
# forward's host attention with kept visibility rows and skipped blocks (dc7956b, /tmp/bin/ahr36i)
# against the kernel before it (2946f51, /tmp/bin/ahr36f): release builds of `ahr-cli`.
set -euo pipefail
R=docs/results/judge-speed-2026-12-05
# 1. The first round of the token-class fit (806 settings on 16 training windows of 1024 bytes):
#    wall time from start to the second round's line (polled every 0.5-1 s).
for b in ahr36f ahr36i; do
  start=$(date +%s.%N)
  /tmp/bin/$b eval --model policies/models/text-python --env envs/text-python-short.toml --baselines token-class \
    --sequences 2 --fractions 0.03 --fit-sequences 16 --workers 2 --out /tmp/fit-$b > /tmp/fit-$b.log 2>&1 & pid=$!
  while ! grep -q "round 2" /tmp/fit-$b.log; do sleep 0.5; done
  echo "$b round 1: $(echo "$(date +%s.%N) - $start" | bc) s"; kill $pid
done
# 2. Families without a fit, the keep-review policy, 16 windows: wall time and identical points.
for b in ahr36f ahr36i; do
  /usr/bin/time -f "$b %e s" /tmp/bin/$b eval --model policies/models/text-python --env envs/text-python-short-keep.toml \
    --policy policies/text-python-table-v2-keep-seed1 --baselines streaming-llm,layer-windows --sequences 16 \
    --fractions 0.03 --workers 2 --out /tmp/ev-$b
done
# 3. The thirty-fifth session's whole judge (docs/results/keep-staged-2026-12-05/commands.sh) again
#    with dc7956b: its metrics.json and points must come out identical.
s=$(date +%s)
/tmp/bin/ahr36i eval --model policies/models/text-python --env envs/text-python-short-keep.toml \
  --policy policies/text-python-table-v2-keep-seed1 --baselines token-class --fractions 0.03 \
  --sequences 128 --workers 2 --out /tmp/rejudge/judge > $R/judge.log 2>&1
echo "rc $? wall $(( $(date +%s) - s )) s" > $R/wall.txt
zcat docs/results/keep-staged-2026-12-05/judge-1024-keep-staged/metrics.json.gz | cmp - /tmp/rejudge/judge/metrics.json
