"""Summarises runs/fedau/<model>/ into a Markdown table: mean (± std) over seeds of the final test
accuracy, worst-class test accuracy and training loss, per participation pattern and method."""
import json
import statistics
import sys
from pathlib import Path

model = sys.argv[1] if len(sys.argv) > 1 else "logreg"
root = Path("runs/fedau") / model
order = ["fedau", "fedau_k50", "avg_participating", "avg_all", "known_prob", "mifa", "fedvarp"]


def fmt(xs, pct):
    if not xs:
        return "n/a"
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * m:.2f} ± {100 * s:.2f}" if pct else f"{m:.4f} ± {s:.4f}"


print(f"| pattern | method | test accuracy (%) | worst-class accuracy (%) | train loss | seeds |")
print("|---|---|---|---|---|---|")
for pattern in ["bernoulli", "markov", "cyclic"]:
    for name in order:
        acc, worst, loss = [], [], []
        for run in sorted((root / pattern / name).glob("seed*")):
            p = run / "summary.json"
            if not p.exists():
                continue
            s = json.loads(p.read_text())
            acc.append(s["final_test_accuracy"])
            worst.append(s["final_worst_class_accuracy"])
            loss.append(s["final_train_loss"])
        if acc:
            print(f"| {pattern} | {name} | {fmt(acc, True)} | {fmt(worst, True)} | {fmt(loss, False)} | {len(acc)} |")
