#!/usr/bin/env bash
# Fifty-sixth session (2026-12-07), the 2-vCPU AMD EPYC box. The one win of the scoreboard (256-byte
# text, the demotion menu, policies/text-demote1k-seed{1,2,3}) against the judge's staged TOVA
# families, which it had not met: tova-tiers, tova-class, tova-layers, tova-pooled (and tova-out,
# judged before). 128 held-out windows, every family at each policy's memory, ~6 min per run.
set -euo pipefail
pol="--policy policies/text-demote1k-seed1 --policy policies/text-demote1k-seed2 --policy policies/text-demote1k-seed3"
# 1. release build of bf68946 (tova-class's bonus grid 0.1-0.8 nats)
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml $pol \
  --baselines tova-out,tova-tiers,tova-class,tova-layers,tova-pooled --sequences 128 --fractions none \
  --workers 2 --out rejudge-demote-staged
# 2. tova-class's best sat at the grid's top (not-alnum +0.8): release build of 2c3504c, where the
#    bonus goes on past the top (1.6, then the mean 1.13)
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml $pol \
  --baselines tova-class --sequences 128 --fractions none --workers 2 --out rejudge-demote-class
# 3. the 256-byte Python-documentation policies against the same families (release build of 2c3504c)
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-table-seed1 --policy policies/text-demote-python-table-seed2 \
  --policy policies/text-demote-python-table-seed3 \
  --baselines tova-out,tova-tiers,tova-class,tova-layers,tova-pooled --sequences 128 --fractions none \
  --workers 2 --out rejudge-demote-python-staged
# 4. the /usr/share/doc policies on the Python documentation (a corpus they never saw), against the
#    same families (release build of 2c3504c)
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml $pol \
  --baselines tova-out,tova-tiers,tova-class,tova-layers,tova-pooled --sequences 128 --fractions none \
  --workers 2 --out transfer-demote-python-staged
# 5. the staged tova-class there was behind the plain tilt (3.2082 against 3.2040): release build of
#    the commit after e60a505, whose tova-class also puts every bonus on each base's best tilt
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml $pol \
  --baselines tova-class --sequences 128 --fractions none --workers 2 --out transfer-class-joint
# 6. the two 256-byte wins against that tova-class (both orders; same build as 5.): unchanged
ahr eval --model policies/models/text-tiny --env envs/text-demote.toml $pol \
  --baselines tova-class --sequences 128 --fractions none --workers 2 --out rejudge-demote-class-joint
ahr eval --model policies/models/text-tiny --env envs/text-demote-python.toml \
  --policy policies/text-demote-python-table-seed1 --policy policies/text-demote-python-table-seed2 \
  --policy policies/text-demote-python-table-seed3 \
  --baselines tova-class --sequences 128 --fractions none --workers 2 --out rejudge-demote-python-class-joint
