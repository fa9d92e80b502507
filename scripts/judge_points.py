"""What the table scripts read from the points an `ahr eval` run writes (`points.jsonl`): the
exact memory, the metric's direction, and each rule family's best setting within a memory.
Imported by scripts/headroom-table.py and scripts/best-at-memory.py."""
import gzip
import json
import sys


def open_text(path):
    """A judge output file, plain or gzipped (`points.jsonl.gz`, as docs/results keeps the large
    ones); a missing or unreadable file is a one-line error and exit status 1, not a traceback."""
    try:
        return gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)
    except OSError as e:
        sys.exit(f"error: cannot read {path}: {e.strerror or e}")


def read(paths):
    """Every point of the given `points.jsonl` files, in order."""
    out = []
    for path in paths:
        with open_text(path) as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


def rule_of(point):
    """The rule family of a judge point (`None` for policies, whose kind is a plain string)."""
    kind = point["kind"]
    return kind.get("rule") if isinstance(kind, dict) else None


def exact_and_direction(points, where):
    """The exact choice's bytes per token (uniform `full`) and whether a higher metric is better
    (accuracy) or lower (bits per byte): exact beats dropping everything. Exits when `where` holds
    no uniform `full` point."""
    full = [p for p in points if rule_of(p) == "uniform" and p["setting"] == "full"]
    if not full:
        sys.exit(f"{where}: no uniform `full` point (the exact memory) yet")
    drop = [p for p in points if rule_of(p) == "uniform" and p["setting"] == "drop"]
    higher = not drop or full[0]["metric"] >= drop[0]["metric"]
    return full[0]["kv_bytes_per_token"], higher


def best_per_family(points, max_bytes, higher):
    """Each rule family's best point at ≤ `max_bytes` per token (on a tie, the smaller memory),
    keyed by family in the order families first appear."""
    best = {}
    for p in points:
        f = rule_of(p)
        if f is None or p["kv_bytes_per_token"] > max_bytes * (1 + 1e-9):
            continue
        b = best.get(f)
        better = b is None or (p["metric"] > b["metric"] if higher else p["metric"] < b["metric"]) or (
            p["metric"] == b["metric"] and p["kv_bytes_per_token"] < b["kv_bytes_per_token"])
        if better:
            best[f] = p
    return best
