#!/usr/bin/env bash
# Is there room above tova-ema for a budgeted evicter at 10 % on text-python-wide? (the learned
# evicter of the forty-ninth session is level with it). 2026-12-06, the 2-vCPU AMD EPYC box,
# release build of the fiftieth session's first commit. Model policies/models/text-python-wide,
# env envs/text-python-short-evict51.toml (budget 51 per layer, 9.9 % of the exact memory).
set -euo pipefail
# 1. rules that evict from the full-cache attention maps (tova-full-cache's proxy): TOVA, tova-ema,
#    an oracle that knows the next H queries' attention, the same with weight × value norm (VATP),
#    and per-layer budgets at the same total (oracle-64.md; 64 windows, ~15 min beside step 2)
EVICT_SPLITS=31/71,41/61,61/41,71/31 cargo run --release -p ahr-eval --example evict_oracle -- \
  policies/models/text-python-wide envs/text-python-short-evict51.toml 64 1,4,16,64,all > oracle-64.md
# 2. one decision overruled: at 2 sampled queries of 16 windows, per layer, each of the 51 other
#    held bytes evicted in place of tova-ema's victim, the rule deciding from its own cache after
#    that (counterfactual.md, counterfactual.jsonl; ~15 min)
EVICT_COUNTERFACTUAL_RAW=counterfactual.jsonl cargo run --release -p ahr-eval --example evict_counterfactual -- \
  policies/models/text-python-wide envs/text-python-short-evict51.toml 16 2 52 > counterfactual.md
# 3. labels for a learned score: on 60 training windows (seed 1), 2 sampled queries each, both
#    layers (240 decisions, 12,480 candidates), each held byte evicted in place of tova-ema's victim
#    as in step 2; a ridge fit of Δ on the environment's 13 candidate features (and on those plus two
#    key features: the nearest twin's cosine, the cosine with the mean key), 5 folds by window; then
#    the fits run as evicters with the rule's cache on the judge's 64 held-out windows. The first run
#    computed the labels (~27 min; distill-first-run.md, from the example before the key features,
#    the harness rows and the paired margins were added); distill.md is the example as committed,
#    reading them back (~10 min); distill-labels.json holds the labels and both fits' weights (the
#    features are computed again from the windows whenever the labels are read).
EVICT_DISTILL_OUT=distill-labels.json cargo run --release -p ahr-eval --example evict_distill -- \
  policies/models/text-python-wide envs/text-python-short-evict51.toml 60 2 64 > distill-first-run.md
EVICT_DISTILL_LABELS=distill-labels.json EVICT_DISTILL_MIX=0.3 cargo run --release -p ahr-eval --example evict_distill -- \
  policies/models/text-python-wide envs/text-python-short-evict51.toml 0 0 64 > distill.md
# 4. the same at half the budget: 25 bytes per layer (5.0 % of the exact memory), the env written
#    from the 51 one (budget25/; the three runs side by side with CI, ~25 min)
sed 's/budget = 51/budget = 25/' envs/text-python-short-evict51.toml > /tmp/evict25.toml
cargo run --release -p ahr-eval --example evict_oracle -- \
  policies/models/text-python-wide /tmp/evict25.toml 64 4,16 > budget25/oracle-64.md
EVICT_COUNTERFACTUAL_RAW=budget25/counterfactual.jsonl cargo run --release -p ahr-eval --example evict_counterfactual -- \
  policies/models/text-python-wide /tmp/evict25.toml 16 2 26 > budget25/counterfactual.md
EVICT_DISTILL_OUT=budget25/distill-labels.json EVICT_DISTILL_MIX=0.3 cargo run --release -p ahr-eval --example evict_distill -- \
  policies/models/text-python-wide /tmp/evict25.toml 60 2 64 > budget25/distill.md
# 5. the judge's TOVA and tova-ema at that budget (their own cache, decays 0.5-0.95; budget25/judge-tova/, 46 s)
ahr eval --model policies/models/text-python-wide --env /tmp/evict25.toml --baselines tova,tova-ema \
  --sequences 64 --fractions 0.0503 --workers 2 --out budget25/judge-tova > budget25/judge-tova/eval.log
