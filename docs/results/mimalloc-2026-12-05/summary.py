#!/usr/bin/env python3
"""Before (glibc malloc) / after (mimalloc) from run.sh's raw files: medians over rounds, after/before."""
import glob, json, os, statistics as st, sys

D = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
med = st.median


def rounds(pattern):
    return sorted(glob.glob(os.path.join(D, pattern)))


print("## Rollouts (env steps per second, 2 workers; median of rounds, after / before per round)\n")
print("| L | before | after | after / before (median) | per round |")
print("|---:|---:|---:|---:|---|")
for L in (128, 512, 1024, 2048):
    b = [json.load(open(f))[0]["sps"] for f in rounds(f"rollout-L{L}-before-round*.json")]
    a = [json.load(open(f))[0]["sps"] for f in rounds(f"rollout-L{L}-after-round*.json")]
    r = [x / y for x, y in zip(a, b)]
    print(f"| {L} | {med(b):,.0f} | {med(a):,.0f} | {med(r):.2f} | {' '.join(f'{x:.2f}' for x in r)} |")

print("\n## Decode steps, mqar preset (ms, median over rounds of each run's median of 15 steps)\n")
print("| ctx | batch | cache | before | after | after / before |")
print("|---:|---:|---|---:|---:|---:|")
runs = {}
for tag in ("before", "after"):
    for f in rounds(f"decode-{tag}-round*.json"):
        for r in json.load(open(f))["runs"]:
            runs.setdefault((r["ctx"], r["batch"], r["cache"], tag), []).append(r["step_ms"])
for (ctx, batch, cache, tag) in sorted(k for k in runs if k[3] == "before"):
    b, a = med(runs[(ctx, batch, cache, "before")]), med(runs[(ctx, batch, cache, "after")])
    print(f"| {ctx} | {batch} | {cache} | {b:.3f} | {a:.3f} | {a / b:.2f} |")

print("\n## Whole jobs (seconds; each round)\n")
for name, pat in [("train-policy (quickstart's policy stage, wall)", "train-policy-{}-round*.time"),
                  ("token-class fit, round 1 (wall)", "fit-round1-{}-round*.time")]:
    b = [float(open(f).read().split()[-1]) for f in rounds(pat.format("before"))]
    a = [float(open(f).read().split()[-1]) for f in rounds(pat.format("after"))]
    print(f"- {name}: before {' '.join(f'{x:.1f}' for x in b)}; after {' '.join(f'{x:.1f}' for x in a)}; "
          f"after / before {med(a) / med(b):.2f}")
for name in ("mqar", "text-python"):
    for tag in ("before", "after"):
        tps = [json.load(open(f))[0]["tokens_per_sec"] for f in rounds(f"pretrain-{name}-{tag}-round*.json")]
        rss = [int(open(f).read()) / 1024 for f in rounds(f"pretrain-{name}-{tag}-round*.maxrss-kb")]
        print(f"- pretraining, {name} preset (bench train), {tag}: tokens/s {' '.join(f'{x:,.0f}' for x in tps)}"
              f" (median {med(tps):,.0f}); peak RSS MiB {' '.join(f'{x:.0f}' for x in rss)}")
