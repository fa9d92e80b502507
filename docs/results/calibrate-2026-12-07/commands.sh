#!/usr/bin/env bash
# Sixty-first session (2026-12-07), the 2-vCPU AMD EPYC box, release build of a864b4f (`ahr calibrate`).
# Budget mode meets its 10 % target with the sampling policy; the deterministic policy (every
# deployment path) held less. Calibrate the fifteen Python-documentation policies to 10 % on 64
# training windows (seed 1; ~6 s each), then measure what that does held out.
set -euo pipefail
POLICIES="text-demote-python-table-seed1 text-demote-python-table-seed2 text-demote-python-table-seed3
  text-demote-python-table-seed4 text-demote-python-table-seed5 text-demote-python-table-seed6
  text-demote-python-ptable-seed1 text-demote-python-ptable-seed2 text-demote-python-ptable-seed3
  text-demote-python-ptrain-seed1 text-demote-python-ptrain-seed2 text-demote-python-ptrain-seed3
  text-demote-python-pctx-seed1 text-demote-python-pctx-seed2 text-demote-python-pctx-seed3"
# 1. the calibration (its manifest is the calibration's record: cal/<p>/manifest.json; the probes: cal/<p>.txt)
for P in $POLICIES; do
  ahr calibrate --model policies/models/text-tiny --env envs/text-demote-python.toml --policy policies/$P \
    --out cal/$P > cal/$P.txt 2>&1
done
# 2. each calibrated policy beside the one as trained on the same 128 held-out windows, and against the
#    table it started from (ahr analyze, ~25 s each)
for P in $POLICIES; do
  mkdir -p analyze/$P
  ahr analyze --model policies/models/text-tiny --policy cal/$P --compare policies/$P \
    --env envs/text-demote-python.toml --sequences 128 --lengths none --no-ablation --out analyze/$P 2> analyze/$P/analyze.log
done
./summary.py > summary.md
# 3. the nine table-started calibrated policies against the per-byte table fitted at their memories on 64
#    windows with the trim, and every per-byte setting any earlier run found: the sixtieth session's
#    tables (../prior-trains-2026-12-07/union/tables.tar.gz: six, 456, ptable, ptrain; earlier-tables.tar.gz
#    here: its joint fit's union/all12 and the pctx judge's), with its fit cache (not committed: 18 MB; without
#    it the fit measures every setting again, hours)
mkdir -p union && tar xzf ../prior-trains-2026-12-07/union/tables.tar.gz -C union && tar xzf earlier-tables.tar.gz
R=union/six/tables,union/456/tables,union/ptable/tables,union/ptrain/tables,union/all12/tables,pctx-union/tables
P=""; for N in ptable ptrain pctx; do for S in 1 2 3; do P="$P --policy cal/text-demote-python-$N-seed$S"; done; done
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml --baselines token-table \
  --fit-sequences 64 --sequences 128 --fractions none --workers 2 --fit-cache fitcache-table $P \
  --rule-tables $R --out cal-union
../python-table-2026-12-07/margins.py cal-union/metrics.json > cal-union/margins.txt
# 4. is the price a property of the policy or of the 64 windows? ptable seed 1 on 256 training windows and on
#    64 from another seed (stability/ptable-seed1.txt): -3.852 and -3.891 against -3.844
ahr calibrate --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-ptable-seed1 --sequences 256 --out cal256-ptable1
ahr calibrate --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-ptable-seed1 --sequences 64 --seed 2 --out cal64s2-ptable1
# 5. what the price does to a policy's own table (own-table.txt: as_table of step 2 against the sixtieth session's analyses)
