#!/usr/bin/env python3
"""Table of bench/fedeval_mnist.sh: per method, mean ± std over seeds of the final central test
accuracy and of the last federated evaluation's per-client statistics."""
import json
import statistics
import sys
from pathlib import Path

model = sys.argv[1] if len(sys.argv) > 1 else "logreg"
root = Path("runs/fedeval") / model
cols = [
    ("central test acc", "final_test_accuracy"),
    ("central worst class", "final_worst_class_accuracy"),
    ("fed acc (weighted)", "final_fed_accuracy"),
    ("fed mean over clients", "final_fed_mean_accuracy"),
    ("fed p10 client", "final_fed_p10_accuracy"),
    ("fed min client", "final_fed_min_accuracy"),
]


def fmt(values):
    if not values:
        return "–"
    m = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{m:.1f}"
    return f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


print("| method | seeds | " + " | ".join(c for c, _ in cols) + " |")
print("|---|---|" + "---|" * len(cols))
for method in sorted(p.name for p in root.iterdir() if p.is_dir()):
    sums = [
        json.loads((d / "summary.json").read_text())
        for d in sorted((root / method).glob("seed*"))
        if (d / "summary.json").exists()
    ]
    row = [fmt([s[k] for s in sums if s.get(k) is not None]) for _, k in cols]
    print(f"| {method} | {len(sums)} | " + " | ".join(row) + " |")
