#!/usr/bin/env bash
# FedSpeed on CIFAR-10 (issue #15; ../shared/algorithms.md §3.4-§3.5) at a CPU budget:
# configs/fedspeed/cifar10_resnet8_dir01_fedspeed.toml (resnet8_gn, 100 clients, Bernoulli 0.1, Dir(0.1)
# per-client label prior, E = 1, B = 50, η0 = 0.1 decay 0.998, wd 1e-3, λ' = 0.1, ρ = 0.1, clip 10,
# crop + flip). Methods: FedSpeed, FedAvg, FedDyn (FedSpeed with ρ = 0), SCAFFOLD (option II), and
# `fedavg_iid` (not in the default list): FedAvg on an IID split of the same data, a reference for how
# much of the gap to published accuracies is the Dir(0.1) skew rather than the small budget.
#
# Usage: bench/fedspeed_cifar10.sh [runs|table|plots|all]...   (default: all)
# Environment: RUNS_ROOT (runs/fedspeed_cifar10), ROUNDS (200), SEEDS ("1 2"), METHODS ("fedspeed fedavg feddyn scaffold"), FEDSIM_BIN (a prebuilt
# binary, so that a rebuild during a long sweep cannot change it; default: build target/release/fedsim).
# Runs go one at a time (each on all cores) into runs/fedspeed_cifar10/<method>/seed<k>/, skipping those
# whose summary.json exists (an interrupted run is redone from scratch); each gets machine.txt (CPU,
# load, wall time). Table: docs/fedspeed_cifar10.md (written to a .partial file, then moved); plots:
# docs/img/fedspeed_cifar10_*.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-200}
seeds=${SEEDS:-"1 2"}
methods=${METHODS:-"fedspeed fedavg feddyn scaffold"}
cfg=configs/fedspeed/cifar10_resnet8_dir01_fedspeed.toml
root=${RUNS_ROOT:-runs/fedspeed_cifar10}
source bench/sweep_lib.sh

strategy_of() {
  case $1 in
    fedspeed) echo 'strategy={kind="fedspeed", rho=0.1, alpha=1.0, lambda=0.1, clip=10.0, server_dual_mean="all_clients"}' ;;
    feddyn) echo 'strategy={kind="feddyn", lambda=0.1, clip=10.0, server_dual_mean="all_clients"}' ;;
    fedavg | fedavg_iid) echo 'strategy={kind="fedavg", weighting="uniform"}' ;;
    scaffold) echo 'strategy={kind="scaffold", option=2}' ;;
    *) echo "unknown method $1" >&2; exit 2 ;;
  esac
}

# split_of METHOD: extra --set arguments for the split (only fedavg_iid replaces the scenario's Dir(0.1)).
split_of() {
  case $1 in
    fedavg_iid) echo '--set partition={scheme="iid"}' ;;
  esac
}

runs() {
  local seed m out
  for seed in $seeds; do
    for m in $methods; do
      out=$root/$m/seed$seed
      [ -f "$out/summary.json" ] && continue
      mkdir -p "$out"
      timed_run "$out" "$bin" sim "$cfg" -q --force --out "$out" --seed "$seed" --set rounds="$rounds" \
        --set "$(strategy_of "$m")" $(split_of "$m")
    done
  done
}

table() {
  # the IID reference row is listed whenever its run exists (the table skips missing groups)
  local listed=$methods
  [[ " $methods " == *" fedavg_iid "* ]] || listed="$methods fedavg_iid"
  python3 bench/cifar10_runs_table.py "$root" $listed --targets 0.25,0.3,0.35 --rounds "$rounds" > docs/fedspeed_cifar10.md.partial
  mv docs/fedspeed_cifar10.md.partial docs/fedspeed_cifar10.md  # never a truncated table
  cat docs/fedspeed_cifar10.md
}

plots() {
  mkdir -p docs/img
  local m sel=() lab=()
  for m in $methods; do
    [ "$m" = fedavg_iid ] && continue  # the plots are of the Dir(0.1) runs
    [ -f "$root/$m/seed1/summary.json" ] || continue
    sel+=("$root/$m/seed1"); lab+=(--label "$m")
  done
  [ ${#sel[@]} -gt 0 ] || return 0
  "$bin" plot "${sel[@]}" "${lab[@]}" --metric test_accuracy --x round \
    --title "CIFAR-10 resnet8_gn, Dir(0.1), 10% active, E=1 B=50: test accuracy (seed 1)" \
    -o docs/img/fedspeed_cifar10_test_accuracy.svg
  "$bin" plot "${sel[@]}" "${lab[@]}" --metric test_loss --x round \
    --title "CIFAR-10 resnet8_gn, Dir(0.1), 10% active, E=1 B=50: test loss (seed 1)" \
    -o docs/img/fedspeed_cifar10_test_loss.svg
}

run_steps "$@"
