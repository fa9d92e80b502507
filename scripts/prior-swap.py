#!/usr/bin/env python3
"""Rewrite a prior table (`ahr fit-rule`'s output) with one option name swapped for another on
every layer, e.g. `recent:16` -> `full` for a review env whose review at age 16 turns `full` into
`full/16/drop` (the same storage as `recent:16`), so the table's choice becomes a reviewable one.

usage: scripts/prior-swap.py IN.json FROM TO OUT.json
"""
import json
import sys

if len(sys.argv) != 5:
    sys.exit(__doc__)
src, old, new, out = sys.argv[1:]
table = json.load(open(src))
menu = table["menu"]
if old not in menu:
    sys.exit(f"{src}: {old!r} is not in the table's menu ({', '.join(menu)})")
if new not in menu:
    menu.append(new)
i, j = menu.index(old), menu.index(new)
swapped = sum(row.count(i) for row in table["options"])
table["options"] = [[j if o == i else o for o in row] for row in table["options"]]
table["source"] += f" | with {old} written as {new} ({swapped} entries, scripts/prior-swap.py)"
json.dump(table, open(out, "w"), indent=2)
print(f"{out}: {swapped} entries {old} -> {new}")
