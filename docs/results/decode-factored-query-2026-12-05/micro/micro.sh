#!/bin/bash
# The kernel alone, 8 heads x 32 (the `small` preset's shape), 16k tokens, with the materialised
# query (Q_RANK=0) and TPA query factors of rank 6 (the preset's), in cache / streamed (FLUSH) /
# over both cores (SPLIT); before = main at cd8c0fe plus the example's Q_RANK, after = this change.
# usage: micro.sh BEFORE_BIN AFTER_BIN   (attend_micro binaries; three rounds)
for r in 1 2 3; do for b in before:$1 after:$2; do for qr in 0 6; do for f in "" FLUSH; do for s in "" SPLIT; do
  echo "== round $r ${b%%:*} Q_RANK=$qr ${f:+FLUSH=1} ${s:+SPLIT=1}"
  env Q_RANK=$qr HEADS=8 HEAD_DIM=32 ${f:+FLUSH=1} ${s:+SPLIT=1} ${b#*:} 16384 200
done; done; done; done; done
