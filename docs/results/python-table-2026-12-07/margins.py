#!/usr/bin/env python3
"""Per policy of an `ahr eval` run: each judged family's best setting at its memory, the paired margin
(positive: the policy better) with its 95 % interval, and the cross-fitted margin.
usage: margins.py metrics.json   (gzipped: margins.py <(zcat metrics.json.gz))"""
import json, sys
m = json.load(open(sys.argv[1]))
for p in m['policies']:
    row = [p['name'].split('/')[-1].replace('text-demote-python-table-', ''), f"{p['metric']:.4f} {100*p['mem_frac']:.2f}%"]
    for item in p['families']:
        f = item[0] if isinstance(item, list) else item
        pr = f['paired']; cf = (f.get('cross_fitted') or {}).get('paired', {})
        row.append(f"{f['family']} {f['metric']:.4f}@{100*f['kv_bytes_per_token']/1024:.2f}% {pr['margin']:+.4f} [{pr['low']:+.4f}, {pr['high']:+.4f}] cf {cf.get('margin', float('nan')):+.4f}")
    print(" | ".join(row))
