#!/usr/bin/env python3
"""Headroom of a task (issue 15 item 5) from an `ahr eval` metrics.json run without policies:
exact, every uniform menu option, and the best setting of each rule family at each fixed memory
target (`--fractions`), with its gap to exact. One Markdown table per file.

usage: scripts/headroom-table.py DIR/metrics.json [...]"""
import json
import sys

for path in sys.argv[1:]:
    o = json.load(open(path))
    m, higher = o["metric"], o["higher_is_better"]
    exact_bytes = o["exact_kv_bytes_per_token"]
    uniform = [p for p in o["points"] if p["kind"].get("rule") == "uniform" and "/" not in p["setting"]
               and not p["setting"].startswith("recent:")]
    exact = next(p["metric"] for p in uniform if p["kv_bytes_per_token"] == exact_bytes)
    print(f"\n`{path}` ({o['sequences']} held-out sequences; {m}; memory as % of the exact choice's time-averaged bytes)\n")
    print("| uniform option | " + m + " | memory |\n|---|---:|---:|")
    for p in sorted(uniform, key=lambda p: p["kv_bytes_per_token"]):
        print(f"| `{p['setting']}` | {p['metric']:.4f} | {100 * p['kv_bytes_per_token'] / exact_bytes:.1f} % |")
    print("\n| target | family | best setting | " + m + " | memory | gap to exact |\n|---:|---|---|---:|---:|---:|")
    for t in o["targets"]:
        for f in sorted(t["families"], key=lambda f: -f["metric"] if higher else f["metric"]):
            gap = (exact - f["metric"]) if higher else (f["metric"] - exact)
            print(f"| {100 * t['fraction']:.0f} % | {f['family']} | `{f['setting']}` | {f['metric']:.4f} | "
                  f"{100 * f['kv_bytes_per_token'] / exact_bytes:.1f} % | {gap:+.4f} |")
