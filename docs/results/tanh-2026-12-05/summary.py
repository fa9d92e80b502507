#!/usr/bin/env python3
"""Before (burn's tanh) / after (the policy's vectorised tanh) from run.sh's raw files."""
import glob, json, os, statistics as st, sys

D = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
med = st.median


def rounds(pattern):
    return sorted(glob.glob(os.path.join(D, pattern)))


def secs(name, tag):
    return [float(open(f).read().split()[-1]) for f in rounds(f"{name}-{tag}-round*.time")]


def rollout_sps(name, tag):
    """Steps per second of the rollouts alone: steps over the iteration's SPS, from metrics.jsonl."""
    out = []
    for f in rounds(f"{name}-{tag}-round*-metrics.jsonl"):
        rows = [json.loads(line) for line in open(f)]
        out.append(sum(r["charts/SPS"] for r in rows) / len(rows))
    return out


print("## PPO runs (wall seconds per round; after / before of the medians)\n")
print("| run | before | after | after / before | rollout SPS before → after (mean over iterations, median of rounds) |")
print("|---|---|---|---:|---|")
for name, what in [("text-keep", "1024-byte text with reviews (`text-python-table-v2-keep`), 32 iterations × 16,384 steps, MLP policy"),
                   ("attention", "re-assignment MQAR with reviews, attention policy (`mqar-tiny-budget-attention`), 100 iterations × 512 steps"),
                   ("quickstart", "the quickstart's policy stage (`mqar-budget`, 250 iterations, held-out eval)")]:
    b, a = secs(name, "before"), secs(name, "after")
    if not b or not a:
        continue
    sb, sa = rollout_sps(name, "before"), rollout_sps(name, "after")
    print(f"| {what} | {' '.join(f'{x:.1f}' for x in b)} | {' '.join(f'{x:.1f}' for x in a)} | "
          f"**{med(a) / med(b):.2f}** | {med(sb):,.0f} → {med(sa):,.0f} |")

print("\n## Rollouts alone (`ahr bench rollout`, 2 workers, `mqar-tiny-updates-1024-ft3`; SPS, median of rounds)\n")
print("| L | before | after | after / before (median) | per round |")
print("|---:|---:|---:|---:|---|")
for L in (128, 1024):
    b = [json.load(open(f))[0]["sps"] for f in rounds(f"rollout-L{L}-before-round*.json")]
    a = [json.load(open(f))[0]["sps"] for f in rounds(f"rollout-L{L}-after-round*.json")]
    r = [x / y for x, y in zip(a, b)]
    print(f"| {L} | {med(b):,.0f} | {med(a):,.0f} | {med(r):.2f} | {' '.join(f'{x:.2f}' for x in r)} |")
