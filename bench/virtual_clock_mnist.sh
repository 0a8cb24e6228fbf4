#!/usr/bin/env bash
# Time to 97% in virtual seconds on MNIST 2NN (configs/mnist_2nn_iid.toml: 100 clients, 10 per round,
# E = 1, B = 10, lr 0.2) under heavy-tailed system heterogeneity ([system]: speed lognormal sigma = 1
# around 1000 samples/s, download and upload bandwidth lognormal sigma = 1 around 1 MB/s, 50 ms
# latency), synchronous FedAvg three ways: waiting for all 10 selected clients, a 3 s deadline, and
# over-selection (13 selected, the round closes at the first 10 to finish: round.quorum = 10); and
# asynchronously: FedBuff (20, 50 or 100 clients training at all times, a server update every 10 finished, weights
# 1/sqrt(1+staleness)) and FedAsync (10 training at all times, every update mixed in with
# alpha = 0.6/sqrt(1+staleness)); for both, the participation model is "full" (any idle client may be
# started) and a "round" is one server update.
# Usage: bench/virtual_clock_mnist.sh [SEEDS] [MAX_ROUNDS]
# Results: runs/virtual_clock/<variant>/seed<k>/, table in docs/virtual_clock_mnist.md, plot in
# docs/img/virtual_clock_mnist.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-3}
rounds=${2:-400}
source bench/sweep_lib.sh
system='system={speed={dist="lognormal", sigma=1}, samples_per_s=1000, download_bps={dist="lognormal", median=1e6, sigma=1}, upload_bps={dist="lognormal", median=1e6, sigma=1}, latency_s=0.05'
variants=(
  "all|${system}}|participation.fraction=0.1|round.quorum=0|rounds=$rounds|eval.every=1"
  "deadline_3s|${system}, deadline_s=3}|participation.fraction=0.1|round.quorum=0|rounds=$rounds|eval.every=1"
  "overselect_13_keep_10|${system}}|participation.fraction=0.13|round.quorum=10|rounds=$rounds|eval.every=1"
  "fedbuff_c20_k10|${system}}|participation={kind=\"full\"}|strategy={kind=\"fedbuff\", concurrency=20, buffer_size=10}|rounds=$rounds|eval.every=1"
  "fedbuff_c50_k10|${system}}|participation={kind=\"full\"}|strategy={kind=\"fedbuff\", concurrency=50, buffer_size=10}|rounds=$rounds|eval.every=1"
  "fedbuff_c100_k10|${system}}|participation={kind=\"full\"}|strategy={kind=\"fedbuff\", concurrency=100, buffer_size=10}|rounds=$rounds|eval.every=1"
  "fedasync_c10|${system}}|participation={kind=\"full\"}|strategy={kind=\"fedasync\", concurrency=10, alpha=0.6}|rounds=$((rounds * 10))|eval.every=10"
)
for v in "${variants[@]}"; do
  IFS='|' read -r name sys part extra len every <<< "$v"
  for seed in $(seq 1 "$seeds"); do
    out=runs/virtual_clock/$name/seed$seed
    [ -f "$out/summary.json" ] && continue
    $bin sim configs/mnist_2nn_iid.toml -q --force --out "$out" --seed "$seed" \
      --set "$len" --set "$every" --set "$sys" --set "$part" --set "$extra" --set eval.stop_at_targets=true
    echo "done $name seed$seed"
  done
done
python3 bench/virtual_clock_table.py runs/virtual_clock 0.97 all deadline_3s overselect_13_keep_10 fedbuff_c20_k10 fedbuff_c50_k10 fedbuff_c100_k10 fedasync_c10 > docs/virtual_clock_mnist.md.partial
mv docs/virtual_clock_mnist.md.partial docs/virtual_clock_mnist.md
mkdir -p docs/img
$bin plot runs/virtual_clock/{all,deadline_3s,overselect_13_keep_10,fedbuff_c20_k10,fedasync_c10}/seed1 \
  --label all --label "deadline 3 s" --label "select 13, keep first 10" \
  --label "FedBuff c=20 K=10" --label "FedAsync c=10" \
  --x virtual_time_s --metric test_accuracy \
  --title "MNIST 2NN, heavy-tailed devices: test accuracy against virtual time (seed 1)" \
  -o docs/img/virtual_clock_mnist.svg
cat docs/virtual_clock_mnist.md
