#!/usr/bin/env python3
"""Exit non-zero unless two trained policies are the same bits.

    scripts/same-policy.py POLICY_A POLICY_B [EVAL_A EVAL_B]

POLICY_* are `--out` directories of `ahr train-policy`: their `policy.safetensors` must hold the same
tensors (the data and the tensor table; the `__metadata__` entry aside, whose key order varies from run
to run) and their `manifest.json` must be byte-identical. EVAL_* (optional) are the runs' held-out
`eval.json` files, compared byte for byte. Used by the results scripts that check a speed change keeps
every trained policy.
"""
import json
import struct
import sys


def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    table = json.loads(raw[8 : 8 + n])
    table.pop("__metadata__", None)
    return table, raw[8 + n :]


def same_bytes(a, b):
    return open(a, "rb").read() == open(b, "rb").read()


def main(argv):
    if len(argv) not in (3, 5):
        sys.exit(__doc__)
    a, b = argv[1], argv[2]
    problems = []
    if tensors(f"{a}/policy.safetensors") != tensors(f"{b}/policy.safetensors"):
        problems.append("policy tensors differ")
    if not same_bytes(f"{a}/manifest.json", f"{b}/manifest.json"):
        problems.append("manifests differ")
    if len(argv) == 5 and not same_bytes(argv[3], argv[4]):
        problems.append("held-out evaluations differ")
    if problems:
        sys.exit(f"{a} vs {b}: " + "; ".join(problems))


if __name__ == "__main__":
    main(sys.argv)
