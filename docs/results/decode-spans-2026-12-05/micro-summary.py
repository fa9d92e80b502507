#!/usr/bin/env python3
"""Median over rounds of ns per cached token, per shape, mode and cache kind (micro-*.txt)."""
import glob, os, re, statistics
here = os.path.dirname(os.path.abspath(__file__))
rows = {}
for f in glob.glob(f"{here}/micro-*-round*.txt"):
    shape, side, mode = re.match(r".*/micro-(\w+)-(before|after)-(\w+)-round\d+\.txt", f).groups()
    for line in open(f):
        kind, ns = re.match(r"(.*): [\d.]+ ms, ([\d.]+) ns/token", line).groups()
        rows.setdefault((shape, mode, kind), {}).setdefault(side, []).append(float(ns))
print("| heads × d_h | mode | cache | before ns/token | after ns/token | after / before |")
print("|---|---|---|---:|---:|---:|")
for (shape, mode, kind), v in sorted(rows.items()):
    b, a = statistics.median(v["before"]), statistics.median(v["after"])
    print(f"| {shape} | {mode} | {kind} | {b:.2f} | {a:.2f} | {a / b:.2f} |")
