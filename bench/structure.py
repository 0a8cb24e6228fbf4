#!/usr/bin/env python3
"""Checks the house plan: lines per crate (share of the workspace), files over 900 lines outside
tests, and import circles between the modules of each crate.

    python3 bench/structure.py          # prints the report; exit 1 when a rule is broken

Counts every .rs file of a crate (src/, tests/, benches/, examples/); "outside tests" means not under
tests/ and not a tests.rs / testutil.rs module. A module imports another when its text names
`crate::<module>` or `super::<module>` (for submodules of one parent); a circle is two top-level
modules of one crate importing each other, or a longer cycle among them.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRATES = {"fedsim (binary)": "src", "types": "types", "nn": "nn", "data": "data",
          "algorithms": "algorithms", "engine": "engine", "sim": "sim", "proto": "proto",
          "server": "server", "client": "client"}
MAX_FILE, MAX_SHARE = 900, 0.35


def rs_files(d):
    for base, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if x not in ("target", ".git")]
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(base, f)


def lines(path):
    with open(path, encoding="utf-8") as fh:
        return sum(1 for _ in fh)


def crate_files(name, d):
    full = os.path.join(ROOT, d)
    if name == "fedsim (binary)":
        # The binary crate: src/ plus the end-to-end tests/ and benches/ at the top level.
        for sub in ("src", "tests", "benches"):
            yield from rs_files(os.path.join(ROOT, sub))
    else:
        yield from rs_files(full)


def top_module(src_dir, path):
    rel = os.path.relpath(path, src_dir)
    head = rel.split(os.sep)[0]
    return head[:-3] if head.endswith(".rs") else head


def circles(src_dir):
    edges = {}
    for path in rs_files(src_dir):
        mod = top_module(src_dir, path)
        if mod in ("lib", "main"):
            continue
        text = open(path, encoding="utf-8").read()
        text = re.sub(r"(?s)#\[cfg\(test\)\]\s*mod tests \{.*", "", text)
        text = re.sub(r"//.*", "", text)  # doc links and comments are not imports
        for m in re.finditer(r"\bcrate::([a-z_0-9]+)", text):
            target = m.group(1)
            is_module = os.path.exists(os.path.join(src_dir, target + ".rs")) or \
                os.path.isdir(os.path.join(src_dir, target))
            if target != mod and is_module:
                edges.setdefault(mod, set()).add(target)
    found, seen = [], set()

    def dfs(node, stack):
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                cyc = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    found.append(" -> ".join(cyc))
            elif len(stack) < 8:
                dfs(nxt, stack + [nxt])

    for n in sorted(edges):
        dfs(n, [n])
    return found


def main():
    per_crate, big, broken = {}, [], False
    for name, d in CRATES.items():
        total = 0
        for f in crate_files(name, d):
            n = lines(f)
            total += n
            rel = os.path.relpath(f, ROOT)
            is_test = "/tests/" in "/" + rel or rel.startswith("tests/") or \
                os.path.basename(f) in ("tests.rs", "testutil.rs")
            if n > MAX_FILE and not is_test:
                big.append((rel, n))
        per_crate[name] = total
    grand = sum(per_crate.values())
    print(f"{'crate':<18} {'lines':>7} {'share':>6}")
    for name, n in sorted(per_crate.items(), key=lambda kv: -kv[1]):
        share = n / grand
        flag = "  > 35%" if share > MAX_SHARE else ""
        broken |= share > MAX_SHARE
        print(f"{name:<18} {n:>7} {share:>6.1%}{flag}")
    print(f"{'total':<18} {grand:>7}")
    print(f"\nfiles over {MAX_FILE} lines outside tests: {len(big)}")
    for rel, n in big:
        print(f"  {rel}: {n}")
    broken |= bool(big)
    print("\nimport circles between top-level modules:")
    any_circle = False
    for name, d in CRATES.items():
        src = os.path.join(ROOT, d if name == "fedsim (binary)" else os.path.join(d, "src"))
        for c in circles(src):
            any_circle = True
            print(f"  {name}: {c}")
    if not any_circle:
        print("  none")
    broken |= any_circle
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
