"""Shared by the run-table scripts (bench/cifar10_runs_table.py, bench/fedau_cifar10_table.py)."""
from pathlib import Path


def machine(run: Path) -> dict:
    """The `key: value` lines of a run's machine.txt (written by the sweep scripts: cpu, start, end,
    wall_s, bin); empty when the run has none."""
    info = {}
    path = run / "machine.txt"
    if path.exists():
        for line in path.read_text().splitlines():
            k, _, v = line.partition(": ")
            info[k] = v
    return info
