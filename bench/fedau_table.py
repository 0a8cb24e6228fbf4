"""Summarises runs/fedau/<model>/ into a Markdown table: mean (± std) over seeds of the final test
accuracy, worst-class test accuracy and training loss, per participation pattern and method; plus the
same accuracies averaged over the last 5 evaluations of each run (less sensitive to the last round's
participants than the final value)."""
import json
import statistics
import sys
from pathlib import Path

model = sys.argv[1] if len(sys.argv) > 1 else "logreg"
root = Path("runs/fedau") / model
order = ["fedau", "fedau_k50", "avg_participating", "avg_all", "known_prob", "mifa", "fedvarp"]
LAST = 5


def fmt(xs, pct):
    if not xs:
        return "n/a"
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * m:.2f} ± {100 * s:.2f}" if pct else f"{m:.4f} ± {s:.4f}"


def last_evals(run):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    evals = [r for r in rows if r.get("test_accuracy") is not None][-LAST:]
    acc = statistics.mean(r["test_accuracy"] for r in evals)
    worst = statistics.mean(r["worst_class_accuracy"] for r in evals)
    return acc, worst


print(
    "| pattern | method | final test accuracy (%) | final worst-class accuracy (%) | final train loss "
    f"| test accuracy, last {LAST} evals (%) | worst-class, last {LAST} evals (%) | seeds |"
)
print("|---|---|---|---|---|---|---|---|")
for pattern in ["bernoulli", "markov", "cyclic"]:
    for name in order:
        acc, worst, loss, acc_l, worst_l = [], [], [], [], []
        for run in sorted((root / pattern / name).glob("seed*")):
            p = run / "summary.json"
            if not p.exists():
                continue
            s = json.loads(p.read_text())
            acc.append(s["final_test_accuracy"])
            worst.append(s["final_worst_class_accuracy"])
            loss.append(s["final_train_loss"])
            a, w = last_evals(run)
            acc_l.append(a)
            worst_l.append(w)
        if acc:
            print(
                f"| {pattern} | {name} | {fmt(acc, True)} | {fmt(worst, True)} | {fmt(loss, False)} "
                f"| {fmt(acc_l, True)} | {fmt(worst_l, True)} | {len(acc)} |"
            )
