#!/usr/bin/env bash
# text-python-tpa: pretraining (2 MPI ranks; stopped at step 1250 to free the machine for a CI run
# and resumed: pretrain.log holds both parts), then two tiers against tova-out at ~5 % with their own
# cache. 2026-12-06, the 2-vCPU AMD EPYC box.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -n 2 --oversubscribe --bind-to none ahr pretrain --model-config configs/model/text-python-tpa.toml \
  --env envs/text-python.toml --out runs/text-python-tpa            # killed at 1250, then the same with --resume
# = policies/models/text-python-tpa (config.json, model.bpk, pretrain.json, rank_curve.json); metrics.jsonl.gz here
ex="cargo run --release -p ahr-eval --example evict_demote --"; m=policies/models/text-python-tpa; e=envs/text-python.toml
o=docs/results/text-python-tpa-2026-12-06
EVICT_OWN=1 EVICT_STORE=rank:4 EVICT_TIERS=26:0,30:0,22:16,20:24,16:40 $ex $m $e 64 > $o/tiers-rank1.md
EVICT_OWN=1 EVICT_STORE=rank:4 EVICT_RANK=2 EVICT_TIERS=26:0,20:12,16:20 $ex $m $e 64 > $o/tiers-rank2.md
# the other smoothings: tova-out's best decay on this model is not 0.5
for d in 0.8 0.9 0.95; do
  EVICT_DECAY=$d EVICT_OWN=1 EVICT_STORE=rank:4 EVICT_RANK=2 EVICT_TIERS=26:0,16:20 $ex $m $e 64 > $o/tiers-rank2-decay$d.md
done
EVICT_DECAY=0.9 EVICT_OWN=1 EVICT_STORE=rank:4 EVICT_TIERS=26:0,16:40,20:24 $ex $m $e 64 > $o/tiers-rank1-decay0.9.md
# at the training length and at twice it (the same held-out bytes in 128 windows of 2048)
ahr eval-model --model $m --env envs/text-python.toml --out $o/eval-exact-1024.json
ahr eval-model --model $m --env docs/results/text-python-wide-2026-12-05/reach-2048.toml --out $o/eval-exact-2048.json
