#!/usr/bin/env bash
# The three CIFAR-10 experiments of issue #15 in one resumable queue, most informative runs first:
# FedAU vs average-participating and known-probability (Bernoulli, 2 seeds), FRL vs FedAvg / trimmed
# mean / Multi-Krum (1 seed), FedSpeed vs FedAvg / FedDyn / SCAFFOLD (seed 1, then seed 2), the other
# FedAU baselines, then Markov and cyclic participation. Every script skips runs whose summary.json
# exists, so the queue can be stopped at any time and started again; tables and plots are rewritten
# at the end (each via a .partial file).
# Usage: bench/cifar10_experiments.sh   (environment: FEDSIM_BIN, a prebuilt binary; default: build one)
# On 2 cores (AMD EPYC Zen 4): about 10-20 min per FedAU run (2,000 rounds), 10-15 min per FRL run
# (100 rounds), 10-40 min per FedSpeed run (200 rounds); about 12 hours in all.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/sweep_lib.sh
export FEDSIM_BIN=$bin
ROUNDS=2000 SEEDS="1 2" PATTERNS=bernoulli METHODS="fedau avg_participating known_prob" bench/fedau_cifar10.sh runs
ROUNDS=100 SEEDS=1 bench/frl_cifar10.sh runs
ROUNDS=200 SEEDS=1 bench/fedspeed_cifar10.sh runs
ROUNDS=200 SEEDS=2 bench/fedspeed_cifar10.sh runs
ROUNDS=2000 SEEDS="1 2" PATTERNS=bernoulli METHODS="avg_all mifa fedvarp fedau_k50" bench/fedau_cifar10.sh runs
ROUNDS=2000 SEEDS="1 2" PATTERNS="markov cyclic" METHODS="fedau avg_participating known_prob" bench/fedau_cifar10.sh runs
ROUNDS=2000 SEEDS="1 2" bench/fedau_cifar10.sh table plots
ROUNDS=100 SEEDS=1 bench/frl_cifar10.sh table plots
ROUNDS=200 SEEDS="1 2" bench/fedspeed_cifar10.sh table plots
