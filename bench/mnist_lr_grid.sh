#!/usr/bin/env bash
# Learning-rate grid for McMahan's MNIST 2NN FedAvg scenarios (algorithms.md §1.6):
# rounds until the test accuracy first reaches 97%, for each learning rate.
# Usage: bench/mnist_lr_grid.sh [iid|shards] [MNIST_DIR]   (results in bench/results/)
set -euo pipefail
cd "$(dirname "$0")/.."
split=${1:-iid}
# MNIST_DIR (optional) overrides the scenario's data.dir (absolute, or relative to the
# data root); by default MNIST is DATA_ROOT/mnist.
data=${2:-}
sets=()
if [ -n "$data" ]; then sets+=(--set data.dir="$data"); fi
# Data: the development copy unless FEDSIM_DATA names another data root (scenarios name their data
# relative to it: dir = "mnist", path = "libsvm/a9a.txt.gz").
export FEDSIM_DATA="${FEDSIM_DATA:-../shared/data}"
rounds=$([ "$split" = iid ] && echo 300 || echo 1500)
cargo build --release -q
mkdir -p bench/results
out=bench/results/mnist_2nn_${split}_lr_grid.csv
# Rows go to a partial file that replaces $out only when every run succeeded: a failed run (missing
# data, say) never truncates the committed results.
final=$out
out=$final.partial
trap 'rm -f "$out"' EXIT
echo "lr,rounds_to_97,best_accuracy,wall_s" > "$out"
for lr in 0.01 0.02 0.05 0.1 0.2; do
  dir=$(mktemp -d)
  ./target/release/fedsim sim "configs/mnist_2nn_${split}.toml" -q --force --out "$dir" \
    ${sets[@]+"${sets[@]}"} --set train.lr=$lr --set rounds=$rounds --set eval.train_loss=false
  python3 - "$dir/summary.json" "$lr" >> "$out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r = s["rounds_to_target"].get("0.97")
print(f'{sys.argv[2]},{r if r is not None else ""},{s["best_test_accuracy"]:.4f},{s["total_wall_s"]:.1f}')
PY
  rm -rf "$dir"
done
mv "$out" "$final"
cat "$final"
