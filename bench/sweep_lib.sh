# Shared by the bench scripts (sourced from the repository root). Sets the data root (the development
# copy unless FEDSIM_DATA names another; scenarios name their data relative to it, e.g. dir = "mnist")
# and `bin`: FEDSIM_BIN, a prebuilt binary (so a rebuild during a long sweep cannot change it), else a
# fresh release build.
export FEDSIM_DATA="${FEDSIM_DATA:-../shared/data}"
if [ -n "${FEDSIM_BIN:-}" ]; then
  bin=$FEDSIM_BIN
else
  cargo build --release -q --bin fedsim
  bin=./target/release/fedsim
fi

# timed_run OUT BIN ARGS...: runs `BIN ARGS...`, then writes OUT/machine.txt (CPU model, load average
# at the start and end, wall time, the binary) so that tables can state the conditions of each run.
timed_run() {
  local out=$1 bin=$2 cpu load0 t0 t1
  shift 2
  cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
  load0=$(uptime); t0=$(date +%s.%N)
  "$bin" "$@"
  t1=$(date +%s.%N)
  printf 'cpu: %s\nstart: %s\nend: %s\nwall_s: %s\nbin: %s\n' "$cpu" "$load0" "$(uptime)" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" "$bin" > "$out/machine.txt"
  echo "$(date -u +%T) done $out"
}

# run_steps STEP...: calls the sourcing script's functions `runs`, `table` and `plots` in the order
# asked (`all`, the default, is all three).
run_steps() {
  local steps=("$@") st
  [ ${#steps[@]} -eq 0 ] && steps=(all)
  for st in "${steps[@]}"; do
    case $st in
      runs) runs ;;
      table) table ;;
      plots) plots ;;
      all) runs; table; plots ;;
      *) echo "unknown step $st (runs, table, plots or all)" >&2; exit 2 ;;
    esac
  done
}
