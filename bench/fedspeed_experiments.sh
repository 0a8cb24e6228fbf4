#!/usr/bin/env bash
# FedSpeed experiment (../shared/algorithms.md §3.7; write-up in docs/drafts/fedspeed.md).
#
# MNIST 2NN, 100 clients, Bernoulli(0.1) participation, Dir(0.1) per-client label prior, E = 5, B = 50,
# η0 = 0.1 with decay 0.998, weight decay 1e-3 (all methods), FedSpeed λ' = 0.1, ρ = 0.1, clip 10.
# Methods: FedSpeed, FedDyn (FedSpeed with ρ = 0), FedAvg, FedProx (μ = 0.01), SCAFFOLD (option II).
#
# Usage: bench/fedspeed_experiments.sh [runs|table|plots|all]...   (default: all)
#   runs   simulate every (method, seed) in the order below, skipping runs whose summary.json exists and runs
#          another worker holds (a lock directory), so several workers can share the list:
#            bench/fedspeed_experiments.sh runs &  bench/fedspeed_experiments.sh runs &
#   table  bench/results/fedspeed.csv and bench/results/fedspeed.md (rounds to 97 %, final/best accuracy)
#   plots  docs/img/fedspeed/*.svg with `fedsim plot`
# Environment: FEDSIM_BIN (a prebuilt fedsim binary; default: a fresh release build), THREADS (per run, default 1), ROUNDS (300),
#   EVAL_EVERY (2), SEEDS ("1 2 3"), ORDER (job list "method:seed ...", default: every method with seed 1,
#   then FedSpeed and FedAvg with the other seeds, then the other methods with the other seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/sweep_lib.sh
threads=${THREADS:-1}
rounds=${ROUNDS:-300}
every=${EVAL_EVERY:-2}
seeds=${SEEDS:-"1 2 3"}
cfg=configs/fedspeed/mnist_2nn_dir01_fedspeed.toml
runs=runs/fedspeed
methods="fedspeed fedavg feddyn fedprox scaffold"

strategy_of() {
  case $1 in
    fedspeed) echo 'strategy={kind="fedspeed", rho=0.1, alpha=1.0, lambda=0.1, clip=10.0, server_dual_mean="all_clients"}' ;;
    feddyn) echo 'strategy={kind="feddyn", lambda=0.1, clip=10.0, server_dual_mean="all_clients"}' ;;
    fedavg) echo 'strategy={kind="fedavg", weighting="uniform"}' ;;
    fedprox) echo 'strategy={kind="fedprox", mu=0.01, weighting="uniform"}' ;;
    scaffold) echo 'strategy={kind="scaffold", option=2}' ;;
    *) echo "unknown method $1" >&2; exit 2 ;;
  esac
}

default_order() {
  local first rest
  first=$(echo "$seeds" | awk '{print $1}')
  rest=$(echo "$seeds" | cut -s -d' ' -f2-)
  for m in $methods; do echo "$m:$first"; done
  for s in $rest; do for m in fedspeed fedavg; do echo "$m:$s"; done; done
  for s in $rest; do for m in feddyn fedprox scaffold; do echo "$m:$s"; done; done
}

run_one() {
  local m=$1 s=$2 out=$runs/$1/seed$2
  [ -f "$out/summary.json" ] && return 0
  mkdir -p "$runs/$m"
  mkdir "$out.lock" 2>/dev/null || return 0 # another worker has it
  rm -rf "$out"
  echo "$(date -u +%T) start $out"
  if "$bin" sim "$cfg" -q --threads "$threads" --force --out "$out" --seed "$s" --set rounds="$rounds" \
    --set eval.every="$every" --set "$(strategy_of "$m")"; then
    echo "$(date -u +%T) done $out"
  else
    echo "$(date -u +%T) FAILED $out" >&2
  fi
  rmdir "$out.lock"
}

runs_all() {
  local order=${ORDER:-$(default_order)}
  for job in $order; do run_one "${job%%:*}" "${job##*:}"; done
}

table() {
  mkdir -p bench/results
  python3 - "$runs" "$methods" "$rounds" <<'EOF'
import json, os, statistics, sys
root, methods, cap = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
names = {"fedspeed": "FedSpeed", "fedavg": "FedAvg", "feddyn": "FedDyn (rho=0)", "fedprox": "FedProx (mu=0.01)",
         "scaffold": "SCAFFOLD (option II)"}
def load(run):
    acc = []
    for line in open(os.path.join(run, "metrics.jsonl")):
        r = json.loads(line)
        if r.get("test_accuracy") is not None and r["round"] <= cap:  # runs longer than ROUNDS are cut
            acc.append((r["round"], r["test_accuracy"]))
    return acc
def mean_sd(xs, fmt):
    if not xs: return "—"
    if len(xs) == 1: return fmt(xs[0])
    return f"{fmt(statistics.mean(xs))} ± {fmt(statistics.stdev(xs))}"
csv = ["method,seed,rounds_run,rounds_to_97,final_test_accuracy,best_test_accuracy,total_wall_s"]
md = [f"| method | seeds | rounds to 97 % (per seed) | mean rounds to 97 % | test acc. at round {cap} (%) | best test acc. ≤ round {cap} (%) | wall s/run (loaded machine) |",
      "|---|---|---|---|---|---|---|"]
base = None
rows = {}
for m in methods:
    d = os.path.join(root, m)
    if not os.path.isdir(d): continue
    per = []
    for s in sorted(os.listdir(d)):
        run = os.path.join(d, s)
        if not os.path.exists(os.path.join(run, "summary.json")): continue
        acc = load(run)
        summ = json.load(open(os.path.join(run, "summary.json")))
        hit = next((r for r, a in acc if a >= 0.97), None)
        per.append((s, acc[-1][0], hit, acc[-1][1], max(a for _, a in acc), summ["total_wall_s"] * acc[-1][0] / summ["rounds"]))
        csv.append(f"{m},{s[4:]},{acc[-1][0]},{hit if hit else ''},{acc[-1][1]},{max(a for _, a in acc)},{summ['total_wall_s']:.1f}")
    if not per: continue
    hits = [p[2] for p in per]
    reached = [h for h in hits if h is not None]
    mean_hit = statistics.mean(reached) if len(reached) == len(hits) else None
    rows[m] = mean_hit
    hit_txt = ", ".join(str(h) if h else f">{p[1]}" for h, p in zip(hits, per))
    md.append(f"| {names[m]} | {len(per)} | {hit_txt} | {f'{mean_hit:.1f}' if mean_hit else '— (not all seeds reached 97 %)'} | "
              f"{mean_sd([100*p[3] for p in per], lambda v: f'{v:.2f}')} | {mean_sd([100*p[4] for p in per], lambda v: f'{v:.2f}')} | "
              f"{statistics.mean(p[5] for p in per):.0f} |")
if rows.get("fedspeed") and rows.get("fedavg"):
    md.append("")
    md.append(f"FedSpeed / FedAvg mean rounds to 97 %: {rows['fedspeed']:.1f} / {rows['fedavg']:.1f} = {rows['fedspeed']/rows['fedavg']:.3f} (target ≤ 0.8)")
# Replace the committed tables only once both are complete.
for path, lines in (("bench/results/fedspeed.csv", csv), ("bench/results/fedspeed.md", md)):
    open(path + ".partial", "w").write("\n".join(lines) + "\n")
for path in ("bench/results/fedspeed.csv", "bench/results/fedspeed.md"):
    os.replace(path + ".partial", path)
print("\n".join(md))
EOF
}

# cut_run SRC DST FIRST LAST: copy of SRC's metrics with rounds FIRST..LAST (runs longer than ROUNDS are cut,
# and a zoomed plot starts later so the y range shows the last percent of accuracy).
cut_run() {
  mkdir -p "$2"
  python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" "$4" <<'PY'
import json, sys
src, dst, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(src) as f, open(dst, "w") as o:
    for line in f:
        if first <= json.loads(line)["round"] <= last:
            o.write(line)
PY
}

plots() {
  mkdir -p docs/img/fedspeed
  rm -rf "$runs/_plot"
  local s m sel=() zoom=() lab=()
  for s in $seeds; do
    sel=(); zoom=(); lab=()
    for m in $methods; do
      [ -f "$runs/$m/seed$s/summary.json" ] || continue
      cut_run "$runs/$m/seed$s" "$runs/_plot/seed$s/$m" 1 "$rounds"
      cut_run "$runs/$m/seed$s" "$runs/_plot/seed$s/zoom_$m" 30 "$rounds"
      sel+=("$runs/_plot/seed$s/$m") && zoom+=("$runs/_plot/seed$s/zoom_$m") && lab+=(--label "$m")
    done
    [ ${#sel[@]} -gt 0 ] || continue
    "$bin" plot "${sel[@]}" "${lab[@]}" --metric test_accuracy --x round \
      --title "MNIST 2NN, Dir(0.1), 10% active, E=5 B=50: test accuracy (seed $s)" \
      -o "docs/img/fedspeed/test_accuracy_seed$s.svg"
    "$bin" plot "${zoom[@]}" "${lab[@]}" --metric test_accuracy --x round \
      --title "test accuracy from round 30 (seed $s)" -o "docs/img/fedspeed/test_accuracy_zoom_seed$s.svg"
    "$bin" plot "${sel[@]}" "${lab[@]}" --metric test_loss --x round --log-y \
      --title "MNIST 2NN, Dir(0.1), 10% active, E=5 B=50: test loss (seed $s)" \
      -o "docs/img/fedspeed/test_loss_seed$s.svg"
    echo "docs/img/fedspeed/test_accuracy_seed$s.svg"
  done
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all)
for st in "${steps[@]}"; do
  case $st in
    runs) runs_all ;;
    table) table ;;
    plots) plots ;;
    all) runs_all; table; plots ;;
    *) echo "unknown step $st" >&2; exit 2 ;;
  esac
done
