#!/usr/bin/env python3
"""Rollout env steps per second, before / after, per L and round (rollout-{before,after}-LL-roundR.json here)."""
import glob, json, os, re
here = os.path.dirname(os.path.abspath(__file__))
sps = {}
for f in glob.glob(f"{here}/rollout-*-L*-round*.json"):
    side, L, r = re.match(r"rollout-(before|after)-L(\d+)-round(\d+)\.json", os.path.basename(f)).groups()
    sps[(side, int(L), int(r))] = json.load(open(f))[-1]["sps"]
rounds = sorted({r for _, _, r in sps})
print("| L | before (rounds) | after (rounds) | after / before |")
print("|---:|---|---|---|")
for L in sorted({L for _, L, _ in sps}):
    b = [sps[("before", L, r)] for r in rounds]; a = [sps[("after", L, r)] for r in rounds]
    print(f"| {L} | " + " / ".join(f"{x:,.0f}" for x in b) + " | " + " / ".join(f"{x:,.0f}" for x in a)
          + " | " + " / ".join(f"{y / x:.2f}" for x, y in zip(b, a)) + " |")
