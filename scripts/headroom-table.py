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


def load(path, fractions):
    if path.endswith(".jsonl"):
        points = [json.loads(line) for line in open(path) if line.strip()]
        full = [p for p in points if p["kind"].get("rule") == "uniform" and p["setting"] == "full"]
        if not full:
            sys.exit(f"{path}: no uniform `full` point (the exact memory) yet")
        exact_bytes = full[0]["kv_bytes_per_token"]
        # The metric's direction from the points: exact beats dropping everything.
        drop = [p for p in points if p["kind"].get("rule") == "uniform" and p["setting"] == "drop"]
        higher = not drop or full[0]["metric"] >= drop[0]["metric"]
        targets = []
        for fr in fractions:
            best = {}
            for p in points:
                f = p["kind"].get("rule")
                if f is None or p["kv_bytes_per_token"] > fr * exact_bytes * (1 + 1e-9):
                    continue
                # The better metric; on a tie, the smaller memory.
                better = f not in best or (p["metric"] > best[f]["metric"] if higher else p["metric"] < best[f]["metric"]) or (
                    p["metric"] == best[f]["metric"] and p["kv_bytes_per_token"] < best[f]["kv_bytes_per_token"])
                if better:
                    best[f] = dict(p, family=f)
            targets.append({"fraction": fr, "families": list(best.values())})
        counts = {}
        for p in points:
            name = rule_of(p) or p["name"]
            counts[name] = counts.get(name, 0) + 1
        note = "points so far: " + ", ".join(f"{f} {n}" for f, n in counts.items())
        return dict(metric="metric", higher_is_better=higher, exact_kv_bytes_per_token=exact_bytes,
                    points=points, targets=targets, sequences="?"), note
    return json.load(open(path)), None


def rule_of(point):
    """The rule family of a judge point (`None` for policies, whose kind is a plain string)."""
    kind = point["kind"]
    return kind.get("rule") if isinstance(kind, dict) else None


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
