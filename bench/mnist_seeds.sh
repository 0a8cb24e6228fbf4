#!/usr/bin/env bash
# Rounds until McMahan's MNIST 2NN FedAvg scenarios first reach 97% test accuracy, over seeds, for
# each learning rate (algorithms.md §1.6). Runs stop at the target (eval.stop_at_targets).
# Usage: bench/mnist_seeds.sh [iid|shards] [MNIST_DIR]
#   env: LRS (default "0.2 0.1 0.05"), SEEDS (default "1 2 3 4 5"), ROUNDS (cap; 300 iid, 1500 shards)
# Output: bench/results/mnist_2nn_<split>_seeds.csv (lr,seed,rounds_to_97; empty = not reached)
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
lrs=${LRS:-0.2 0.1 0.05}
seeds=${SEEDS:-1 2 3 4 5}
rounds=${ROUNDS:-$([ "$split" = iid ] && echo 300 || echo 1500)}
cargo build --release -q
mkdir -p bench/results
out=bench/results/mnist_2nn_${split}_seeds.csv
# Rows go to a partial file that replaces $out only when every run succeeded: a failed run (missing
# data, say) never truncates the committed results.
final=$out
out=$final.partial
trap 'rm -f "$out"' EXIT
echo "lr,seed,rounds_to_97" > "$out"
for lr in $lrs; do
  for seed in $seeds; do
    dir=$(mktemp -d)
    ./target/release/fedsim sim "configs/mnist_2nn_${split}.toml" -q --force --out "$dir" \
      ${sets[@]+"${sets[@]}"} --set train.lr="$lr" --set seed="$seed" --set rounds="$rounds" \
      --set eval.train_loss=false --set eval.stop_at_targets=true
    python3 - "$dir/summary.json" "$lr" "$seed" >> "$out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r = s["rounds_to_target"].get("0.97")
print(f'{sys.argv[2]},{sys.argv[3]},{r if r is not None else ""}')
PY
    rm -rf "$dir"
  done
done
mv "$out" "$final"
out=$final
python3 - "$out" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for lr in dict.fromkeys(r["lr"] for r in rows):
    v = [int(r["rounds_to_97"]) for r in rows if r["lr"] == lr and r["rounds_to_97"]]
    n = sum(1 for r in rows if r["lr"] == lr)
    mean = f"{statistics.mean(v):.1f}" if v else "-"
    print(f"lr {lr}: {', '.join(map(str, v))} (reached in {len(v)}/{n}; mean {mean})")
PY
