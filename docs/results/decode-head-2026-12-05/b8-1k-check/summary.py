#!/usr/bin/env python3
"""Median (min-max) over the twelve processes of each one's median step, ms, per binary and cache."""
import glob, json, os, statistics
here = os.path.dirname(os.path.abspath(__file__))
for b in ("ahr36base", "ahr36c", "ahr36d"):
    rows = {}
    for f in glob.glob(f"{here}/{b}-run*.json"):
        for x in json.load(open(f))["runs"]:
            rows.setdefault(x["cache"], []).append(x["step_ms"])
    print(b, "  ".join(f"{k} {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})" for k, v in sorted(rows.items())))
