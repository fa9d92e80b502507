#!/usr/bin/env python3
"""Each policy against its own per-token table (`ahr analyze`'s `as_table`) and with every meta-feature
at its mean (the `context: ...` ablation), from the analysis.json files under this folder.
usage: summary.py [DIR]"""
import json, pathlib, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent)
print("| policy | policy: metric, memory | own table: metric, memory | decisions changed | policy − table [95 %] | better / worse sequences | every feature at its mean: metric, memory |")
print("|---|---|---|---:|---|---|---|")
for f in sorted(root.glob("*/analysis.json")):
    a = json.loads(f.read_text())
    t = a["as_table"]
    m = t["margin"]
    ctx = next(x for x in a["ablations"] if x["feature"].startswith("context"))
    print(
        f"| {f.parent.name} | {t['replay']['metric']:.4f}, {100 * t['replay']['mem_frac']:.2f} % "
        f"| {t['table']['metric']:.4f}, {100 * t['table']['mem_frac']:.2f} % | {100 * t['changed_decisions']:.1f} % "
        f"| {m['margin']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}] | {m['sequences_better']} / {m['sequences_worse']} "
        f"| {ctx['outcome']['metric']:.4f}, {100 * ctx['outcome']['mem_frac']:.2f} % |"
    )
