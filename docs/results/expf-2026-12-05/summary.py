#!/usr/bin/env python3
"""Before (burn's exp: the C library's expf per element) / after (`ahr_tpa::expf`) from run.sh's raw files."""
import glob, json, os, statistics as st, sys

D = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
med = st.median


def values(pattern):
    return [float(open(f).read().split()[-1]) for f in sorted(glob.glob(os.path.join(D, pattern)))]


print("| run (wall seconds per round) | before | after | after / before (medians) |")
print("|---|---|---|---:|")
for name, what in [("text-keep", "PPO, 1024-byte text with reviews, 32 iterations × 16,384 steps"),
                   ("quickstart", "the quickstart's policy stage (`mqar-budget`, 250 iterations, held-out eval)"),
                   ("fit-round1", "the judge: the first round of a `token-class` fit on 1024-byte text")]:
    pat = (lambda t: f"{name}-{t}-round*.time")
    b, a = values(pat("before")), values(pat("after"))
    if b and a:
        print(f"| {what} | {', '.join(f'{x:.1f}' for x in b)} | {', '.join(f'{x:.1f}' for x in a)} | **{med(a) / med(b):.2f}** |")
for L in (128, 1024):
    sps = {t: [json.load(open(f))[0]["sps"] for f in sorted(glob.glob(os.path.join(D, f"rollout-L{L}-{t}-round*.json")))]
           for t in ("before", "after")}
    if sps["before"] and sps["after"]:
        print(f"| `bench rollout` L = {L} (SPS; re-assignment MQAR, no MLP) | {', '.join(f'{x:,.0f}' for x in sps['before'])} | "
              f"{', '.join(f'{x:,.0f}' for x in sps['after'])} | {med(sps['after']) / med(sps['before']):.2f} (SPS ratio) |")
