#!/usr/bin/env bash
# FedAU on CIFAR-10 (algorithms.md §2.4-§2.8; issue #15): participation pattern x strategy x seed with
# FedAU's CIFAR-10 setting (configs/fedau/cifar10_cnn_<pattern>.toml: 250 clients, Dir(0.1) labels,
# class-tied participation probabilities, Q = 5, b = 16, cnn_cifar with Kaiming-normal init,
# random crop + flip, the CIFAR-10 JPEG archive).
# Usage: bench/fedau_cifar10.sh [ROUNDS] [SEED...]
#   or set ROUNDS, SEEDS (space-separated seed numbers, e.g. SEEDS="1 2"), PATTERNS, METHODS in the
#   environment; arguments win over the environment. Defaults: ROUNDS=10000 (the paper's), SEEDS="1 2 3 4 5",
#   PATTERNS="bernoulli markov cyclic", METHODS = all seven strategies of bench/fedau_strategies.sh.
#   e.g. FEDSIM_BIN=/path/fedsim PATTERNS=bernoulli METHODS=fedau SEEDS=1 ROUNDS=1000 bench/fedau_cifar10.sh
# Runs go one at a time (each uses all cores) into runs/fedau_cifar10/<pattern>/<method>/seed<k>/; a run
# whose summary.json exists is skipped (an interrupted one is redone from scratch with --force). Each
# run directory also gets machine.txt (CPU model, load at start and end, wall time). RUNS_ROOT moves the
# run directories elsewhere; FEDSIM_BIN names a prebuilt binary (bench/sweep_lib.sh). The table goes to
# docs/fedau_cifar10.md (written to a .partial file, then moved), plots to docs/img/.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-${ROUNDS:-10000}}
if [ $# -gt 1 ]; then seeds="${*:2}"; else seeds=${SEEDS:-1 2 3 4 5}; fi
source bench/sweep_lib.sh
source bench/fedau_strategies.sh
patterns=${PATTERNS:-bernoulli markov cyclic}
methods=" ${METHODS:-fedau fedau_k50 avg_participating avg_all known_prob mifa fedvarp} "
root=${RUNS_ROOT:-runs/fedau_cifar10}
for pattern in $patterns; do
  for s in "${strategies[@]}"; do
    IFS='|' read -r name strat lr <<< "$s"
    [[ "$methods" == *" $name "* ]] || continue
    for seed in $seeds; do
      out=$root/$pattern/$name/seed$seed
      [ -f "$out/summary.json" ] && continue
      mkdir -p "$out"
      timed_run "$out" "$bin" sim "configs/fedau/cifar10_cnn_${pattern}.toml" -q --force --out "$out" \
        --seed "$seed" --set rounds="$rounds" --set "strategy=$strat" --set train.lr="$lr"
    done
  done
done
python3 bench/fedau_cifar10_table.py "$root" > docs/fedau_cifar10.md.partial
mv docs/fedau_cifar10.md.partial docs/fedau_cifar10.md  # never a truncated table
mkdir -p docs/img
for pattern in $patterns; do
  for metric in test_accuracy worst_class_accuracy train_loss; do
    runs=(); labels=()
    for s in "${strategies[@]}"; do
      IFS='|' read -r name _ _ <<< "$s"
      [ -f "$root/$pattern/$name/seed1/summary.json" ] || continue
      runs+=("$root/$pattern/$name/seed1"); labels+=(--label "$name")
    done
    [ ${#runs[@]} -gt 0 ] || continue
    $bin plot "${runs[@]}" "${labels[@]}" --metric "$metric" \
      --title "FedAU, CIFAR-10 cnn_cifar, $pattern participation: $metric (seed 1)" \
      -o "docs/img/fedau_cifar10_${pattern}_${metric}.svg"
  done
done
cat docs/fedau_cifar10.md
