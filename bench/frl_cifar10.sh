#!/usr/bin/env bash
# FRL on CIFAR-10 (issue #15; ../shared/algorithms.md §5.5-§5.6) at a CPU budget: supermask Conv4
# (configs/frl/frl_conv4_cifar10.toml) against Conv4 trained with FedAvg, trimmed mean and Multi-Krum
# (configs/frl/fedavg_conv4_cifar10.toml); 1000 clients, 25 per round, per-class Dir(1.0), E = 1, B = 8,
# crop + flip; without attack and with 20% malicious clients (ids 0..199): rank reversal against FRL,
# scaling x1e5 against FedAvg, AGR-tailored with full knowledge against trimmed mean (oracle b) and
# Multi-Krum (oracle f).
#
# Usage: bench/frl_cifar10.sh [runs|table|plots|all]...   (default: all)
# Environment: RUNS_ROOT (runs/frl_cifar10), ROUNDS (100), SEEDS ("1"), METHODS ("frl fedavg trmean mkrum"), LEVELS ("0 0.2"), FEDSIM_BIN (a
# prebuilt binary; default: build target/release/fedsim).
# Runs go one at a time into runs/frl_cifar10/<method>_f<pct>/seed<k>/ (skipped when complete; each
# gets machine.txt). Table: docs/frl_cifar10.md (via a .partial file); plots: docs/img/frl_cifar10_*.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-100}
seeds=${SEEDS:-"1"}
methods=${METHODS:-"frl fedavg trmean mkrum"}
levels=${LEVELS:-"0 0.2"}
root=${RUNS_ROOT:-runs/frl_cifar10}
source bench/sweep_lib.sh
pct() { python3 -c "print(int(round($1 * 100)))"; }

# The config and overrides of METHOD at malicious fraction F, one per line.
settings_of() {
  local m=$1 f=$2 attack=""
  case $m in
    frl) echo configs/frl/frl_conv4_cifar10.toml; attack="rank_reversal" ;;
    fedavg) echo configs/frl/fedavg_conv4_cifar10.toml; attack="scaling" ;;
    trmean) echo configs/frl/fedavg_conv4_cifar10.toml
      echo '--set'; echo 'strategy.aggregator={kind="trimmed_mean", trim="oracle"}'
      attack='agr_tailored", knowledge="full' ;;
    mkrum) echo configs/frl/fedavg_conv4_cifar10.toml
      echo '--set'; echo 'strategy.aggregator={kind="multi_krum", f="oracle"}'
      attack='agr_tailored", knowledge="full' ;;
    *) echo "unknown method $m" >&2; exit 2 ;;
  esac
  if [ "$f" != 0 ]; then echo '--set'; echo "attack={kind=\"$attack\", fraction=$f}"; fi
}

runs() {
  local seed f m out s
  for seed in $seeds; do
    for f in $levels; do
      for m in $methods; do
        out=$root/${m}_f$(pct "$f")/seed$seed
        [ -f "$out/summary.json" ] && continue
        mapfile -t s < <(settings_of "$m" "$f")
        mkdir -p "$out"
        timed_run "$out" "$bin" sim "${s[0]}" -q --force --out "$out" --seed "$seed" --set rounds="$rounds" "${s[@]:1}"
      done
    done
  done
}

groups() {
  local f m
  for f in $levels; do for m in $methods; do echo "${m}_f$(pct "$f")"; done; done
}

table() {
  python3 bench/cifar10_runs_table.py "$root" $(groups) --rounds "$rounds" > docs/frl_cifar10.md.partial
  mv docs/frl_cifar10.md.partial docs/frl_cifar10.md  # never a truncated table
  cat docs/frl_cifar10.md
}

plots() {
  mkdir -p docs/img
  local f m sel lab p
  for f in $levels; do
    p=$(pct "$f"); sel=(); lab=()
    for m in $methods; do
      [ -f "$root/${m}_f$p/seed1/summary.json" ] || continue
      sel+=("$root/${m}_f$p/seed1"); lab+=(--label "$m")
    done
    [ ${#sel[@]} -gt 0 ] || continue
    "$bin" plot "${sel[@]}" "${lab[@]}" --metric test_accuracy --x round \
      --title "CIFAR-10 Conv4, 25 of 1000 clients, E=1 B=8, $p% malicious: test accuracy (seed 1)" \
      -o "docs/img/frl_cifar10_f$p.svg"
  done
}

run_steps "$@"
