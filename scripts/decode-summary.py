#!/usr/bin/env python3
"""Median over rounds of each run's median step (ms) for the before/after decode files
(`decode[-TAG]-{before,after}-roundR.json`, from `ahr bench decode`) in DIR; the speed-up over dense
MHA and the ratio to the bandwidth bound, per (ctx, batch, cache). Usage: decode-summary.py DIR [TAG]
(NAMES=warm,cold compares decode[-TAG]-{warm,cold}-roundR.json instead)"""
import glob, json, os, statistics, sys
if len(sys.argv) not in (2, 3):
    sys.exit(__doc__)
here = sys.argv[1]
prefix = "decode" + (f"-{sys.argv[2]}" if len(sys.argv) == 3 else "")
names = tuple(os.environ.get("NAMES", "before,after").split(","))
rows = {}
for name in names:
    files = sorted(glob.glob(f"{here}/{prefix}-{name}-round*.json"))
    if not files:
        sys.exit(f"decode-summary.py: no {prefix}-{name}-round*.json in {here}")
    for f in files:
        for r in json.load(open(f))["runs"]:
            rows.setdefault((r["ctx"], r["batch"], r["cache"]), {}).setdefault(name, []).append((r["step_ms"], r["bound_ms"]))
a, b = names
print(f"| ctx | batch | cache | {a} ms | × MHA | / bound | {b} ms | × MHA | / bound | {b} / {a} |")
print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for (ctx, batch, cache), v in sorted(rows.items()):
    if cache == "uniform:drop":
        continue
    cells = []
    for name in names:
        ms = statistics.median(x for x, _ in v[name])
        bound = statistics.median(b for _, b in v[name])
        mha = statistics.median(x for x, _ in rows[(ctx, batch, "dense-mha")][name])
        cells += [f"{ms:.3f}", f"{mha / ms:.2f}", f"{ms / bound:.2f}"]
    ratio = float(cells[3]) / float(cells[0])
    print(f"| {ctx} | {batch} | {cache} | " + " | ".join(cells) + f" | {ratio:.2f} |")
