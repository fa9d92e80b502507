#!/usr/bin/env python3
"""How much of the corpus a copy from far back could predict: an upper-bound-style count, no model.

For 300 random 1024-byte windows of the Python documentation's .txt sources (seed 0, any file), at
every position t >= 256: does the 8 bytes before t occur earlier in the window followed by the byte
at t — within 128 bytes back of t, beyond 128 bytes, or only beyond 128 (a copy a 128-byte window
cannot make)? Prints the three fractions of positions.
"""
import os
import random

ROOT = "/usr/local/share/ahr/python-doc"
K = 8


def main():
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(ROOT) for f in fs if f.endswith(".txt"))
    data = [b for b in (open(f, "rb").read() for f in files) if len(b) >= 1024]
    rng = random.Random(0)
    total = near_hits = far_hits = far_only = 0
    for _ in range(300):
        doc = rng.choice(data)
        start = rng.randrange(0, len(doc) - 1024 + 1)
        w = doc[start : start + 1024]
        for t in range(256, 1024):
            total += 1
            suffix = w[t - K : t]
            near = far = False
            i = w.find(suffix, 0, t - 1)
            while i != -1 and i + K < t:
                j = i + K  # the byte that followed this earlier occurrence
                if w[j] == w[t]:
                    if t - j <= 128:
                        near = True
                    else:
                        far = True
                i = w.find(suffix, i + 1, t - 1)
            near_hits += near
            far_hits += far
            far_only += far and not near
    print(
        f"positions {total}: {K}-byte context match predicting the byte: within 128 back {near_hits / total:.3f}, "
        f"beyond 128 {far_hits / total:.3f}, only beyond 128 {far_only / total:.3f}"
    )


if __name__ == "__main__":
    main()
