#!/usr/bin/env bash
# Two tiers: tova-out's evicted keys kept at rank 1 (or 2) for the next B2 evictions instead of
# dropped. 2026-12-06, the 2-vCPU AMD EPYC box, ~1 min per configuration of 64 windows.
set -euo pipefail
ex="cargo run --release -p ahr-eval --example evict_demote --"
m=policies/models/text-python-wide; e=envs/text-python-short-evict25.toml; o=docs/results/evict-demote-2026-12-06
# dense tier 1 (its rank-1 factors charged beside it), rank-1 tier 2, at ~5 % of the exact memory
EVICT_TIERS=25:0,30:0,20:0,15:0,23:10,22:16,20:26,18:16,15:38,12:54 $ex $m $e 64 > $o/full-rank1.md
# the same with a rank-2 tier 2
EVICT_RANK=2 EVICT_TIERS=25:0,22:6,20:10,20:20 $ex $m $e 64 > $o/full-rank2.md
# tier 1 at rank 2, nested rank-1 tier 2 (no factors beside: rank 1 is part of rank 2)
EVICT_STORE=rank:2 EVICT_TIERS=66:0,60:12,55:22,50:32,45:42 $ex $m $e 64 > $o/rank2-rank1.md
# factors kept beside a dense token for its first A queries only: keys let go later are dropped
for a in 2 8 32; do
  EVICT_SHADOW_AGE=$a EVICT_TIERS=25:0,24:6,23:10,22:16,20:26 $ex $m $e 64 > $o/full-rank1-age$a.md
done
EVICT_TIERS=25:0,26:0,27:0 $ex $m $e 64 > $o/full-curve.md   # the dense curve between 25 and 30
# the rank-2 first tier run with its own two-tier cache (KvCache::demote; the judge's tova-tiers), against the estimate above
EVICT_OWN=1 EVICT_STORE=rank:2 EVICT_TIERS=66:0,60:12,55:22,50:32,45:42 $ex $m $e 64 > $o/rank2-rank1-own.md
