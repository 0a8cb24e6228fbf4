#!/usr/bin/env bash
# Coordinator peak memory (VmHWM) with N clients that all send a 1.0 M-parameter update (4 MB) every
# round, for several budgets of `fedsim server --update-memory-mib` (memory for received updates;
# beyond it updates are spooled to disk). O(model) means: flat in N, far below N x 4 MB.
# Usage: bench/grpc/memory.sh [ROUNDS]
source "$(dirname "$0")/common.sh"
ROUNDS="${1:-5}"
# 1000 features -> 990 hidden -> 10 classes: 1,000,900 parameters.
SETS=(--set "rounds=$ROUNDS" --set "data.features=1000" --set "data.samples_per_client=20"
      --set "data.test_samples=200" --set "model.hidden=[990]" --set 'participation={kind="full"}'
      --set "eval.every=$ROUNDS")
printf "%8s %12s %16s %16s %14s %12s\n" clients budget_mib peak_rss_mib updates_peak_mib spooled/round N*4MB
for clients in 5 50; do
    for budget in 0 64 100000; do
        out="$WORK/c$clients-b$budget"
        "$FEDSIM" launch configs/quickstart.toml -q --processes 10 --force --out "$out" "${SETS[@]}" \
            --set "clients=$clients" --server-arg=--update-memory-mib=$budget 2>/dev/null
        m="$out/metrics.jsonl"
        printf "%8d %12s %16.1f %16.1f %14.1f %12d\n" "$clients" "$budget" \
            "$(column coordinator_peak_rss_mib 0 "$m" | sort -g | tail -1)" \
            "$(column update_memory_peak_mib 0 "$m" | sort -g | tail -1)" \
            "$(column updates_spooled 0 "$m" | median)" "$((clients * 4))"
    done
done
