#!/usr/bin/env python3
"""Medians of docs/results/purge-delay-2026-12-05/run.sh's rounds: after / before."""
import json, re, statistics, sys
from pathlib import Path

d = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
def tokens(name, tag, r): return json.load(open(d / f"bench-train-{name}-{tag}-round{r}.json"))[0]["tokens_per_sec"]
def fields(path):
    s = path.read_text()
    secs = float(re.match(r"([\d.]+) s", s).group(1))
    peak = int(re.search(r"(\d+) KiB peak", s).group(1))
    faults = re.search(r"(\d+) minor faults", s)
    return secs, peak, int(faults.group(1)) if faults else None
rows = []
for name in ["text-python", "mqar"]:
    b = [tokens(name, "before", r) for r in (1, 2, 3)]; a = [tokens(name, "after", r) for r in (1, 2, 3)]
    fb = [fields(d / f"bench-train-{name}-before-round{r}.time") for r in (1, 2, 3)]
    fa = [fields(d / f"bench-train-{name}-after-round{r}.time") for r in (1, 2, 3)]
    print(f"bench train {name}: tokens/s before {[round(x) for x in b]} after {[round(x) for x in a]} "
          f"speed {statistics.median(a) / statistics.median(b):.3f}; "
          f"peak MiB before {[x[1] // 1024 for x in fb]} after {[x[1] // 1024 for x in fa]}; "
          f"faults before {[x[2] for x in fb]} after {[x[2] for x in fa]}")
for name, label in [("text-keep", "PPO 1024-byte text, 32 it."), ("fit-round1", "judge fit, first round")]:
    fb = [fields(d / f"{name}-before-round{r}.time") for r in (1, 2, 3)]
    fa = [fields(d / f"{name}-after-round{r}.time") for r in (1, 2, 3)]
    print(f"{label}: s before {[round(x[0], 1) for x in fb]} after {[round(x[0], 1) for x in fa]} "
          f"time {statistics.median(x[0] for x in fa) / statistics.median(x[0] for x in fb):.3f}; "
          f"peak MiB before {[x[1] // 1024 for x in fb]} after {[x[1] // 1024 for x in fa]}")
for tag in ["before", "after"]:
    s, p, f = fields(d / f"pretrain-text-python-{tag}.time")
    print(f"pretrain text-python 8 steps {tag}: {s} s, peak {p // 1024} MiB, {f} faults")
