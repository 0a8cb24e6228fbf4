#!/usr/bin/env bash
# Scale benchmark: FedAU on synthetic logistic regression with Bernoulli participation of about 100
# clients per round, for 10,000 / 100,000 / 1,000,000 registered clients. Reports the median time of
# rounds without evaluation (selection + local training + aggregation) and the peak resident memory
# next to the size of the data set.
# Usage: bench/scale.sh [ROUNDS] [CLIENT COUNTS...]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-200}
shift || true
counts=("${@:-10000 100000 1000000}")
source bench/sweep_lib.sh
printf "%-10s %-8s %-18s %-14s %-10s\n" clients rounds "median round (ms)" "peak RSS (MiB)" "data (MiB)"
for n in ${counts[@]}; do
  p=$(python3 -c "print(100/$n)")
  dir=$(mktemp -d)
  "$bin" sim configs/quickstart.toml -q --force --out "$dir" \
    --set name=scale --set clients="$n" --set rounds="$rounds" \
    --set data.samples_per_client=5 --set data.test_samples=2000 \
    --set 'model={kind="logreg"}' \
    --set "participation={kind=\"bernoulli\", p=$p}" --set 'strategy={kind="fedau"}' \
    --set eval.every=50 --set eval.train_loss_samples=10000
  python3 - "$dir" "$n" "$rounds" <<'PY'
import json, statistics, sys
d, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rs = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
s = json.load(open(f"{d}/summary.json"))
t = statistics.median(r["time_round_s"] for r in rs if r["test_accuracy"] is None) * 1000
print(f"{n:<10} {rounds:<8} {t:<18.2f} {s.get('peak_rss_mib', float('nan')):<14.0f} {s.get('data_mib', float('nan')):<10.0f}")
PY
  rm -rf "$dir"
done
