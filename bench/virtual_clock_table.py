"""Table of a virtual-clock comparison (bench/virtual_clock_mnist.sh, bench/virtual_clock_cifar10.sh):
per variant, mean ± std over seeds of the rounds (server updates) and virtual seconds to the target
accuracy, virtual seconds per round, client updates to the target and final accuracy; seeds that never
reached the target are left out of the means, and the cell says how many did.

Usage: python3 bench/virtual_clock_table.py RUNS_DIR TARGET VARIANT...
"""
import json
import statistics
import sys
from pathlib import Path


def cell(xs, d=1):
    n = len(xs)
    xs = [x for x in xs if x is not None]
    if not xs:
        return "not reached"
    m = statistics.mean(xs)
    out = f"{m:.{d}f}" if len(xs) == 1 else f"{m:.{d}f} ± {statistics.stdev(xs):.{d}f}"
    return out if len(xs) == n else f"{out} ({len(xs)} of {n} seeds)"


def main():
    root, target, variants = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    pct = f"{float(target) * 100:g}%"
    print(f"| variant | seeds | rounds (server updates) to {pct} | virtual s to {pct} "
          f"| mean virtual s per round | client updates to {pct} | final test acc |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        dirs = sorted((root / v).glob("seed*"))
        sums = [json.loads((d / "summary.json").read_text()) for d in dirs]
        reached = [s["rounds_to_target"].get(target) for s in sums]
        t = [s.get("virtual_time_to_target", {}).get(target) for s in sums]
        per = [s["virtual_time_s"] / s["rounds"] for s in sums]
        acc = [100 * s["final_test_accuracy"] for s in sums]
        ups = []
        for d, r in zip(dirs, reached):
            rows = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
            ups.append(None if r is None else sum(x["participants"] for x in rows if x["round"] <= r))
        print(f"| {v} | {len(sums)} | {cell(reached)} | {cell(t)} | {cell(per, 2)} | {cell(ups, 0)} "
              f"| {cell(acc, 2)} |")


if __name__ == "__main__":
    main()
