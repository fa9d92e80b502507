#!/usr/bin/env python3
"""Median over rounds of micro.txt (ms per call of the kernel, 16k tokens, 8 heads x 32)."""
import re, statistics, sys, collections
rows = collections.defaultdict(list)
key = None
for line in open(sys.argv[1] if len(sys.argv) > 1 else __file__.replace("summary.py", "micro.txt")):
    m = re.match(r"== round \d+ (\w+) Q_RANK=(\d+) ?(FLUSH=1)? ?(SPLIT=1)?", line)
    if m:
        key = (m.group(2), "memory" if m.group(3) else "cache", "2 cores" if m.group(4) else "1 core", m.group(1))
        continue
    m = re.match(r"(.*?): ([\d.]+) ms", line)
    if m and key:
        rows[key + (m.group(1),)].append(float(m.group(2)))
print("| query | cache from | threads | kind | before ms | after ms | after / before |")
print("|---|---|---|---|---:|---:|---:|")
seen = sorted({(q, f, s, k) for (q, f, s, b, k) in rows})
for q, f, s, k in seen:
    b = statistics.median(rows[(q, f, s, "before", k)]); a = statistics.median(rows[(q, f, s, "after", k)])
    print(f"| {'materialised' if q == '0' else 'TPA rank ' + q} | {f} | {s} | {k} | {b:.3f} | {a:.3f} | {a / b:.2f} |")
