#!/usr/bin/env python3
"""Summarise `ahr eval` metrics.json files (one per task) as the Markdown tables docs/ publish:
per policy its metric and memory, and per rule family the best setting at <= its memory.

usage: scripts/judge-table.py DIR/metrics.json [...]"""
import json
import sys

for path in sys.argv[1:]:
    o = json.load(open(path))
    m = o["metric"]
    fams = []
    for v in o["policies"]:
        for best, _ in v["families"]:
            if best["family"] not in fams:
                fams.append(best["family"])
    print(f"\n`{path}` ({o['sequences']} held-out sequences, {m}, memory as % of the exact choice's time-averaged bytes)\n")
    print("| policy | " + m + " | memory | " + " | ".join(f"best {f} at ≤ its memory" for f in fams) + " | beats every family |")
    print("|---|---:|---:|" + "---|" * len(fams) + ":-:|")
    exact = o["exact_kv_bytes_per_token"]
    for v in o["policies"]:
        cells = []
        by = {b["family"]: (b, beats) for b, beats in v["families"]}
        for f in fams:
            if f in by:
                b, beats = by[f]
                mark = "" if beats else " **≥**"
                cells.append(f"{b['metric']:.4f} ({b['name'].split('@')[-1] if '@' in b['name'] else b['setting']}, {b['setting'] if '@' in b['name'] else ''}{', ' if '@' in b['name'] else ''}{100 * b['kv_bytes_per_token'] / exact:.1f} %){mark}")
            else:
                cells.append("none fits")
        print(f"| {v['name'].removeprefix('policy:')} | {v['metric']:.4f} | {100 * v['mem_frac']:.1f} % | " + " | ".join(cells) + f" | {'yes' if v['beats_every_family'] else 'no'} |")
