#!/usr/bin/env bash
# Policies started at the judge's fitted vocabulary rule (`[policy] prior_table`, thirtieth session),
# 2026-12-04, the 2-vCPU box, release builds of the working tree before 029d92a (the 1024-byte table:
# before the fit was restricted to the policies' menu by name and chosen on 64 other training
# sequences — see FINDINGS) and of 029d92a (the 256-byte table, everything after).
# Corpus: the Python documentation of scripts/get-corpus.sh (python3.11-doc 3.11.2-6+deb12u7).
set -euo pipefail
# 1024-byte text at 3 % (text-python model): the table (12 min), three policies side by side (18 min),
# the rule itself as a policy (one iteration), the judge with token-class and TOVA on 128 windows
ahr fit-rule --model policies/models/text-python --env envs/text-python-short.toml --fraction 0.03 --workers 2 \
  --out configs/prior/text-python-short-3pct.json
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-python --env envs/text-python-short.toml \
    --config configs/ppo/text-python-table.toml --out policies/text-python-table-seed$S --seed $S --workers 1 &
done; wait
ahr train-policy --model policies/models/text-python --env envs/text-python-short.toml \
  --config configs/ppo/text-python-table.toml --out policies/text-python-table-init --seed 1 --workers 2 --total-timesteps 16384
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-table-seed1 --policy policies/text-python-table-seed2 --policy policies/text-python-table-seed3 \
  --policy policies/text-python-table-init --baselines token-class,tova --sequences 128 --fractions 0.03 --workers 2 --out judge-1024
# 256-byte windows of the Python documentation (text-tiny model) at 10 %: the table (2 min), three
# policies side by side (14 min), the rule itself, the judge with every default family on 128 windows
ahr fit-rule --model policies/models/text-tiny --env envs/text-demote-python.toml --fraction 0.10 --workers 2 \
  --out configs/prior/text-demote-python-10pct.json
for S in 1 2 3; do
  ahr train-policy --model policies/models/text-tiny --env envs/text-demote-python.toml \
    --config configs/ppo/text-demote-python-table.toml --out policies/text-demote-python-table-seed$S --seed $S --workers 1 &
done; wait
ahr train-policy --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --config configs/ppo/text-demote-python-table.toml --out policies/text-demote-python-table-init --seed 1 --workers 1 --total-timesteps 8192
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-table-seed1 --policy policies/text-demote-python-table-seed2 \
  --policy policies/text-demote-python-table-seed3 --policy policies/text-demote-python-table-init \
  --sequences 128 --fractions 0.1 --workers 2 --out judge-256
for d in judge-1024 judge-256; do scripts/judge-table.py $d/metrics.json.gz > $d/policies.md; done
# the mended 1024-byte table (after 029d92a: the policies' menu by name, chosen on 64 other training windows;
# 20 min with one worker) and the table as a policy (one iteration; env evaluation only)
ahr fit-rule --model policies/models/text-python --env envs/text-python-short.toml --fraction 0.03 --workers 1 \
  --out configs/prior/text-python-short-3pct-v2.json
sed 's|text-python-short-3pct.json|text-python-short-3pct-v2.json|' configs/ppo/text-python-table.toml > /tmp/text-python-table-v2.toml
ahr train-policy --model policies/models/text-python --env envs/text-python-short.toml --config /tmp/text-python-table-v2.toml \
  --out /tmp/text-python-table-v2-init --run-dir /tmp/run-v2-init --seed 1 --workers 1 --total-timesteps 16384
