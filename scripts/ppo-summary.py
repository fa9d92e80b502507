#!/usr/bin/env python3
"""The PPO summary table docs/ publishes: per seed and run, the stochastic training accuracy /
memory (mean of the 20 iterations up to each mark) and the held-out deterministic evaluation.
Each run directory holds seedS-metrics.jsonl.gz and seedS-eval.json for S = 1, 2, 3 (the files
docs/results/*/ppo/ keep).

usage: scripts/ppo-summary.py --marks 500,1000,2000 NAME=DIR [NAME=DIR ...]"""
import gzip
import json
import sys


def load(path):
    rows = {}
    for line in gzip.open(path, "rt"):
        r = json.loads(line)
        rows[r["step"]] = r  # a resumed run repeats the iterations after its last checkpoint: keep the rerun
    return [rows[k] for k in sorted(rows)]


def main(argv):
    if len(argv) < 3 or argv[0] != "--marks" or any("=" not in a for a in argv[2:]):
        sys.exit(__doc__)
    marks = [int(m) for m in argv[1].split(",")]
    runs = [tuple(a.split("=", 1)) for a in argv[2:]]
    print("Stochastic training accuracy / memory (fraction of exact), mean of the 20 iterations up to each mark; "
          "held-out = `eval.json` (256 sequences, deterministic).\n")
    print("| seed | run | " + " | ".join(f"it {m}" for m in marks) + " | held-out |")
    print("|---|---|" + "---|" * (len(marks) + 1))
    for s in (1, 2, 3):
        for name, d in runs:
            rows = load(f"{d}/seed{s}-metrics.jsonl.gz")
            cells = []
            for m in marks:
                w = rows[max(0, m - 20):m] if len(rows) >= m else []
                mean = lambda key: sum(r[key] for r in w) / len(w)
                cells.append(f"{mean('env/accuracy'):.3f} / {mean('env/mem_frac'):.3f}" if w else "")
            e = json.load(open(f"{d}/seed{s}-eval.json"))
            print(f"| {s} | {name} | " + " | ".join(cells) + f" | {e['accuracy']:.4f} at {100*e['mem_frac']:.1f} % |")


main(sys.argv[1:])
