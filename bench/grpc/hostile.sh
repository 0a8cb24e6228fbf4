#!/usr/bin/env bash
# Figures of the coordinator under hostile callers (issue #13 items 7-10): runs the end-to-end tests in
# tests/grpc_hostile.rs RUNS times (default 3) and prints the median of what each measures:
#   - RSS growth with 40 Join requests stalled one byte short of a 300 KiB message,
#   - RSS growth and time to refuse two decode bombs (4 million empty tensors; a 4-million-entry shape),
#   - the slowest heartbeat while two 64 MiB uploads are received and decoded,
#   - coordinator CPU seconds over 2 s while a connection flood exhausts its 64 file descriptors.
# The tests themselves assert generous bounds; this script reports the measured values.
# Usage: bench/grpc/hostile.sh [RUNS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RUNS="${1:-3}"
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT
for _ in $(seq "$RUNS"); do
    cargo test --release --quiet --test grpc_hostile -- --nocapture 2>&1 | grep -E "RSS grew|CPU while|slowest heartbeat|decode bombs" >>"$OUT"
done
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), runs: $RUNS (medians)"
echo "stalled joins, RSS growth (MiB):   $(sed -n 's/.*RSS grew by \([0-9.]*\) MiB with 40.*/\1/p' "$OUT" | median)"
echo "decode bombs, RSS growth (MiB):    $(sed -n 's/.*decode bombs.*RSS grew \([0-9.]*\) MiB.*/\1/p' "$OUT" | median)"
echo "decode bombs, time to refuse (s):  $(sed -n 's/.*refused in \([0-9.]*\) s.*/\1/p' "$OUT" | median)"
echo "slowest heartbeat (ms):            $(sed -n 's/.*slowest heartbeat.*: \([0-9.]*\) ms/\1/p' "$OUT" | median)"
echo "CPU s in 2 s while fd-exhausted:   $(sed -n 's/.*CPU while flooded: \([0-9.]*\) s.*/\1/p' "$OUT" | median)"
