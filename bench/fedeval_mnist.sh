#!/usr/bin/env bash
# Federated evaluation of the FedAU comparison (issue #16): FedAU vs FedAvg over participants vs the
# known-probability oracle on MNIST with class-tied Bernoulli participation (configs/fedau/
# mnist_<model>_bernoulli.toml), every client holding out 20% of its samples as its local test set,
# all 250 clients evaluating the global model every 50 rounds. Reports the central test accuracy next
# to the federated per-client distribution (weighted mean, 10th percentile, minimum).
# Usage: bench/fedeval_mnist.sh [logreg|2nn] [SEEDS] [ROUNDS]
# Results: runs/fedeval/<model>/<method>/seed<k>/, tables in docs/fedeval_<model>.md (final figures;
# accuracy of the least and most participating quarter of clients), CDF plot in
# docs/img/fedeval_<model>_cdf.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-logreg}
seeds=${2:-3}
rounds=${3:-3000}
source bench/sweep_lib.sh
source bench/fedau_strategies.sh
methods=" ${METHODS:-fedau avg_participating known_prob} "
for s in "${strategies[@]}"; do
  IFS='|' read -r name strat lr <<< "$s"
  [[ "$methods" == *" $name "* ]] || continue
  for seed in $(seq 1 "$seeds"); do
    out=runs/fedeval/$model/$name/seed$seed
    [ -f "$out/summary.json" ] && continue
    $bin sim "configs/fedau/mnist_${model}_bernoulli.toml" -q --force --out "$out" --seed "$seed" \
      --set rounds="$rounds" --set "strategy=$strat" --set train.lr="$lr" \
      --set partition.local_test_fraction=0.2 --set 'eval.federated={every=50, clients="all"}'
    echo "done $name seed$seed"
  done
done
{ python3 bench/fedeval_table.py "$model"; echo; python3 bench/fedeval_rare.py "$model"; } \
  > "docs/fedeval_${model}.md.partial"
mv "docs/fedeval_${model}.md.partial" "docs/fedeval_${model}.md"
mkdir -p docs/img
runs=(); labels=()
for name in $methods; do
  runs+=("runs/fedeval/$model/$name/seed1"); labels+=(--label "$name")
done
$bin plot "${runs[@]}" "${labels[@]}" --per-client \
  --title "MNIST $model, class-tied Bernoulli: per-client accuracy after $rounds rounds (seed 1)" \
  -o "docs/img/fedeval_${model}_cdf.svg"
$bin plot "${runs[@]}" "${labels[@]}" --metric fed_p10_accuracy \
  --title "MNIST $model, class-tied Bernoulli: 10th-percentile client accuracy (seed 1)" \
  -o "docs/img/fedeval_${model}_p10.svg"
cat "docs/fedeval_${model}.md"
