#!/usr/bin/env bash
# Fifty-sixth session (2026-12-07), the 2-vCPU AMD EPYC box, release builds of c3ad091 / 2c3504c.
# Would a split of the memory between layers chosen per sequence beat the best fixed split?
# examples/tilt_oracle.rs runs the start rule of envs/text-python-tpa-layers.toml (tova-class:
# budget 21 at rank:4, decay 0.9, the last 10 let go at rank:2, whitespace +0.3 nats) at every tilt
# given and keeps each held-out sequence's loss; the oracle picks the best tilt per sequence. The
# placebo picks per sequence among class bonuses at the env's own tilt (+6): settings of one memory
# that move nothing between layers. 64 windows ~4.5 min each, 256 windows ~12 min each (2 threads).
set -euo pipefail
ex="cargo run --release -p ahr-eval --example tilt_oracle --"
m=policies/models/text-python-tpa
e=envs/text-python-tpa-layers.toml
# (tilt-oracle-64.md came from the example's first version, called without the word `tilt`: same rule,
# same runs; its table says "against untilted" where the later one says "against the first")
$ex $m $e 64 tilt -6,-3,0,2,4,6,8,10,12,15 > tilt-oracle-64.md 2> tilt-oracle-64.log
$ex $m $e 64 nats 0.1,0.2,0.3,0.4,0.5,0.6,0.8 > nats-oracle-64.md 2> nats-oracle-64.log
$ex $m $e 256 tilt -3,0,2,4,6,8,10,12 > tilt-oracle-256.md 2> tilt-oracle-256.log
$ex $m $e 256 nats 0.1,0.2,0.3,0.4,0.5,0.6 > nats-oracle-256.md 2> nats-oracle-256.log

# An evicter judged in an env whose menu adds windows (2c3504c: the manifest's menu need only hold
# the evicter's stores): the same policy metric as in its own env (menu-check/points-*.jsonl).
ahr eval --model $m --env menu-check/layers-windows.toml --policy policies/text-python-tpa-layers-seed1 \
  --baselines tova-ema --sequences 8 --fractions none --workers 2 --out menu-check-windows
ahr eval --model $m --env $e --policy policies/text-python-tpa-layers-seed1 \
  --baselines tova-ema --sequences 8 --fractions none --workers 2 --out menu-check-plain
