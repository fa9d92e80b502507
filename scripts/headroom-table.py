#!/usr/bin/env python3
"""Headroom of a task (issue 15 item 5) from an `ahr eval` run without policies: exact, every
uniform menu option, and the best setting of each rule family at each fixed memory target, with
its gap to exact. One Markdown table per file.

Reads a finished run's `metrics.json` (its targets are the run's `--fractions`) or the
`points.jsonl` a run writes point by point (also a run stopped early: the best of each family at
≤ each target of `--fractions`, over the points it finished; a family whose search had not ended
may lack settings, so the file's families are listed with their point counts).

usage: scripts/headroom-table.py [--fractions 0.1,0.25,0.5] DIR/metrics.json|DIR/points.jsonl [...]"""
import json
import sys

from judge_points import best_per_family, exact_and_direction, open_text, read, rule_of


def load(path, fractions):
    if path.endswith((".jsonl", ".jsonl.gz")):
        points = read([path])
        exact_bytes, higher = exact_and_direction(points, path)
        targets = []
        for fr in fractions:
            best = best_per_family(points, fr * exact_bytes, higher)
            targets.append({"fraction": fr, "families": [dict(p, family=f) for f, p in best.items()]})
        counts = {}
        for p in points:
            name = rule_of(p) or p["name"]
            counts[name] = counts.get(name, 0) + 1
        note = "points so far: " + ", ".join(f"{f} {n}" for f, n in counts.items())
        return dict(metric="metric", higher_is_better=higher, exact_kv_bytes_per_token=exact_bytes,
                    points=points, targets=targets, sequences="?"), note
    with open_text(path) as f:
        return json.load(f), None


def main(argv):
    fractions = [0.1, 0.25, 0.5]
    if argv[:1] == ["--fractions"]:
        fractions = [float(x) for x in argv[1].split(",")]
        argv = argv[2:]
    if not argv:
        sys.exit(__doc__)
    for path in argv:
        o, note = load(path, fractions)
        m, higher = o["metric"], o["higher_is_better"]
        exact_bytes = o["exact_kv_bytes_per_token"]
        uniform = [p for p in o["points"] if rule_of(p) == "uniform" and "/" not in p["setting"]
                   and not p["setting"].startswith("recent:")]
        exact = next((p["metric"] for p in uniform if p["kv_bytes_per_token"] == exact_bytes), None)
        if exact is None:
            sys.exit(f"{path}: no exact point (run the judge with the uniform family)")
        print(f"\n`{path}` ({o['sequences']} held-out sequences; {m}; memory as % of the exact choice's time-averaged bytes)\n")
        if note:
            print(note + "\n")
        print("| uniform option | " + m + " | memory |\n|---|---:|---:|")
        for p in sorted(uniform, key=lambda p: p["kv_bytes_per_token"]):
            print(f"| `{p['setting']}` | {p['metric']:.4f} | {100 * p['kv_bytes_per_token'] / exact_bytes:.1f} % |")
        print("\n| target | family | best setting | " + m + " | memory | gap to exact |\n|---:|---|---|---:|---:|---:|")
        for t in o["targets"]:
            for f in sorted(t["families"], key=lambda f: -f["metric"] if higher else f["metric"]):
                gap = (exact - f["metric"]) if higher else (f["metric"] - exact)
                print(f"| {100 * t['fraction']:.0f} % | {f['family']} | `{f['setting']}` | {f['metric']:.4f} | "
                      f"{100 * f['kv_bytes_per_token'] / exact_bytes:.1f} % | {gap:+.4f} |")


main(sys.argv[1:])
