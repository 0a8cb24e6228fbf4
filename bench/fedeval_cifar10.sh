#!/usr/bin/env bash
# Federated evaluation of the FedAU comparison on CIFAR-10 (issue #16): configs/fedau/
# cifar10_cnn_bernoulli.toml (FedAU's CIFAR-10 CNN, 250 clients, Dir(0.1) labels, class-tied Bernoulli
# participation), every client holding out 20% of its samples, all clients evaluating every 100 rounds.
# round.max_update_norm = 1e4 drops a client whose local training exploded (normal updates have norms
# up to a few hundred; without the bound one client of seed 2 sends an update of norm 2.7e6 in round 1
# and every later local update is NaN).
# Usage: bench/fedeval_cifar10.sh [SEEDS] [ROUNDS]   (METHODS="fedau avg_participating known_prob")
# Results: runs/fedeval/cifar10/<method>/seed<k>/, tables in docs/fedeval_cifar10.md.
# The data is the shared JPEG re-encoding of CIFAR-10 (../shared/data/README.md): figures are not
# comparable digit for digit with runs on the original PNG/binary images.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1}
rounds=${2:-1000}
source bench/sweep_lib.sh
source bench/fedau_strategies.sh
methods=" ${METHODS:-fedau avg_participating} "
for s in "${strategies[@]}"; do
  IFS='|' read -r name strat lr <<< "$s"
  [[ "$methods" == *" $name "* ]] || continue
  for seed in $(seq 1 "$seeds"); do
    out=runs/fedeval/cifar10/$name/seed$seed
    [ -f "$out/summary.json" ] && continue
    $bin sim configs/fedau/cifar10_cnn_bernoulli.toml -q --force --out "$out" --seed "$seed" \
      --set rounds="$rounds" --set "strategy=$strat" --set train.lr="$lr" --set eval.every=100 \
      --set eval.train_loss=false --set partition.local_test_fraction=0.2 --set round.max_update_norm=1e4 \
      --set 'eval.federated={every=100, clients="all"}'
    echo "done $name seed$seed"
  done
done
{ python3 bench/fedeval_table.py cifar10; echo; python3 bench/fedeval_rare.py cifar10; } \
  > docs/fedeval_cifar10.md.partial
mv docs/fedeval_cifar10.md.partial docs/fedeval_cifar10.md
mkdir -p docs/img
runs=(); labels=()
for name in $methods; do
  runs+=("runs/fedeval/cifar10/$name/seed1"); labels+=(--label "$name")
done
$bin plot "${runs[@]}" "${labels[@]}" --per-client \
  --title "CIFAR-10 cnn_cifar, class-tied Bernoulli: per-client accuracy after $rounds rounds (seed 1)" \
  -o docs/img/fedeval_cifar10_cdf.svg
$bin plot "${runs[@]}" "${labels[@]}" --metric fed_p10_accuracy \
  --title "CIFAR-10 cnn_cifar, class-tied Bernoulli: 10th-percentile client accuracy (seed 1)" \
  -o docs/img/fedeval_cifar10_p10.svg
cat docs/fedeval_cifar10.md
