#!/usr/bin/env bash
# Transfer throughput of a 214 MB model (53.6 M parameters) over loopback, with TLS and without:
# the client's download of the task (FetchTask) and the coordinator's receipt of the update
# (SubmitResult), each timed from its first message to the decoded payload. Medians over rounds.
# Usage: bench/grpc/throughput.sh [ROUNDS]
source "$(dirname "$0")/common.sh"
ROUNDS="${1:-5}"
make_cert "$WORK"
SETS=(--set "rounds=$ROUNDS" --set clients=1 --set data.features=1000 --set data.samples_per_client=20
      --set data.test_samples=20 --set "model.hidden=[53000]" --set "eval.every=$ROUNDS")
run() { # NAME EXTRA-ARGS...
    local name=$1; shift
    RUST_LOG=info,fedsim_client=debug,fedsim_server=debug \
        "$FEDSIM" launch configs/quickstart.toml -q --processes 1 --force --out "$WORK/$name" "${SETS[@]}" "$@" 2>/dev/null
    local down up
    down=$(grep -ho 'task received.*mb_per_s=[0-9.]*' "$WORK/$name"/logs/client-*.log | grep -o 'mb_per_s=[0-9.]*' | cut -d= -f2 | median)
    up=$(grep -ho 'result received.*mb_per_s=[0-9.]*' "$WORK/$name"/logs/server.log | grep -o 'mb_per_s=[0-9.]*' | cut -d= -f2 | median)
    printf "%-10s download %8.0f MB/s   upload %8.0f MB/s   (%s rounds)\n" "$name" "$down" "$up" "$ROUNDS"
}
run tls --server-arg=--tls-cert="$WORK/cert.pem" --server-arg=--tls-key="$WORK/key.pem" \
    --client-arg=--ca-cert="$WORK/cert.pem"
run plaintext
