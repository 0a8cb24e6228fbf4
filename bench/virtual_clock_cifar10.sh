#!/usr/bin/env bash
# Time to 50% test accuracy in virtual seconds on CIFAR-10 with FedAU's CNN (preset cnn_cifar, the
# setting of configs/fedau/cifar10_cnn_bernoulli.toml: 250 clients, Q = 5 local steps of batch 16,
# lr 0.1, crop + flip) on an IID partition, under heavy-tailed devices ([system]: speed lognormal
# sigma = 1 around 100 samples/s, bandwidths lognormal sigma = 1 around 1 MB/s, 50 ms latency).
# Synchronous FedAvg with 10 clients per round three ways (wait for all, a 10 s deadline, select 13 and
# keep the first 10) against FedBuff (20 training, buffer 10) and FedAsync (10 training, alpha 0.6),
# for which a "round" is one server update and every idle client is eligible.
# Usage: bench/virtual_clock_cifar10.sh [SEEDS] [MAX_ROUNDS]
# Results: runs/virtual_clock_cifar10/<variant>/seed<k>/, table in docs/virtual_clock_cifar10.md, plot in
# docs/img/virtual_clock_cifar10.svg. The data is the shared JPEG re-encoding of CIFAR-10.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1}
rounds=${2:-1500}
source bench/sweep_lib.sh
system='system={speed={dist="lognormal", sigma=1}, samples_per_s=100, download_bps={dist="lognormal", median=1e6, sigma=1}, upload_bps={dist="lognormal", median=1e6, sigma=1}, latency_s=0.05'
fedavg='strategy={kind="fedavg"}'
variants=(
  "all|${system}}|participation={kind=\"uniform\", count=10}|round.quorum=0|${fedavg}|rounds=$rounds|eval.every=25"
  "deadline_10s|${system}, deadline_s=10}|participation={kind=\"uniform\", count=10}|round.quorum=0|${fedavg}|rounds=$rounds|eval.every=25"
  "overselect_13_keep_10|${system}}|participation={kind=\"uniform\", count=13}|round.quorum=10|${fedavg}|rounds=$rounds|eval.every=25"
  "fedbuff_c20_k10|${system}}|participation={kind=\"full\"}|round.quorum=0|strategy={kind=\"fedbuff\", concurrency=20, buffer_size=10}|rounds=$rounds|eval.every=25"
  "fedasync_c10|${system}}|participation={kind=\"full\"}|round.quorum=0|strategy={kind=\"fedasync\", concurrency=10, alpha=0.6}|rounds=$((rounds * 10))|eval.every=250"
)
for v in "${variants[@]}"; do
  IFS='|' read -r name sys part quorum strat len every <<< "$v"
  for seed in $(seq 1 "$seeds"); do
    out=runs/virtual_clock_cifar10/$name/seed$seed
    [ -f "$out/summary.json" ] && continue
    $bin sim configs/fedau/cifar10_cnn_bernoulli.toml -q --force --out "$out" --seed "$seed" \
      --set 'partition={scheme="iid"}' --set "$len" --set "$every" --set "$sys" --set "$part" \
      --set "$quorum" --set "$strat" --set eval.train_loss=false --set 'eval.targets=[0.5]' \
      --set eval.stop_at_targets=true
    echo "done $name seed$seed"
  done
done
python3 bench/virtual_clock_table.py runs/virtual_clock_cifar10 0.5 all deadline_10s overselect_13_keep_10 fedbuff_c20_k10 fedasync_c10 > docs/virtual_clock_cifar10.md.partial
mv docs/virtual_clock_cifar10.md.partial docs/virtual_clock_cifar10.md
mkdir -p docs/img
$bin plot runs/virtual_clock_cifar10/{all,deadline_10s,overselect_13_keep_10,fedbuff_c20_k10,fedasync_c10}/seed1 \
  --label all --label "deadline 10 s" --label "select 13, keep first 10" \
  --label "FedBuff c=20 K=10" --label "FedAsync c=10" \
  --x virtual_time_s --metric test_accuracy \
  --title "CIFAR-10 cnn_cifar (IID), heavy-tailed devices: test accuracy against virtual time (seed 1)" \
  -o docs/img/virtual_clock_cifar10.svg
cat docs/virtual_clock_cifar10.md
