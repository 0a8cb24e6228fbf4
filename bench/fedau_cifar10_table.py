"""Summarises runs/fedau_cifar10/<pattern>/<method>/seed<k>/ (bench/fedau_cifar10.sh) into Markdown:
one row per run (final and last-5-evaluation test accuracy, worst-class accuracy, train loss, rounds,
wall time, seconds per training round and per evaluation), then mean ± std over seeds per pattern and
method. Seconds per round is the median of time_round_s over the rounds without an evaluation; seconds
per evaluation is the median of time_eval_s over the evaluated rounds (the full training set for the
train loss plus the test set)."""
import json
import statistics
import sys
from pathlib import Path

import run_info

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fedau_cifar10")
patterns = ["bernoulli", "markov", "cyclic"]
order = ["fedau", "fedau_k50", "avg_participating", "avg_all", "known_prob", "mifa", "fedvarp"]
LAST = 5


def load(run):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    s = json.loads((run / "summary.json").read_text())
    evals = [r for r in rows if r.get("test_accuracy") is not None]
    plain = [r["time_round_s"] for r in rows if r.get("test_accuracy") is None]
    machine = run_info.machine(run)
    tail = evals[-LAST:]
    return {
        "rounds": s["rounds"],
        "acc": s["final_test_accuracy"],
        "acc_l": statistics.mean(r["test_accuracy"] for r in tail),
        "worst": s["final_worst_class_accuracy"],
        "worst_l": statistics.mean(r["worst_class_accuracy"] for r in tail),
        "loss": s["final_train_loss"],
        "wall": float(machine["wall_s"]) if "wall_s" in machine else s["total_wall_s"],
        "s_round": statistics.median(plain) if plain else float("nan"),
        "s_eval": statistics.median(r["time_eval_s"] for r in evals) if evals else float("nan"),
        "evals": len(evals),
    }


def fmt(xs, pct):
    m = statistics.mean(xs)
    if len(xs) == 1:
        return f"{100 * m:.2f}" if pct else f"{m:.4f}"
    s = statistics.stdev(xs)
    return f"{100 * m:.2f} ± {100 * s:.2f}" if pct else f"{m:.4f} ± {s:.4f}"


runs = {}
for pattern in patterns:
    for name in order:
        for run in sorted((root / pattern / name).glob("seed*"), key=lambda p: int(p.name[4:])):
            if (run / "summary.json").exists():
                runs.setdefault((pattern, name), []).append((run.name, load(run)))

print("Per run (accuracies in %; last 5 = mean over the last 5 evaluations):\n")
print(
    "| pattern | method | seed | rounds | final test acc | test acc, last 5 | final worst-class acc "
    "| worst-class, last 5 | final train loss | wall time (s) | s / round | s / eval |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for (pattern, name), rs in runs.items():
    for seed, r in rs:
        print(
            f"| {pattern} | {name} | {seed[4:]} | {r['rounds']} | {100 * r['acc']:.2f} | {100 * r['acc_l']:.2f} "
            f"| {100 * r['worst']:.2f} | {100 * r['worst_l']:.2f} | {r['loss']:.4f} | {r['wall']:.0f} "
            f"| {r['s_round']:.3f} | {r['s_eval']:.2f} |"
        )
print("\nMean ± std over seeds (std only where there are 2 or more):\n")
print(
    "| pattern | method | seeds | final test acc (%) | test acc, last 5 (%) | final worst-class acc (%) "
    "| worst-class, last 5 (%) | final train loss |"
)
print("|---|---|---|---|---|---|---|---|")
for (pattern, name), rs in runs.items():
    col = lambda k: [r[k] for _, r in rs]  # noqa: E731
    print(
        f"| {pattern} | {name} | {len(rs)} | {fmt(col('acc'), True)} | {fmt(col('acc_l'), True)} "
        f"| {fmt(col('worst'), True)} | {fmt(col('worst_l'), True)} | {fmt(col('loss'), False)} |"
    )
