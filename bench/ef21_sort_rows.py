#!/usr/bin/env python3
"""Writes a LIBSVM file with its rows sorted by squared norm ||a_j||^2, ascending; ties keep file order
(a stable sort). Used for the w8a L_AM experiment of algorithms.md §4.9: a contiguous split of the sorted file
gives the heterogeneous smoothness constants of the table's "w8a, sorted" row (checked by the unit test
strategy::ef21::tests::step_size_table_reproduced_from_the_libsvm_files, which sorts the same way).

Usage: ef21_sort_rows.py IN(.gz) OUT(.gz)
"""
import gzip
import sys


def open_text(path, mode):
    return gzip.open(path, mode + "t") if path.endswith(".gz") else open(path, mode)


def sq_norm(line):
    total = 0.0
    for tok in line.split("#", 1)[0].split()[1:]:
        v = float(tok.split(":", 1)[1])
        total += v * v
    return total


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open_text(src, "r") as f:
        rows = [l for l in f if l.split("#", 1)[0].strip()]
    rows.sort(key=sq_norm)  # stable
    with open_text(dst, "w") as f:
        for l in rows:
            f.write(l if l.endswith("\n") else l + "\n")
    print(f"{dst}: {len(rows)} rows sorted by squared norm")


if __name__ == "__main__":
    main()
