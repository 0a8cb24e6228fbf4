#!/usr/bin/env python3
"""Summarises EF21 runs (bench/ef21_experiments.sh): rounds and bits per client to ||grad f||^2 <= TOL.

  ef21_table.py table RUNS_DIR TOL [--csv FILE]   markdown table on stdout (one row per run)
  ef21_table.py best RUNS_DIR METHOD TOL          multiplier of METHOD (run names METHOD_m<mult>) with the
                                                  fewest paper bits/n to TOL (ties: fewer rounds); when no
                                                  run reaches TOL, the one with the smallest ||grad f||^2

Columns: rounds to tolerance (grad_norm_sq is evaluated every eval.every rounds, so this is the first
evaluated round at or below TOL); "bits/n (paper)" = bits_paper_cum, 32 bits per kept value, indices and the
dense g_i^0 not counted; "bits/n (exact)" = 8 x cumulative bytes_up / n, every encoded byte including
headers, tensor names and the dense initial upload.
"""
import json
import os
import re
import sys


def load(run):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    n = 1
    scen = os.path.join(run, "scenario.toml")
    if os.path.exists(scen):
        m = re.search(r"^clients = (\d+)", open(scen).read(), re.M)
        if m:
            n = int(m.group(1))
    rows = []
    up = 0
    gamma = None
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            up += r.get("bytes_up", 0)
            if gamma is None and "ef21_gamma" in r:
                gamma = r["ef21_gamma"]
            g = r.get("grad_norm_sq")
            if g is not None:
                rows.append((r["round"], g, r.get("bits_paper_cum", 0.0), up))
    return {"n": n, "rows": rows, "gamma": gamma}


def reach(data, tol):
    for rnd, g, bits, up in data["rows"]:
        if g <= tol:
            return rnd, bits, 8.0 * up / data["n"]
    return None


def runs_of(root):
    out = []
    for name in sorted(os.listdir(root)):
        m = re.fullmatch(r"(.+)_m(\d+(?:\.\d+)?)", name)
        if not m:
            continue
        d = load(os.path.join(root, name))
        if d and d["rows"]:
            out.append((m.group(1), float(m.group(2)), name, d))
    out.sort(key=lambda t: (t[0], t[1]))
    return out


def fmt_mult(m):
    return str(int(m)) if m == int(m) else str(m)


def best(root, method, tol):
    cands = [(reach(d, tol), m, d) for meth, m, _, d in runs_of(root) if meth == method]
    hit = [(r[1], r[0], m) for r, m, _ in cands if r]
    if hit:
        return fmt_mult(min(hit)[2])
    miss = [(min(g for _, g, _, _ in d["rows"]), m) for _, m, d in cands]
    return fmt_mult(min(miss)[1]) if miss else "1"


def table(root, tol, csv_path=None):
    rows = runs_of(root)
    best_of = {}
    for meth in sorted({r[0] for r in rows}):
        hit = [(reach(d, tol)[1], reach(d, tol)[0], m) for me, m, _, d in rows if me == meth and reach(d, tol)]
        if hit:
            best_of[meth] = min(hit)[2]
    head = ["method", "multiplier", "gamma", "rounds run", f"rounds to {tol:g}", "bits/n (paper)",
            "bits/n (exact)", "final ||grad f||^2", "min ||grad f||^2"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    csv = [",".join(h.replace(",", ";") for h in head)]
    for meth, m, name, d in rows:
        r = reach(d, tol)
        last = d["rows"][-1]
        mn = min(g for _, g, _, _ in d["rows"])
        star = " **(best)**" if best_of.get(meth) == m else ""
        cells = [meth + star, fmt_mult(m), f"{d['gamma']:.4g}" if d["gamma"] else "",
                 str(last[0]), str(r[0]) if r else "—", f"{r[1]:.4g}" if r else "—",
                 f"{r[2]:.4g}" if r else "—", f"{last[1]:.2e}", f"{mn:.2e}"]
        lines.append("| " + " | ".join(cells) + " |")
        csv.append(",".join([meth, fmt_mult(m), str(d["gamma"] or ""), str(last[0]),
                             str(r[0]) if r else "", str(r[1]) if r else "", str(r[2]) if r else "",
                             repr(last[1]), repr(mn)]))
    print("\n".join(lines))
    if csv_path:
        with open(csv_path, "w") as f:
            f.write("\n".join(csv) + "\n")


def main():
    a = sys.argv[1:]
    if a and a[0] == "best" and len(a) == 4:
        print(best(a[1], a[2], float(a[3])))
    elif a and a[0] == "table" and len(a) in (3, 5):
        table(a[1], float(a[2]), a[4] if len(a) == 5 and a[3] == "--csv" else None)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
