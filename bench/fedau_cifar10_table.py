"""Summarises runs/fedau_cifar10/<pattern>/<method>/seed<k>/ (bench/fedau_cifar10.sh) into Markdown.

Default output (docs/fedau_cifar10.md): one row per run (final and last-5-evaluation test accuracy,
worst-class accuracy, train loss, rounds, wall time, seconds per training round and per evaluation,
peak resident memory), mean ± std over seeds per pattern and method, and a head-to-head count per seed:
at how many of the evaluations each method's test accuracy is above average-participating's (the
baseline FedAU is meant to beat) and its train loss below. Seconds per round is the median of
time_round_s over the rounds without an evaluation; seconds per evaluation is the median of
time_eval_s over the evaluated rounds (the full training set for the train loss plus the test set).

`--experiments PATTERN` prints only the mean table of one pattern in docs/EXPERIMENTS.md's form
(display names, train loss to 3 decimals), so that table is generated rather than copied by hand.

Usage: python3 bench/fedau_cifar10_table.py [RUNS_ROOT] [--experiments PATTERN]
"""
import json
import math
import statistics
import sys
from pathlib import Path

import run_info

PATTERNS = ["bernoulli", "markov", "cyclic"]
# `fedau_bounded`: FedAU rerun with round.max_update_norm = 1e4 where the plain run diverged (a client's
# first update exploded); its directory is made by hand, not by bench/fedau_cifar10.sh.
ORDER = ["fedau", "fedau_bounded", "fedau_k50", "avg_participating", "avg_all", "known_prob", "mifa", "fedvarp"]
DISPLAY = {
    "fedau": "FedAU (K = ∞)",
    "fedau_bounded": "FedAU (K = ∞), update norm ≤ 1e4",
    "fedau_k50": "FedAU (K = 50)",
    "avg_participating": "average-participating",
    "avg_all": "average-all",
    "known_prob": "known-probability",
    "mifa": "MIFA",
    "fedvarp": "FedVarp",
}
BASELINE = "avg_participating"
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
        # None when the model diverged (a non-finite train loss is not recorded): shown as nan.
        "loss": s["final_train_loss"] if s["final_train_loss"] is not None else float("nan"),
        "wall": float(machine["wall_s"]) if "wall_s" in machine else s["total_wall_s"],
        "s_round": statistics.median(plain) if plain else float("nan"),
        "s_eval": statistics.median(r["time_eval_s"] for r in evals) if evals else float("nan"),
        "rss": s.get("peak_rss_mib", float("nan")),
        # round -> (test accuracy, train loss), for the head-to-head counts
        "curve": {r["round"]: (r["test_accuracy"], r.get("train_loss")) for r in evals},
    }


def fmt(xs, pct, digits=4):
    if any(math.isnan(x) for x in xs):
        return "nan"  # a diverged run has no final train loss
    m = statistics.mean(xs)
    scale, d = (100, 2) if pct else (1, digits)
    if len(xs) == 1:
        return f"{scale * m:.{d}f}"
    return f"{scale * m:.{d}f} ± {scale * statistics.stdev(xs):.{d}f}"


def collect(root):
    runs = {}
    for pattern in PATTERNS:
        for name in ORDER:
            for run in sorted((root / pattern / name).glob("seed*"), key=lambda p: int(p.name[4:])):
                if (run / "summary.json").exists():
                    runs.setdefault((pattern, name), []).append((run.name, load(run)))
    return runs


def experiments_table(runs, pattern):
    print("| method | seeds | final test acc | test acc, last 5 | final worst-class acc | worst-class, last 5 "
          "| final train loss |")
    print("|---|---|---|---|---|---|---|")
    for name in ORDER:
        rs = runs.get((pattern, name))
        if not rs:
            continue
        col = lambda k: [r[k] for _, r in rs]  # noqa: E731
        print(
            f"| {DISPLAY[name]} | {len(rs)} | {fmt(col('acc'), True)} | {fmt(col('acc_l'), True)} "
            f"| {fmt(col('worst'), True)} | {fmt(col('worst_l'), True)} | {fmt(col('loss'), False, 3)} |"
        )


def head_to_head(runs):
    print(f"\nHead to head with {BASELINE} (same pattern and seed): evaluations at which the method's test "
          "accuracy is higher / its train loss lower, out of the evaluations both runs made:\n")
    print("| pattern | method | seed | test acc higher | train loss lower | evaluations |")
    print("|---|---|---|---|---|---|")
    for (pattern, name), rs in runs.items():
        if name == BASELINE:
            continue
        base = dict(runs.get((pattern, BASELINE), []))
        for seed, r in rs:
            if seed not in base:
                continue
            common = sorted(set(r["curve"]) & set(base[seed]["curve"]))
            acc = sum(r["curve"][k][0] > base[seed]["curve"][k][0] for k in common)
            with_loss = [k for k in common if r["curve"][k][1] is not None and base[seed]["curve"][k][1] is not None]
            loss = sum(r["curve"][k][1] < base[seed]["curve"][k][1] for k in with_loss)
            print(f"| {pattern} | {name} | {seed[4:]} | {acc} | {loss} | {len(common)} |")


def main(argv):
    args = list(argv)
    pattern = None
    if "--experiments" in args:
        i = args.index("--experiments")
        if i + 1 >= len(args) or args[i + 1] not in PATTERNS:
            sys.exit(f"--experiments needs one of {', '.join(PATTERNS)}")
        pattern = args[i + 1]
        del args[i : i + 2]
    root = Path(args[0] if args else "runs/fedau_cifar10")
    runs = collect(root)
    if pattern:
        experiments_table(runs, pattern)
        return
    print("Per run (accuracies in %; last 5 = mean over the last 5 evaluations):\n")
    print(
        "| pattern | method | seed | rounds | final test acc | test acc, last 5 | final worst-class acc "
        "| worst-class, last 5 | final train loss | wall time (s) | s / round | s / eval | peak RSS (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (pattern_, name), rs in runs.items():
        for seed, r in rs:
            print(
                f"| {pattern_} | {name} | {seed[4:]} | {r['rounds']} | {100 * r['acc']:.2f} | {100 * r['acc_l']:.2f} "
                f"| {100 * r['worst']:.2f} | {100 * r['worst_l']:.2f} | {r['loss']:.4f} | {r['wall']:.0f} "
                f"| {r['s_round']:.3f} | {r['s_eval']:.2f} | {r['rss']:.0f} |"
            )
    print("\nMean ± std over seeds (std only where there are 2 or more):\n")
    print(
        "| pattern | method | seeds | final test acc (%) | test acc, last 5 (%) | final worst-class acc (%) "
        "| worst-class, last 5 (%) | final train loss |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (pattern_, name), rs in runs.items():
        col = lambda k: [r[k] for _, r in rs]  # noqa: E731
        print(
            f"| {pattern_} | {name} | {len(rs)} | {fmt(col('acc'), True)} | {fmt(col('acc_l'), True)} "
            f"| {fmt(col('worst'), True)} | {fmt(col('worst_l'), True)} | {fmt(col('loss'), False)} |"
        )
    head_to_head(runs)


if __name__ == "__main__":
    main(sys.argv[1:])
