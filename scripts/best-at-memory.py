#!/usr/bin/env python3
"""Best setting of each rule family at <= given memories, from the points `ahr eval` runs wrote
(`points.jsonl`, one or more runs on the same held-out sequences). For families whose search
enumerates a fixed grid and evaluates every setting that fits its target (`superseded`, `spike`,
`superseded-spike`, `layer-windows`' grid), a run at a target of 50 % holds every setting up to
50 %, so the best at <= any smaller memory is the one the judge would pick there; bisected
families (streaming-llm, h2o, ...) only hold the settings their searches visited.

usage: scripts/best-at-memory.py --memory 0.2,0.25 [--families spike,superseded-spike] points.jsonl [...]
       (memories as fractions of the exact choice's time-averaged bytes, uniform `full`)"""
import sys

from judge_points import best_per_family, exact_and_direction, read, rule_of


def main(argv):
    memories, families, files = [], None, []
    it = iter(argv)
    for a in it:
        if a == "--memory":
            memories = [float(x) for x in next(it).split(",")]
        elif a == "--families":
            families = next(it).split(",")
        else:
            files.append(a)
    if not memories or not files:
        sys.exit(__doc__)
    points = read(files)
    exact_bytes, higher = exact_and_direction(points, ", ".join(files))
    fams = families or sorted({rule_of(p) for p in points} - {None})
    print("| memory ≤ | family | best setting | metric | memory |")
    print("|---:|---|---|---:|---:|")
    for m in memories:
        best = best_per_family(points, m * exact_bytes, higher)
        for fam in fams:
            if fam not in best:
                print(f"| {100 * m:.1f} % | {fam} | (nothing fits) | | |")
                continue
            p = best[fam]
            print(f"| {100 * m:.1f} % | {fam} | `{p['name']}`: `{p['setting']}` | {p['metric']:.4f} | "
                  f"{100 * p['kv_bytes_per_token'] / exact_bytes:.1f} % |")


main(sys.argv[1:])
