#!/usr/bin/env bash
# Round time of configs/mnist_2nn_iid.toml: `fedsim launch` with 10 client processes against
# `fedsim sim`, medians over rounds (the first round, which warms up, is skipped).
# Usage: bench/grpc/round_time.sh [ROUNDS] [MNIST_DIR]
source "$(dirname "$0")/common.sh"
ROUNDS="${1:-20}"
# MNIST_DIR (optional): absolute, or relative to the data root; by default DATA_ROOT/mnist.
SETS=(--set "rounds=$ROUNDS")
if [ -n "${2:-}" ]; then SETS+=(--set "data.dir=$2"); fi
"$FEDSIM" sim configs/mnist_2nn_iid.toml -q --force --out "$WORK/sim" "${SETS[@]}"
"$FEDSIM" launch configs/mnist_2nn_iid.toml -q --processes 10 --force --out "$WORK/grpc" "${SETS[@]}" 2>/dev/null
printf "%-6s %14s %14s %12s %10s\n" runtime round_s train_s eval_s final_acc
for r in sim grpc; do
    m="$WORK/$r/metrics.jsonl"
    printf "%-6s %14.4f %14.4f %12.4f %10s\n" "$r" \
        "$(column time_round_s 1 "$m" | median)" "$(column time_train_s 1 "$m" | median)" \
        "$(column time_eval_s 1 "$m" | median)" \
        "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["final_test_accuracy"])' "$WORK/$r/summary.json")"
done
python3 - "$WORK" <<'PY'
import json, statistics, sys
w = sys.argv[1]
def med(run, key):
    rows = [json.loads(l) for l in open(f"{w}/{run}/metrics.jsonl") if l.strip()][1:]
    return statistics.median(r[key] for r in rows)
for key in ["time_round_s", "time_train_s"]:
    print(f"ratio grpc/sim {key}: {med('grpc', key) / med('sim', key):.2f}")
h = [json.load(open(f"{w}/{r}/summary.json"))["final_model_hash"] for r in ("sim", "grpc")]
print("identical final models:", h[0] == h[1])
PY
