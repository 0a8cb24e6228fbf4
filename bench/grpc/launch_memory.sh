#!/usr/bin/env bash
# Memory and round time of configs/mnist_2nn_iid.toml: `fedsim launch` with P client processes against
# `fedsim sim`, RUNS runs of each (default 3), medians over the runs.
#
# Memory: a poller (every 20 ms) walks the process tree of the command and keeps, per process, the last
# VmHWM it saw (the kernel's peak RSS of that process), and the largest sums over the tree at one moment
# of VmRSS and of Pss (proportional set size: pages shared between processes, such as the binary's code,
# counted once in total). Columns: sum_peak = the sum over all processes of their peak RSS (an upper
# bound of the simultaneous total; what "2.8 GiB across its processes" counted), max_total = the highest
# total RSS at one moment, max_pss = the highest total PSS at one moment, server and client_max = the
# coordinator's and the largest client process's peak RSS, wall_s = the whole command (start-up included).
# Round time: medians over the rounds of a run (the first round, which warms up, skipped) of time_round_s,
# time_train_s (sim: the parallel training phase; launch: from opening the round to the last result) and
# time_eval_s (evaluation on the test and training sets, the same code in both runtimes).
# The allocator (mimalloc) asks for transparent huge pages; MIMALLOC_ALLOW_THP=0 in the environment turns
# that off for every process, to see how much of the RSS is huge-page rounding.
# Usage: bench/grpc/launch_memory.sh [RUNS] [ROUNDS] [PROCESSES] [MNIST_DIR]
source "$(dirname "$0")/common.sh"
RUNS="${1:-3}"
ROUNDS="${2:-20}"
PROCS="${3:-10}"
# MNIST_DIR (optional): absolute, or relative to the data root; by default DATA_ROOT/mnist.
SETS=(--set "rounds=$ROUNDS")
if [ -n "${4:-}" ]; then SETS+=(--set "data.dir=$4"); fi

# Runs a command, polling its process tree; writes a JSON line of memory figures to the file $1.
watch_rss() {
    local outfile=$1; shift
    python3 - "$outfile" "$@" <<'PY'
import json, os, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
def status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            d = {}
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "PPid", "Name"):
                    d[k] = v.split()[0] if k != "Name" else v.strip()
            return d
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
def pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []
start = time.time()
root = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
hwm, role, peak_total, peak_pss = {}, {}, 0, 0
while True:
    done = root.poll() is not None
    procs = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            s = status(int(p))
            if s and "PPid" in s:
                procs[int(p)] = s
    tree, frontier = {root.pid}, [root.pid]
    while frontier:
        parent = frontier.pop()
        for pid, s in procs.items():
            if int(s["PPid"]) == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    total = total_pss = 0
    for pid in tree:
        s = procs.get(pid)
        if not s or "VmHWM" not in s:
            continue
        hwm[pid] = max(hwm.get(pid, 0), int(s["VmHWM"]))
        total += int(s["VmRSS"])
        total_pss += pss(pid)
        # Re-read every time: a child's command line is the parent's until it has exec'd.
        args = cmdline(pid)
        if len(args) > 1:
            role[pid] = args[1].decode()
    peak_total = max(peak_total, total)
    peak_pss = max(peak_pss, total_pss)
    if done:
        break
    time.sleep(0.02)
wall = time.time() - start
if root.returncode != 0:
    sys.exit(f"command failed ({root.returncode}): {' '.join(cmd)}")
mib = lambda kib: kib / 1024
clients = [mib(v) for p, v in hwm.items() if role.get(p) == "client"]
json.dump({
    "processes": len(hwm),
    "peak_sum_hwm_mib": mib(sum(hwm.values())),
    "peak_total_rss_mib": mib(peak_total),
    "peak_total_pss_mib": mib(peak_pss),
    "wall_s": wall,
    "server_mib": max([mib(v) for p, v in hwm.items() if role.get(p) == "server"], default=0.0),
    "client_max_mib": max(clients, default=0.0),
    "clients_sum_mib": sum(clients),
}, open(out, "w"))
PY
}

for i in $(seq 1 "$RUNS"); do
    watch_rss "$WORK/sim-$i.json" "$FEDSIM" sim configs/mnist_2nn_iid.toml -q --force --out "$WORK/sim-$i" "${SETS[@]}"
    watch_rss "$WORK/grpc-$i.json" "$FEDSIM" launch configs/mnist_2nn_iid.toml -q --processes "$PROCS" \
        --force --out "$WORK/grpc-$i" "${SETS[@]}"
done

python3 - "$WORK" "$RUNS" "$PROCS" <<'PY'
import json, statistics, sys
w, runs, procs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def mem(run, i): return json.load(open(f"{w}/{run}-{i}.json"))
def per_round(run, i, key):
    rows = [json.loads(l) for l in open(f"{w}/{run}-{i}/metrics.jsonl") if l.strip()][1:]
    return statistics.median(r[key] for r in rows)
med = statistics.median
cols = ["sum_peak_MiB", "max_total_MiB", "max_pss_MiB", "server_MiB", "client_max", "round_s", "train_s",
        "eval_s", "wall_s"]
print(f"{'runtime':<13} {'run':>3} {'procs':>5} " + " ".join(f"{c:>12}" for c in cols))
fmt = lambda row: " ".join(f"{v:>12.4f}" if c.endswith("_s") and c != "wall_s" else f"{v:>12.1f}"
                           for c, v in zip(cols, row))
res = {}
for run, name in (("sim", "sim"), ("grpc", f"launch -p {procs}")):
    rows = []
    for i in range(1, runs + 1):
        m = mem(run, i)
        rows.append((m["peak_sum_hwm_mib"], m["peak_total_rss_mib"], m["peak_total_pss_mib"],
                     m["server_mib"], m["client_max_mib"], per_round(run, i, "time_round_s"),
                     per_round(run, i, "time_train_s"), per_round(run, i, "time_eval_s"), m["wall_s"]))
        print(f"{name:<13} {i:>3} {m['processes']:>5} {fmt(rows[-1])}")
    res[run] = [med(c) for c in zip(*rows)]
    print(f"{name:<13} {'med':>3} {'':>5} {fmt(res[run])}")
s, g = res["sim"], res["grpc"]
print(f"ratio launch/sim (medians): sum of per-process peak RSS {g[0] / s[0]:.2f}, total RSS at one "
      f"moment {g[1] / s[1]:.2f}, total PSS at one moment {g[2] / s[2]:.2f}, round time {g[5] / s[5]:.2f}, "
      f"training phase {g[6] / s[6]:.2f}")
h = {json.load(open(f"{w}/{r}-{i}/summary.json"))["final_model_hash"]
     for r in ("sim", "grpc") for i in range(1, runs + 1)}
print("identical final models (all runs, both runtimes):", len(h) == 1)
PY
