#!/usr/bin/env python3
"""Per-client accuracy against participation (bench/fedeval_mnist.sh runs): mean local test accuracy
of the quarter of clients that took part least (summary.json participation_counts) and of the
quarter that took part most, per method, mean ± std over seeds."""
import json
import statistics
import sys
from pathlib import Path

model = sys.argv[1] if len(sys.argv) > 1 else "logreg"
root = Path("runs/fedeval") / model
print("| method | least-participating 25% of clients | most-participating 25% | gap |")
print("|---|---|---|---|")
for method in sorted(p.name for p in root.iterdir() if p.is_dir()):
    low, high = [], []
    for d in sorted((root / method).glob("seed*")):
        s = json.loads((d / "summary.json").read_text())
        acc = {e["client"]: e["accuracy"] for e in s["client_evals"] if e["samples"] > 0}
        counts = s["participation_counts"]
        order = sorted(acc, key=lambda c: (counts[c], c))
        q = len(order) // 4
        low.append(statistics.mean(acc[c] for c in order[:q]))
        high.append(statistics.mean(acc[c] for c in order[-q:]))
    f = lambda v: f"{100 * statistics.mean(v):.1f} ± {100 * statistics.stdev(v):.1f}" if len(v) > 1 else f"{100 * v[0]:.1f}"
    gap = [h - l for l, h in zip(low, high)]
    print(f"| {method} | {f(low)} | {f(high)} | {f(gap)} |")
