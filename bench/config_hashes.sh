#!/usr/bin/env bash
# Prints the final model hash of every scenario in configs/ at reduced rounds, one line each:
#   <scenario file> <final_model_hash>
# Used to check that a refactor leaves behaviour unchanged: run before and after, diff the outputs.
#
#   bench/config_hashes.sh > /tmp/before.txt   # ... change the code ...
#   bench/config_hashes.sh | diff /tmp/before.txt -
#
# ROUNDS (default 2) caps every run; FEDSIM_DATA (default ../shared/data, the development copy) is the
# data root the scenarios' data paths are relative to. Scenarios whose data is missing print
# "<file> skipped: data missing".
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-2}"
export FEDSIM_DATA="${FEDSIM_DATA:-../shared/data}"
cargo build --release -q --bin fedsim
bin="${CARGO_TARGET_DIR:-target}/release/fedsim"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for cfg in $(find configs -name '*.toml' | sort); do
    out="$tmp/$(echo "$cfg" | tr '/' '_')"
    if ! "$bin" sim "$cfg" --set "rounds=$rounds" --out "$out" -q >"$tmp/log" 2>&1; then
        if grep -qiE 'fedsim data fetch|no such file|not found|does not exist' "$tmp/log"; then
            echo "$cfg skipped: data missing"
            continue
        fi
        echo "$cfg FAILED:" >&2
        cat "$tmp/log" >&2
        exit 1
    fi
    hash="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["final_model_hash"])' "$out/summary.json")"
    echo "$cfg $hash"
done
