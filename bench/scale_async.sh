#!/usr/bin/env bash
# Scale of asynchronous aggregation: FedBuff (buffer 10) on synthetic logistic regression (60 features,
# 10 classes, 5 samples per client), every idle client eligible (participation "full"), heavy-tailed
# device speeds ([system] speed lognormal sigma = 1 around 100 samples/s), for 10,000 and 100,000
# registered clients with 100 and 1,000 clients training at all times. Reports server updates per
# second of wall time (evaluation excluded), client updates per second, and the peak resident memory
# next to the size of the data set.
# Usage: bench/scale_async.sh [SERVER_UPDATES] [CLIENT COUNTS...]   (CONCURRENCY="100 1000")
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1000}
shift || true
counts=("${@:-10000 100000}")
concurrency=(${CONCURRENCY:-100 1000})
source bench/sweep_lib.sh
printf "%-10s %-12s %-8s %-16s %-16s %-14s %-10s\n" clients concurrency updates "updates/s" "client upd/s" "peak RSS (MiB)" "data (MiB)"
for n in ${counts[@]}; do
  for c in ${concurrency[@]}; do
    dir=$(mktemp -d)
    "$bin" sim configs/quickstart.toml -q --force --out "$dir" \
      --set name=scale_async --set clients="$n" --set rounds="$rounds" \
      --set data.samples_per_client=5 --set data.test_samples=2000 \
      --set 'model={kind="logreg"}' --set 'participation={kind="full"}' \
      --set "strategy={kind=\"fedbuff\", concurrency=$c, buffer_size=10}" \
      --set 'system={speed={dist="lognormal", sigma=1}, samples_per_s=100}' \
      --set eval.every="$rounds" --set eval.train_loss_samples=10000
    python3 - "$dir" "$n" "$c" "$rounds" <<'PY'
import json, sys
d, n, c, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rs = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
s = json.load(open(f"{d}/summary.json"))
# Wall time of the updates: from the first record's start to the last record, evaluation excluded.
wall = rs[-1]["wall_s"] - sum(r["time_eval_s"] for r in rs)
ups = len(rs) / wall
clients = sum(r["participants"] for r in rs) / wall
print(f"{n:<10} {c:<12} {len(rs):<8} {ups:<16.1f} {clients:<16.0f} {s.get('peak_rss_mib', float('nan')):<14.0f} {s.get('data_mib', float('nan')):<10.0f}")
PY
    rm -rf "$dir"
  done
done
