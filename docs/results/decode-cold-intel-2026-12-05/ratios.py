#!/usr/bin/env python3
"""Per round: uniform rank:1 over dense MHA (step-time ratio), the mqar preset at 16k, warm and cold."""
import glob, json, os, statistics
here = os.path.dirname(os.path.abspath(__file__))
for mode in ("warm", "cold"):
    for b in (1, 8):
        rs = []
        for f in sorted(glob.glob(f"{here}/decode-mqar-{mode}-round*.json")):
            runs = {(r["ctx"], r["batch"], r["cache"]): r["step_ms"] for r in json.load(open(f))["runs"]}
            rs.append(runs[(16384, b, "dense-mha")] / runs[(16384, b, "uniform:rank:1")])
        print(f"{mode} ctx 16384 batch {b}: median {statistics.median(rs):.2f}, min {min(rs):.2f}, "
              f"max {max(rs):.2f} over {len(rs)} rounds; >= 2.0 in {sum(x >= 2 for x in rs)}")
