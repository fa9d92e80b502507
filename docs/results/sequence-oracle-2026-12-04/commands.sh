#!/usr/bin/env bash
# The per-sequence oracle (crates/ahr-eval/examples/sequence_oracle.rs), 2026-12-04, the 2-vCPU box.
set -euo pipefail
# 1024-byte Python documentation (scripts/get-corpus.sh), the judge's first 32 held-out windows (~6 min)
cargo run --release -p ahr-eval --example sequence_oracle -- \
  policies/models/text-python envs/text-python-demote.toml 32 0.05,0.063,0.076,0.08,0.089,0.1,0.12,0.15,0.25 \
  > text-python-32.md
# 256-byte /usr/share/doc text, the judge's 128 held-out windows, with the corpus of the committed
# text-demote results (docs/results/text-demote-2026-12-03/corpus-files.txt: the four OpenMPI
# documentation files moved aside while it ran; ~3 min)
cargo run --release -p ahr-eval --example sequence_oracle -- \
  policies/models/text-tiny envs/text-demote.toml 128 0.08,0.1,0.1083,0.1115,0.12,0.15,0.25 \
  > text-demote-128.md
