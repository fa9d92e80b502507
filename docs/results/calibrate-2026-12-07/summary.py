#!/usr/bin/env python3
"""Per calibrated policy: its price and training memory (cal/<p>/manifest.json), and held out
(analyze/<p>/analysis.json, 128 windows): the policy calibrated and as trained, and the table it
started from, paired with the calibrated policy (+ = the policy better, bits per byte)."""
import json, os, sys

here = os.path.dirname(os.path.abspath(__file__))
names = sorted(d for d in os.listdir(os.path.join(here, "analyze")) if d.startswith("text-"))
print("| policy | price | training memory as trained → calibrated | held out as trained | held out calibrated | start table | calibrated against start table |")
print("|---|---:|---|---|---|---|---|")
for n in names:
    m = json.load(open(os.path.join(here, "cal", n, "manifest.json")))["calibration"]
    a = json.load(open(os.path.join(here, "analyze", n, "analysis.json")))
    pol = a["policy"]
    trained = a["compared"][0][2]
    prior = (a.get("as_table") or {}).get("prior")
    pm = (a.get("as_table") or {}).get("prior_margin")
    cell = lambda p: f"{p['metric']:.4f} at {100 * p['mem_frac']:.2f} %"
    pr = cell(prior) if prior else "—"
    marg = f"{pm['margin']:+.4f} [{pm['low']:+.4f}, {pm['high']:+.4f}]" if pm else "—"
    short = n.replace("text-demote-python-", "")
    print(f"| {short} | {m['price']:+.3f} | {100 * m['memory_uncalibrated']:.2f} → {100 * m['memory']:.2f} % | "
          f"{cell(trained)} | {cell(pol)} | {pr} | {marg} |")
