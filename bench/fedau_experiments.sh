#!/usr/bin/env bash
# FedAU experiments (algorithms.md §2.10): every participation pattern x strategy x seed on MNIST.
# Usage: bench/fedau_experiments.sh [logreg|2nn] [SEEDS] [ROUNDS] [MNIST_DIR]
# Results: runs/fedau/<model>/<pattern>/<strategy>/seed<k>/, table in docs/fedau_<model>.md, plots in docs/img/.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-logreg}
seeds=${2:-3}
rounds=${3:-3000}
# MNIST_DIR (optional) overrides the scenarios' data.dir (absolute, or relative to the
# data root); by default MNIST is DATA_ROOT/mnist.
data=${4:-}
sets=()
if [ -n "$data" ]; then sets+=(--set data.dir="$data"); fi
source bench/sweep_lib.sh
source bench/fedau_strategies.sh
# PATTERNS / METHODS (space-separated) restrict the sweep, e.g. METHODS="fedau avg_participating".
patterns=${PATTERNS:-bernoulli markov cyclic}
methods=" ${METHODS:-fedau fedau_k50 avg_participating avg_all known_prob mifa fedvarp} "
for pattern in $patterns; do
  for s in "${strategies[@]}"; do
    IFS='|' read -r name strat lr <<< "$s"
    [[ "$methods" == *" $name "* ]] || continue
    for seed in $(seq 1 "$seeds"); do
      out=runs/fedau/$model/$pattern/$name/seed$seed
      [ -f "$out/summary.json" ] && continue
      $bin sim "configs/fedau/mnist_${model}_${pattern}.toml" -q --force --out "$out" --seed "$seed" \
        ${sets[@]+"${sets[@]}"} --set rounds="$rounds" --set "strategy=$strat" --set train.lr="$lr"
      echo "done $pattern $name seed$seed"
    done
  done
done
python3 bench/fedau_table.py "$model" > "docs/fedau_${model}.md.partial"
mv "docs/fedau_${model}.md.partial" "docs/fedau_${model}.md"  # never a truncated table
mkdir -p docs/img
for pattern in $patterns; do
  for metric in test_accuracy worst_class_accuracy train_loss; do
    runs=(); labels=()
    for s in "${strategies[@]}"; do
      IFS='|' read -r name _ _ <<< "$s"
      [ -f "runs/fedau/$model/$pattern/$name/seed1/summary.json" ] || continue
      runs+=("runs/fedau/$model/$pattern/$name/seed1"); labels+=(--label "$name")
    done
    $bin plot "${runs[@]}" "${labels[@]}" --metric "$metric" \
      --title "FedAU, MNIST $model, $pattern participation: $metric (seed 1)" \
      -o "docs/img/fedau_${model}_${pattern}_${metric}.svg"
  done
done
cat "docs/fedau_${model}.md"
