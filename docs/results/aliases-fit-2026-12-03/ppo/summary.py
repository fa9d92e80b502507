import json, gzip, sys
# usage: summary.py DIR [NAME=OTHER_DIR ...]  (each with seedS-metrics.jsonl.gz, seedS-eval.json)
runs = [("fit model, rank:1 on the menu", sys.argv[1])] + [tuple(a.split("=", 1)) for a in sys.argv[2:]]
marks = [250, 500, 1000, 1500]
def load(p):
    rows = {}
    for l in gzip.open(p, 'rt'):
        r = json.loads(l)
        rows[r['step']] = r  # a resumed run repeats the iterations after its last checkpoint: keep the rerun
    return [rows[k] for k in sorted(rows)]
print("Stochastic training accuracy / memory (fraction of exact), mean of the 20 iterations up to each mark; held-out = `eval.json` (256 sequences, deterministic).\n")
print("| seed | run | " + " | ".join(f"it {m}" for m in marks) + " | held-out |")
print("|---|---|" + "---|" * (len(marks) + 1))
for s in (1, 2, 3):
    for name, d in runs:
        rows = load(f"{d}/seed{s}-metrics.jsonl.gz")
        cells = []
        for m in marks:
            w = rows[max(0, m - 20):m] if len(rows) >= m else []
            cells.append(f"{sum(r['env/accuracy'] for r in w)/len(w):.3f} / {sum(r['env/mem_frac'] for r in w)/len(w):.3f}" if w else "")
        e = json.load(open(f"{d}/seed{s}-eval.json"))
        print(f"| {s} | {name} | " + " | ".join(cells) + f" | {e['accuracy']:.4f} at {100*e['mem_frac']:.1f} % |")
