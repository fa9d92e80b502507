#!/usr/bin/env python3
"""Make a model directory from a pretraining run's latest checkpoint.

    scripts/checkpoint-model.py RUN PRESET OUT

RUN is an `ahr pretrain --out` directory (finished or not), PRESET the model preset it was started
with (`configs/model/*.toml`: its `[model]` table becomes OUT/config.json). OUT gets config.json,
model.bpk (the checkpoint's weights) and checkpoint-state.json (the checkpoint's step and tokens):
what `ahr eval`, `ahr eval-model` and `ahr pretrain --init` load. A run stopped part-way (e.g. with
`--stop-after`) becomes the start of a next stage this way.
"""
import json
import os
import shutil
import sys
import tomllib

# ModelConfig's fields in the struct's order (crates/ahr-tpa/src/config.rs): config.json is written in
# this order, not the preset's, so the same checkpoint always gives the same bytes and the same model
# fingerprint (what a next stage's `--init` records). Those the preset leaves out take their
# defaults when the model loads, as they do in `ahr pretrain`.
FIELDS = ["vocab_size", "d_model", "n_layers", "n_heads", "head_dim", "attention", "kv_heads", "q_rank",
          "kv_rank_max", "menu", "factor_bias", "mlp", "max_positions", "tied_embeddings", "rope_base", "norm_eps"]


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    run, preset, out = argv[1:]
    ckpt = os.path.join(run, "checkpoint")
    if not os.path.isfile(os.path.join(ckpt, "model.bpk")):
        sys.exit(f"{run}: no checkpoint/model.bpk (not a pretraining run directory?)")
    try:
        with open(preset, "rb") as f:
            model = tomllib.load(f)["model"]
    except (OSError, tomllib.TOMLDecodeError) as e:
        sys.exit(f"{preset}: {e}")
    except KeyError:
        sys.exit(f"{preset}: no [model] table")
    unknown = set(model) - set(FIELDS)
    if unknown:
        sys.exit(f"{preset}: [model] keys this script does not know: {sorted(unknown)}")
    cfg = {k: model[k] for k in FIELDS if k in model}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copyfile(os.path.join(ckpt, "model.bpk"), os.path.join(out, "model.bpk"))
    shutil.copyfile(os.path.join(ckpt, "state.json"), os.path.join(out, "checkpoint-state.json"))


if __name__ == "__main__":
    main(sys.argv)
