#!/usr/bin/env bash
# The fitted vocabulary rule (judge family `token-class`, twenty-ninth session) against the text policies,
# 2026-12-04, the 2-vCPU box, release build of e107df8 (judge32: the same fit before the progress lines).
# Corpora: the Python documentation of scripts/get-corpus.sh (python3.11-doc 3.11.2-6+deb12u7), /usr/share/doc.
set -euo pipefail
# 1024-byte text at 3 %: the judge's first 32 windows (20 min), then all 128 (22 min)
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-low-seed1 --policy policies/text-python-low-seed2 --policy policies/text-python-low-seed3 \
  --baselines token-class --sequences 32 --fractions 0.04 --workers 2 --out judge32
ahr eval … --sequences 128 --fractions 0.04 --workers 2 --out judge128-low
# 256-byte text (text-tiny, /usr/share/doc) at 10–11 %: 128 windows (2 min)
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml \
  --policy policies/text-demote1k-seed1 --policy policies/text-demote1k-seed2 --policy policies/text-demote1k-seed3 \
  --baselines token-class --sequences 128 --fractions 0.1 --workers 2 --out judge128-demote
# 1024-byte text at 2 % and the attention policies at 3 %: 128 windows
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-low2-seed{1,2,3} --policy policies/text-python-low-attn-seed{1,2,3} \
  --baselines token-class --sequences 128 --fractions 0.02 --workers 2 --out judge128-low2-attn
# the 256-byte policies on the Python documentation (the twenty-sixth session's transfer), with TOVA
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote1k-seed1 --policy policies/text-demote1k-seed2 --policy policies/text-demote1k-seed3 \
  --baselines token-class,tova,tova-full-cache --sequences 128 --fractions 0.1 --workers 2 --out judge128-demote-python
# the 256-byte task's window and TOVA families again on this machine's /usr/share/doc, beside token-class
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml \
  --policy policies/text-demote1k-seed1 --policy policies/text-demote1k-seed2 --policy policies/text-demote1k-seed3 \
  --baselines uniform,streaming-llm,layer-windows,tova,tova-full-cache --sequences 128 --fractions 0.1 --workers 2 --out judge128-demote-rules
for d in judge32 judge128-low judge128-demote judge128-low2-attn judge128-demote-python judge128-demote-rules; do
  scripts/judge-table.py $d/metrics.json.gz > $d/policies.md
done
# after 42b0dc0 (two starts per target: the richest single option within the target and within half of it)
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml \
  --policy policies/text-demote1k-seed1 --policy policies/text-demote1k-seed2 --policy policies/text-demote1k-seed3 \
  --baselines token-class --sequences 128 --fractions 0.1 --workers 2 --out v2-demote          # 3 min
ahr eval … --env envs/text-demote-python.toml … --baselines token-class --out v2-demote-python
ahr eval --model policies/models/text-python --env envs/text-python-short.toml \
  --policy policies/text-python-low-seed1 --policy policies/text-python-low-seed2 --policy policies/text-python-low-seed3 \
  --baselines token-class --sequences 128 --fractions 0.04 --workers 2 --out v2-low
for d in v2-demote v2-demote-python v2-low; do scripts/judge-table.py $d/metrics.json.gz > $d/policies.md; done
