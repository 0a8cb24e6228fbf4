#!/usr/bin/env bash
# FRL vs FedAvg / trimmed mean / Multi-Krum under poisoning (../shared/algorithms.md §5.5, §5.8).
# MNIST, 1000 clients, 25 per round, per-class Dir(1.0), E = 2, B = 8; FRL on the supermask 2NN
# (mask_by = signed), the others on the 2NN; 0%, 10%, 20% malicious clients (ids 0 .. ⌊N·f⌋−1) with the
# matching attack: rank reversal (FRL), scaling x1e5 (FedAvg), AGR-tailored (trimmed mean with oracle
# b, Multi-Krum with oracle f).
#
# Further variants: FRL with mask_by = abs (the reference code's mask, `frlabs`), and the AGR-tailored
# attack with full knowledge (μ, σ over every honest update of the round, λ searched on the real
# aggregate) against trimmed mean (`trmeanfull`) and Multi-Krum (`mkrumfull`).
#
# Usage: bench/frl_experiments.sh [runs|table|plots|all]...   (default: all)
# Environment: ROUNDS (default 500), SEEDS (default "1"), THREADS (worker threads per run, default 2),
# METHODS (default "frl fedavg trmean mkrum frlabs trmeanfull mkrumfull"), FEDSIM_BIN (a prebuilt
# fedsim binary; default: a fresh release build).
# Runs go to runs/frl/<method>_f<pct>_s<seed>/ (skipped when complete); the table to
# bench/results/frl/table.md; plots to docs/img/frl/*.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-500}
seeds=${SEEDS:-"1"}
threads=${THREADS:-2}
methods=${METHODS:-"frl fedavg trmean mkrum frlabs trmeanfull mkrumfull"}
runs=runs/frl
source bench/sweep_lib.sh

run() {
  local out=$runs/$1 cfg=$2
  shift 2
  if [ -f "$out/summary.json" ]; then return; fi
  rm -rf "$out"
  "$bin" sim "$cfg" -q --threads "$threads" --force --out "$out" --set rounds="$rounds" "$@" > /dev/null
  echo "done $out"
}


do_runs() {
  for seed in $seeds; do
    for f in 0 0.1 0.2; do
      pct=$(python3 -c "print(int(round($f*100)))")
      # The attack option for this level (none at 0%).
      a() { if [ "$f" = "0" ]; then :; else echo "--set"; echo "attack={kind=\"$1\", fraction=$f$2}"; fi; }
      for m in $methods; do
        case $m in
          frl) mapfile -t o < <(a rank_reversal ""); run "frl_f${pct}_s$seed" configs/frl/frl_2nn.toml --set seed="$seed" "${o[@]}" ;;
          frlabs) mapfile -t o < <(a rank_reversal ""); run "frlabs_f${pct}_s$seed" configs/frl/frl_2nn.toml --set seed="$seed" --set model.mask_by=\"abs\" "${o[@]}" ;;
          fedavg) mapfile -t o < <(a scaling ""); run "fedavg_f${pct}_s$seed" configs/frl/fedavg_2nn.toml --set seed="$seed" "${o[@]}" ;;
          trmean | trmeanfull)
            # Without an attack the full-knowledge variant is the plain trimmed mean run.
            if [ "$m" = trmeanfull ] && [ "$f" = 0 ]; then continue; fi
            k=""; [ "$m" = trmeanfull ] && k=', knowledge="full"'
            mapfile -t o < <(a agr_tailored "$k")
            run "${m}_f${pct}_s$seed" configs/frl/fedavg_2nn.toml --set seed="$seed" \
              --set 'strategy.aggregator={kind="trimmed_mean", trim="oracle"}' "${o[@]}" ;;
          mkrum | mkrumfull)
            if [ "$m" = mkrumfull ] && [ "$f" = 0 ]; then continue; fi
            k=""; [ "$m" = mkrumfull ] && k=', knowledge="full"'
            mapfile -t o < <(a agr_tailored "$k")
            run "${m}_f${pct}_s$seed" configs/frl/fedavg_2nn.toml --set seed="$seed" \
              --set 'strategy.aggregator={kind="multi_krum", f="oracle"}' "${o[@]}" ;;
          *) echo "unknown method $m" >&2; exit 2 ;;
        esac
      done
    done
  done
}

do_table() {
  mkdir -p bench/results/frl
  # Written to a .partial file first: a failed table never truncates the committed one.
  python3 - "$runs" > bench/results/frl/table.md.partial <<'PY'
import json, os, sys, statistics
runs = sys.argv[1]
rows = {}
for d in sorted(os.listdir(runs)):
    p = os.path.join(runs, d)
    if not os.path.exists(os.path.join(p, 'summary.json')):
        continue
    method, f, seed = d.rsplit('_', 2)
    recs = [json.loads(l) for l in open(os.path.join(p, 'metrics.jsonl'))]
    acc = [r['test_accuracy'] for r in recs if r.get('test_accuracy') is not None]
    n = max(1, sum(r['participants'] for r in recs))
    up = sum(r['bytes_up'] for r in recs) / n
    # Every selected client downloads; only reporters upload (rejected updates are not counted).
    down = sum(r['bytes_down'] for r in recs) / max(1, sum(r['selected'] for r in recs))
    rows.setdefault((method, f), []).append((int(seed[1:]), acc[-1], up, down, len(recs)))
print('| method | malicious | final test accuracy (mean ± std over seeds) | per seed | rounds | bytes up / reporter / round | bytes down / selected client / round |')
print('|---|---|---|---|---|---|---|')
order = {'frl': 0, 'frlabs': 1, 'fedavg': 2, 'trmean': 3, 'trmeanfull': 4, 'mkrum': 5, 'mkrumfull': 6}
for (m, f), v in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 9), int(kv[0][1][1:]))):
    v.sort()
    accs = [a for _, a, _, _, _ in v]
    s = f"{statistics.mean(accs)*100:.2f}%" + (f" ± {statistics.stdev(accs)*100:.2f}" if len(accs) > 1 else "")
    per = " / ".join(f"{a*100:.2f}" for a in accs) + " (seeds " + ", ".join(str(x[0]) for x in v) + ")"
    print(f"| {m} | {f[1:]}% | {s} | {per} | {v[0][4]} | {v[0][2]:,.0f} | {v[0][3]:,.0f} |")
PY
  mv bench/results/frl/table.md.partial bench/results/frl/table.md
  cat bench/results/frl/table.md
}

do_plots() {
  mkdir -p docs/img/frl
  for f in 0 10 20; do
    # The four main methods at one attack level (the variants have their own per-method plots).
    dirs=$(ls -d $runs/{frl,fedavg,trmean,mkrum}_f${f}_s1 2>/dev/null || true)
    [ -n "$dirs" ] && "$bin" plot $dirs --metric test_accuracy -o docs/img/frl/accuracy_f$f.svg
  done
  for m in $methods; do
    dirs=$(ls -d $runs/${m}_f*_s1 2>/dev/null || true)
    [ -n "$dirs" ] && "$bin" plot $dirs --metric test_accuracy -o docs/img/frl/accuracy_$m.svg
  done
}

steps=${*:-all}
for s in $steps; do
  case $s in
    runs) do_runs ;;
    table) do_table ;;
    plots) do_plots ;;
    all) do_runs; do_table; do_plots ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
