#!/usr/bin/env bash
# Thirty-seventh session, 2026-12-05, the 2-vCPU AMD box, nothing else running. The judge's
# harness keeping the last layer's input for earlier-layer choices met twice (/tmp/bin/ahr-prefix,
# this change) against main before it (f219221, /tmp/bin/ahr-base): release builds of `ahr-cli`.
set -euo pipefail
R=docs/results/judge-prefix-2026-12-05
# 1. The first round of the token-class fit (806 settings on 16 training windows of 1024 bytes):
#    wall time from start to the second round's line (polled every 0.5 s).
for b in ahr-base ahr-prefix; do
  start=$(date +%s.%N)
  /tmp/bin/$b eval --model policies/models/text-python --env envs/text-python-short.toml --baselines token-class \
    --sequences 2 --fractions 0.03 --fit-sequences 16 --workers 2 --out /tmp/js/fit-$b > /tmp/js/fit-$b.log 2>&1 & pid=$!
  while ! grep -q "round 2" /tmp/js/fit-$b.log; do sleep 0.5; done
  echo "$b round 1: $(echo "$(date +%s.%N) - $start" | bc) s"; kill $pid
done
# 2. Families without a fit, the keep-review policy, 16 windows: wall time; the points identical
#    as sets (they are appended as workers finish them) and metrics.json byte-identical.
for b in ahr-base ahr-prefix; do
  /usr/bin/time -f "$b %e s" /tmp/bin/$b eval --model policies/models/text-python --env envs/text-python-short-keep.toml \
    --policy policies/text-python-table-v2-keep-seed1 --baselines streaming-llm,layer-windows --sequences 16 \
    --fractions 0.03 --workers 2 --out /tmp/js/ev-$b
done
cmp /tmp/js/ev-ahr-base/metrics.json /tmp/js/ev-ahr-prefix/metrics.json
cmp <(sort /tmp/js/ev-ahr-base/points.jsonl) <(sort /tmp/js/ev-ahr-prefix/points.jsonl)
# 3. The thirty-fifth session's whole judge again: its metrics.json must come out identical.
s=$(date +%s)
/tmp/bin/ahr-prefix eval --model policies/models/text-python --env envs/text-python-short-keep.toml \
  --policy policies/text-python-table-v2-keep-seed1 --baselines token-class --fractions 0.03 \
  --sequences 128 --workers 2 --out /tmp/rejudge/judge > $R/judge.log 2>&1
echo "rc $? wall $(( $(date +%s) - s )) s" > $R/wall.txt
zcat docs/results/keep-staged-2026-12-05/judge-1024-keep-staged/metrics.json.gz | cmp - /tmp/rejudge/judge/metrics.json
