#!/usr/bin/env bash
# EF21 (Top-1) against uncompressed GD on a bandwidth-limited uplink: virtual seconds to ‖∇f‖² ≤ 1e−7
# (issue #17). configs/ef21/{phishing,a9a}_top1.toml at each method's best multiplier from
# docs/EXPERIMENTS.md (EF21 ×16 on phishing, ×128 on a9a; GD γ = 1/L), every client with the same
# profile: 10 ms latency, 1 MB/s download, 1e5 samples/s of gradient work, and an uplink of 1 kB/s,
# 10 kB/s or 100 kB/s. A round lasts latency + broadcast/download + local gradient + exact encoded
# update/upload (all 20 clients report, so the slowest one sets it; here they differ only in data size).
# Usage: bench/ef21_virtual_clock.sh   Results: runs/ef21_clock/<data>/<method>_up<bps>/, table in
# docs/ef21_virtual_clock.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/sweep_lib.sh
for ds in phishing a9a; do
  case $ds in
    phishing) m21=16; r21=600; rgd=40 ;;
    a9a) m21=128; r21=1200; rgd=500 ;;
  esac
  for up in 1e3 1e4 1e5; do
    system="system={samples_per_s=1e5, download_bps=1e6, upload_bps=$up, latency_s=0.01}"
    out=runs/ef21_clock/$ds/ef21_up$up
    [ -f "$out/summary.json" ] || $bin sim "configs/ef21/${ds}_top1.toml" -q --force --out "$out" \
      --set rounds=$r21 --set eval.every=5 --set strategy.multiplier=$m21 --set "$system"
    out=runs/ef21_clock/$ds/gd_up$up
    [ -f "$out/summary.json" ] || $bin sim "configs/ef21/${ds}_top1.toml" -q --force --out "$out" \
      --set rounds=$rgd --set eval.every=1 --set 'strategy={kind="gd", multiplier=1}' --set "$system"
  done
done
python3 - > docs/ef21_virtual_clock.md.partial <<'PY'
import json
from pathlib import Path
root = Path("runs/ef21_clock")
print("| data set | uplink (B/s) | method | rounds to 1e−7 | bytes up per client-round | virtual s per round | virtual s to 1e−7 | GD / EF21 |")
print("|---|---|---|---|---|---|---|---|")
for ds in ["phishing", "a9a"]:
    for up in ["1e3", "1e4", "1e5"]:
        t = {}
        rows = []
        for m in ["ef21", "gd"]:
            rs = [json.loads(l) for l in (root / ds / f"{m}_up{up}" / "metrics.jsonl").read_text().splitlines()]
            hit = next((r for r in rs if r.get("grad_norm_sq") is not None and r["grad_norm_sq"] <= 1e-7), None)
            # Per-round figures past round 1 (EF21's first upload carries the dense g_i^0).
            later = rs[1:] if len(rs) > 1 else rs
            per_round = sum(r["virtual_round_s"] for r in later) / len(later)
            up_bytes = sum(r["bytes_up"] / r["participants"] for r in later) / len(later)
            t[m] = hit["virtual_time_s"] if hit else None
            rows.append((m, hit["round"] if hit else "not reached", up_bytes, per_round, t[m]))
        for m, r, b, p, v in rows:
            ratio = f"{t['gd'] / t['ef21']:.1f}×" if m == "gd" and t["gd"] and t["ef21"] else ""
            vs = f"{v:.2f}" if v is not None else "not reached"
            name = "EF21 Top-1" if m == "ef21" else "GD"
            print(f"| {ds} | {up} | {name} | {r} | {b:.0f} | {p:.4f} | {vs} | {ratio} |")
PY
mv docs/ef21_virtual_clock.md.partial docs/ef21_virtual_clock.md
cat docs/ef21_virtual_clock.md
