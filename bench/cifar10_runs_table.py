"""Summarises runs laid out as ROOT/<group>/seed<k>/ (bench/fedspeed_cifar10.sh, bench/frl_cifar10.sh)
into Markdown: one row per run, then mean ± std over seeds per group.

Usage: python3 bench/cifar10_runs_table.py ROOT GROUP... [--targets 0.4,0.5] [--rounds N]
Columns: final test accuracy, mean over the last 5 evaluations, best, worst-class accuracy, rounds to
each target test accuracy (the first evaluation at or above it; '>R' when not reached), the run's wall
time and the median seconds of a round without an evaluation. GROUPs are listed in the order given;
missing ones are skipped. With --rounds, evaluations after round N are ignored (runs made longer)."""
import json
import statistics
import sys
from pathlib import Path

import run_info

args = sys.argv[1:]
targets, cap = [], None
if "--targets" in args:
    i = args.index("--targets")
    targets = [float(t) for t in args[i + 1].split(",") if t]
    del args[i : i + 2]
if "--rounds" in args:
    i = args.index("--rounds")
    cap = int(args[i + 1])
    del args[i : i + 2]
root, groups = Path(args[0]), args[1:]
LAST = 5


def load(run):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    if cap is not None:
        rows = [r for r in rows if r["round"] <= cap]
    evals = [r for r in rows if r.get("test_accuracy") is not None]
    plain = [r["time_round_s"] for r in rows if r.get("test_accuracy") is None]
    machine = run_info.machine(run)
    last_round = rows[-1]["round"] if rows else 0
    hit = lambda t: next((r["round"] for r in evals if r["test_accuracy"] >= t), None)  # noqa: E731
    tail = evals[-LAST:]
    return {
        "rounds": last_round,
        "acc": evals[-1]["test_accuracy"],
        "acc_l": statistics.mean(r["test_accuracy"] for r in tail),
        "best": max(r["test_accuracy"] for r in evals),
        "worst": evals[-1].get("worst_class_accuracy") or 0.0,
        "hits": [hit(t) for t in targets],
        "wall": float(machine["wall_s"]) if "wall_s" in machine else rows[-1]["wall_s"],
        "s_round": statistics.median(plain) if plain else float("nan"),
    }


def fmt(xs):
    m = statistics.mean(xs)
    if len(xs) == 1:
        return f"{100 * m:.2f}"
    return f"{100 * m:.2f} ± {100 * statistics.stdev(xs):.2f}"


runs = {}
for g in groups:
    seeds = sorted((root / g).glob("seed*"), key=lambda p: int(p.name[4:]))
    done = [(s.name[4:], load(s)) for s in seeds if (s / "summary.json").exists()]
    if done:
        runs[g] = done

tcols = "".join(f" rounds to {100 * t:g}% |" for t in targets)
tsep = "---|" * len(targets)
print("Per run (accuracies in %; last 5 = mean over the last 5 evaluations):\n")
print(f"| run | seed | rounds | final test acc | test acc, last 5 | best test acc | final worst-class acc |{tcols} wall (s) | s / round |")
print(f"|---|---|---|---|---|---|---|{tsep}---|---|")
for g, rs in runs.items():
    for seed, r in rs:
        hits = "".join(f" {h if h is not None else '>' + str(r['rounds'])} |" for h in r["hits"])
        print(
            f"| {g} | {seed} | {r['rounds']} | {100 * r['acc']:.2f} | {100 * r['acc_l']:.2f} | {100 * r['best']:.2f} "
            f"| {100 * r['worst']:.2f} |{hits} {r['wall']:.0f} | {r['s_round']:.2f} |"
        )
print("\nMean ± std over seeds (std only where there are 2 or more):\n")
print(f"| run | seeds | final test acc (%) | test acc, last 5 (%) | best test acc (%) |{tcols.replace('rounds to', 'mean rounds to')}")
print(f"|---|---|---|---|---|{tsep}")
for g, rs in runs.items():
    col = lambda k: [r[k] for _, r in rs]  # noqa: E731
    hits = ""
    for i in range(len(targets)):
        h = [r["hits"][i] for _, r in rs]
        hits += f" {statistics.mean(h):.0f} |" if all(x is not None for x in h) else f" not reached by {sum(x is None for x in h)} of {len(h)} |"
    print(f"| {g} | {len(rs)} | {fmt(col('acc'))} | {fmt(col('acc_l'))} | {fmt(col('best'))} |{hits}")
