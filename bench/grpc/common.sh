# Shared helpers of the gRPC benchmarks (sourced). Run the scripts from anywhere; they cd to the repo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# Data: the development copy unless FEDSIM_DATA names another data root.
export FEDSIM_DATA="${FEDSIM_DATA:-$ROOT/../shared/data}"
FEDSIM="${FEDSIM:-$ROOT/target/release/fedsim}"
if [[ ! -x "$FEDSIM" ]]; then
    echo "building the release binary" >&2
    cargo build --release >&2
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedsim-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# KEY values of every line of a metrics.jsonl (skipping the first SKIP rounds)
column() { python3 -c '
import json, sys
key, skip = sys.argv[1], int(sys.argv[2])
for i, line in enumerate(open(sys.argv[3])):
    if i >= skip and line.strip():
        v = json.loads(line).get(key)
        if v is not None: print(v)
' "$1" "$2" "$3"; }

# A self-signed server certificate for 127.0.0.1 (not a CA: rustls refuses a CA as an end entity).
make_cert() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
        -keyout "$1/key.pem" -out "$1/cert.pem" \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
}
