#!/usr/bin/env bash
# FedAU on CIFAR-10 (algorithms.md §2.4-§2.8; issue #15): participation pattern x strategy x seed with
# FedAU's CIFAR-10 setting (configs/fedau/cifar10_cnn_<pattern>.toml: 250 clients, Dir(0.1) labels,
# class-tied participation probabilities, Q = 5, b = 16, cnn_cifar with Kaiming-normal init,
# random crop + flip, the CIFAR-10 JPEG archive).
#
# Usage: bench/fedau_cifar10.sh [runs|table|plots|all]...   (default: all)
# Environment: ROUNDS (2000; the paper runs 10000), SEEDS ("1 2"), PATTERNS ("bernoulli markov cyclic"),
# METHODS (all seven strategies of bench/fedau_strategies.sh), RUNS_ROOT (runs/fedau_cifar10),
# FEDSIM_BIN (a prebuilt binary; default: build target/release/fedsim; bench/sweep_lib.sh), THREADS
# (worker threads per run, `fedsim sim --threads`; default all cores; the results do not depend on it).
#   e.g. FEDSIM_BIN=/path/fedsim PATTERNS=bernoulli METHODS=fedau SEEDS=1 ROUNDS=1000 bench/fedau_cifar10.sh runs
# Runs go one at a time (each uses all cores) into RUNS_ROOT/<pattern>/<method>/seed<k>/; a run whose
# summary.json exists is skipped (an interrupted one is redone from scratch with --force). Each run
# directory also gets machine.txt (CPU model, load at start and end, wall time). Table:
# docs/fedau_cifar10.md (via a .partial file, so a failure never truncates it); plots:
# docs/img/fedau_cifar10_<pattern>_<metric>.svg (seed 1 of every method present, whatever METHODS says).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-2000}
seeds=${SEEDS:-"1 2"}
patterns=${PATTERNS:-"bernoulli markov cyclic"}
methods=" ${METHODS:-fedau fedau_k50 avg_participating avg_all known_prob mifa fedvarp} "
root=${RUNS_ROOT:-runs/fedau_cifar10}
source bench/sweep_lib.sh
source bench/fedau_strategies.sh

runs() {
  local pattern s name strat lr seed out
  for pattern in $patterns; do
    for s in "${strategies[@]}"; do
      IFS='|' read -r name strat lr <<< "$s"
      [[ "$methods" == *" $name "* ]] || continue
      for seed in $seeds; do
        out=$root/$pattern/$name/seed$seed
        [ -f "$out/summary.json" ] && continue
        mkdir -p "$out"
        timed_run "$out" "$bin" sim "configs/fedau/cifar10_cnn_${pattern}.toml" -q --force --out "$out" \
          --seed "$seed" --set rounds="$rounds" --set "strategy=$strat" --set train.lr="$lr" ${THREADS:+--threads "$THREADS"}
      done
    done
  done
}

table() {
  python3 bench/fedau_cifar10_table.py "$root" > docs/fedau_cifar10.md.partial
  mv docs/fedau_cifar10.md.partial docs/fedau_cifar10.md  # never a truncated table
  cat docs/fedau_cifar10.md
}

plots() {
  mkdir -p docs/img
  local pattern metric s name sel lab
  for pattern in $patterns; do
    for metric in test_accuracy worst_class_accuracy train_loss; do
      sel=(); lab=()
      for s in "${strategies[@]}"; do
        IFS='|' read -r name _ _ <<< "$s"
        [ -f "$root/$pattern/$name/seed1/summary.json" ] || continue
        sel+=("$root/$pattern/$name/seed1"); lab+=(--label "$name")
      done
      [ ${#sel[@]} -gt 0 ] || continue
      "$bin" plot "${sel[@]}" "${lab[@]}" --metric "$metric" \
        --title "FedAU, CIFAR-10 cnn_cifar, $pattern participation: $metric (seed 1)" \
        -o "docs/img/fedau_cifar10_${pattern}_${metric}.svg"
    done
  done
}

run_steps "$@"
