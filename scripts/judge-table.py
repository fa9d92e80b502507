#!/usr/bin/env python3
"""Summarise `ahr eval` metrics.json files (one per task) as the Markdown tables docs/ publish:
per policy its metric and memory, per rule family the best setting at <= its memory, and (when
the judge paired them) the closest family's margin with its 95 % paired-bootstrap interval, and
(since 2026-12-07) the closest family's cross-fitted margin: its setting chosen on one half of the
held-out sequences, scored on the other.

usage: scripts/judge-table.py DIR/metrics.json[.gz] [...]"""
import json
import sys

from judge_points import open_text

for path in sys.argv[1:]:
    with open_text(path) as f:
        o = json.load(f)
    m = o["metric"]
    fams = []
    for v in o["policies"]:
        for best, _ in v["families"]:
            if best["family"] not in fams:
                fams.append(best["family"])
    print(f"\n`{path}` ({o['sequences']} held-out sequences, {m}, memory as % of the exact choice's time-averaged bytes)\n")
    paired = any(b.get("paired") for v in o["policies"] for b, _ in v["families"])
    extra = " closest family: margin, 95 % interval (paired bootstrap), sequences better / worse |" if paired else ""
    crossed = any(b.get("cross_fitted") for v in o["policies"] for b, _ in v["families"])
    if crossed:
        extra += " closest family cross-fitted (setting chosen on the other half of the sequences) |"
    print("| policy | " + m + " | memory | " + " | ".join(f"best {f} at ≤ its memory" for f in fams) + " | beats every family |" + extra)
    print("|---|---:|---:|" + "---|" * len(fams) + ":-:|" + ("---|" if paired else "") + ("---|" if crossed else ""))
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
        row = f"| {v['name'].removeprefix('policy:')} | {v['metric']:.4f} | {100 * v['mem_frac']:.1f} % | " + " | ".join(cells) + f" | {'yes' if v['beats_every_family'] else 'no'} |"
        if paired:
            with_p = [b for b, _ in v["families"] if b.get("paired")]
            if with_p:
                b = min(with_p, key=lambda b: b["paired"]["margin"])
                p = b["paired"]
                row += f" {b['family']}: {p['margin']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}], {p['sequences_better']} / {p['sequences_worse']} of {p['sequences']} |"
                if crossed:
                    c = [b for b, _ in v["families"] if b.get("cross_fitted")]
                    if c:
                        b = min(c, key=lambda b: b["cross_fitted"]["paired"]["margin"])
                        p = b["cross_fitted"]["paired"]
                        row += f" {b['family']}: {p['margin']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}] |"
                    else:
                        row += " |"
            else:
                row += " |"
        print(row)
