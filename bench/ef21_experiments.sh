#!/usr/bin/env bash
# EF21 experiments (algorithms.md §4.11; write-up in docs/EXPERIMENTS_EF21.md).
#
# Usage: bench/ef21_experiments.sh [phishing|a9a|pp|w8a|tables|plots|all]...   (default: all)
# Runs go to runs/ef21/<dataset>/<method>_m<multiplier>/ (skipped when already complete); tables to
# bench/results/ef21/*.csv and *.md; plots to docs/img/ef21_*.svg.
# Environment: THREADS (worker threads per run, default 1), ROUNDS_PHISHING (20000), ROUNDS_A9A (30000),
# ROUNDS_W8A (10000), MULTS (phishing EF21/EF multiplier grid, default 1 2 4 ... 4096), MULTS_A9A (a9a grid,
# default powers of 4: a9a rounds cost 5x more), EF_EXTRA_MULTS (EF only, default 0.25 0.5), TOL (1e-7).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-1}
mults_phishing=${MULTS:-"1 2 4 8 16 32 64 128 256 512 1024 2048 4096"}
mults_a9a=${MULTS_A9A:-"1 4 16 64 256 1024 4096"}
# EF's best multiplier sits at the bottom of the grid on phishing: also run it below 1.
ef_extra=${EF_EXTRA_MULTS:-"0.25 0.5"}
tol=${TOL:-1e-7}
runs=runs/ef21
bin=./target/release/fedsim
[ -x "$bin" ] || cargo build --release -q

# run NAME CONFIG [--set ...]: one simulation unless its summary exists.
run() {
  local out=$runs/$1 cfg=$2
  shift 2
  if [ -f "$out/summary.json" ]; then return; fi
  rm -rf "$out"
  "$bin" sim "$cfg" -q --threads "$threads" --out "$out" "$@" > /dev/null
  echo "done $out"
}

# grid DATASET ROUNDS EVAL_EVERY MULTS: EF21 and EF over the multiplier grid, GD at multiplier 1.
grid() {
  local ds=$1 rounds=$2 every=$3 mults=$4
  for m in $mults; do
    for kind in ef21 ef; do
      run "$ds/${kind}_m$m" "configs/ef21/${ds}_top1.toml" --set rounds="$rounds" \
        --set eval.every="$every" --set strategy.kind="$kind" --set strategy.multiplier="$m"
    done
  done
  for m in $ef_extra; do
    run "$ds/ef_m$m" "configs/ef21/${ds}_top1.toml" --set rounds="$rounds" \
      --set eval.every="$every" --set strategy.kind=ef --set strategy.multiplier="$m"
  done
  run "$ds/gd_m1" "configs/ef21/${ds}_top1.toml" --set rounds="$rounds" --set eval.every=1 \
    --set 'strategy={kind="gd", multiplier=1}'
}

# EF21-PP at 50% and 25% participation (⌊n·prw⌋ clients uniformly), at EF21's best multiplier on the full
# grid (read from the table), same step as EF21 (the reference code's convention).
pp() {
  local ds=$1 rounds=$2 every=$3
  local best
  best=$(python3 bench/ef21_table.py best "$runs/$ds" ef21 "$tol")
  for count in 10 5; do
    run "$ds/ef21pp${count}_m$best" "configs/ef21/${ds}_top1.toml" --set rounds="$rounds" \
      --set eval.every="$every" --set strategy.multiplier="$best" \
      --set participation.kind=uniform --set participation.count="$count"
  done
}

# w8a with rows sorted by norm: EF21 with the L_QM step vs the L_AM step at equal multipliers.
w8a() {
  local data=runs/ef21/data/w8a_sorted.txt.gz rounds=${ROUNDS_W8A:-10000}
  [ -f "$data" ] || python3 bench/ef21_sort_rows.py ../shared/data/libsvm/w8a.txt.gz "$data"
  for m in ${W8A_MULTS:-"1 4 16 64"}; do
    for step in l_qm l_am; do
      run "w8a_sorted/ef21_${step}_m$m" configs/ef21/w8a_sorted_top1.toml --set rounds="$rounds" \
        --set eval.every=10 --set strategy.step="$step" --set strategy.multiplier="$m"
    done
  done
}

tables() {
  mkdir -p bench/results/ef21
  for ds in phishing a9a w8a_sorted; do
    [ -d "$runs/$ds" ] || continue
    python3 bench/ef21_table.py table "$runs/$ds" "$tol" \
      --csv "bench/results/ef21/$ds.csv" > "bench/results/ef21/$ds.md"
    echo "bench/results/ef21/$ds.md"
  done
}

plots() {
  mkdir -p docs/img
  for ds in phishing a9a; do
    [ -d "$runs/$ds" ] || continue
    local b21 bef
    b21=$(python3 bench/ef21_table.py best "$runs/$ds" ef21 "$tol")
    bef=$(python3 bench/ef21_table.py best "$runs/$ds" ef "$tol")
    local sel=("$runs/$ds/ef21_m$b21" "$runs/$ds/ef_m$bef" "$runs/$ds/gd_m1")
    local lab=(--label "EF21 Top-1 x$b21" --label "EF Top-1 x$bef" --label "GD")
    for x in bytes_up round; do
      "$bin" plot "${sel[@]}" --metric grad_norm_sq --x "$x" --log-y "${lab[@]}" \
        --title "$ds: best multipliers, ||grad f||^2 vs $x" -o "docs/img/ef21_${ds}_best_${x}.svg"
    done
    # Multiplier sweeps (every other grid point) for each method.
    for kind in ef21 ef; do
      local sw=() swl=()
      for m in 1 4 16 64 256 1024 4096; do
        [ -d "$runs/$ds/${kind}_m$m" ] && sw+=("$runs/$ds/${kind}_m$m") && swl+=(--label "x$m")
      done
      "$bin" plot "${sw[@]}" --metric grad_norm_sq --x bytes_up --log-y "${swl[@]}" \
        --title "$ds: $kind Top-1 by multiplier" -o "docs/img/ef21_${ds}_${kind}_sweep.svg"
    done
    local pps=("$runs/$ds/ef21_m$b21") ppl=(--label "EF21 100%")
    for c in 10 5; do
      [ -d "$runs/$ds/ef21pp${c}_m$b21" ] && pps+=("$runs/$ds/ef21pp${c}_m$b21") && ppl+=(--label "EF21-PP $((c * 5))%")
    done
    for x in bytes_up round; do
      "$bin" plot "${pps[@]}" --metric grad_norm_sq --x "$x" --log-y "${ppl[@]}" \
        --title "$ds: EF21-PP x$b21, ||grad f||^2 vs $x" -o "docs/img/ef21_${ds}_pp_${x}.svg"
    done
  done
  if [ -d "$runs/w8a_sorted" ]; then
    local w=() wl=()
    for m in ${W8A_MULTS:-"1 4 16 64"}; do
      for step in l_qm l_am; do
        w+=("$runs/w8a_sorted/ef21_${step}_m$m") && wl+=(--label "$step x$m")
      done
    done
    "$bin" plot "${w[@]}" --metric grad_norm_sq --x round --log-y "${wl[@]}" \
      --title "w8a sorted by row norm: EF21 L_QM vs L_AM step" -o docs/img/ef21_w8a_sorted_round.svg
  fi
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all)
for s in "${steps[@]}"; do
  case $s in
    phishing) grid phishing "${ROUNDS_PHISHING:-20000}" 5 "$mults_phishing" ;;
    a9a) grid a9a "${ROUNDS_A9A:-30000}" 10 "$mults_a9a" ;;
    pp) pp phishing "${ROUNDS_PHISHING:-20000}" 5; pp a9a "${ROUNDS_A9A:-30000}" 10 ;;
    w8a) w8a ;;
    tables) tables ;;
    plots) plots ;;
    all)
      grid phishing "${ROUNDS_PHISHING:-20000}" 5 "$mults_phishing"
      grid a9a "${ROUNDS_A9A:-30000}" 10 "$mults_a9a"
      pp phishing "${ROUNDS_PHISHING:-20000}" 5
      pp a9a "${ROUNDS_A9A:-30000}" 10
      w8a
      tables
      plots
      ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
