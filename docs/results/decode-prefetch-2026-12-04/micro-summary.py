#!/usr/bin/env python3
"""Median over rounds of attend_micro's ns per cached token (micro-{before,after}-MODE-roundR.txt
in this directory), per mode and cache kind, with the read bandwidth it implies."""
import glob, os, re, statistics
here = os.path.dirname(os.path.abspath(__file__))
rows = {}
for f in glob.glob(f"{here}/micro-*-round*.txt"):
    side, mode = re.match(r"micro-(before|after)-(.+)-round\d+\.txt", os.path.basename(f)).groups()
    for line in open(f):
        m = re.match(r"(.+?): ([\d.]+) ms, ([\d.]+) ns/token, ([\d.]+) GB/s", line)
        if m:
            rows.setdefault((mode, m[1]), {}).setdefault(side, []).append((float(m[3]), float(m[4])))
print("| mode | cache | before ns/token | GB/s | after ns/token | GB/s | after / before |")
print("|---|---|---:|---:|---:|---:|---:|")
for (mode, kind), v in sorted(rows.items(), key=lambda kv: (["cache", "flush", "split", "split-flush"].index(kv[0][0]), kv[0][1])):
    b = statistics.median(x for x, _ in v["before"]); bg = statistics.median(g for _, g in v["before"])
    a = statistics.median(x for x, _ in v["after"]); ag = statistics.median(g for _, g in v["after"])
    print(f"| {mode} | {kind} | {b:.2f} | {bg:.1f} | {a:.2f} | {ag:.1f} | {a / b:.2f} |")
