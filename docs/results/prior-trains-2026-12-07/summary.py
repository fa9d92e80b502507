#!/usr/bin/env python3
"""Each policy against the per-token table it started from (`ahr analyze`'s `as_table.prior`) and
against its own table (`as_table.table`), paired on the same held-out windows, from the
analysis.json files under analyze/.
usage: summary.py [DIR]"""
import json, pathlib, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent)
print("| policy | policy: metric, memory | start table: metric, memory | policy − start table [95 %] | better / worse | own table: metric, memory | policy − own table [95 %] |")
print("|---|---|---|---|---|---|---|")
for f in sorted((root / "analyze").glob("*/analysis.json")):
    a = json.loads(f.read_text())
    t = a["as_table"]
    p, pm, m = t["prior"], t["prior_margin"], t["margin"]
    print(
        f"| {f.parent.name} | {t['replay']['metric']:.4f}, {100 * t['replay']['mem_frac']:.2f} % "
        f"| {p['metric']:.4f}, {100 * p['mem_frac']:.2f} % | {pm['margin']:+.4f} [{pm['low']:+.4f}, {pm['high']:+.4f}] "
        f"| {pm['sequences_better']} / {pm['sequences_worse']} "
        f"| {t['table']['metric']:.4f}, {100 * t['table']['mem_frac']:.2f} % | {m['margin']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}] |"
    )
