#!/usr/bin/env python3
"""Fails when modules of a crate import each other in a cycle.

For every crate under crates/, reads each module's `crate::NAME` paths (outside comments and
`#[cfg(test)]` code) as edges between top-level modules, and reports every cycle. Run by
.ci/run; docs/DESIGN.md states the one-way order this keeps.
"""
import os
import re
import sys


def edges(src):
    deps = {}
    for dirpath, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            module = os.path.relpath(path, src)[:-3].replace("/mod", "").split("/")[0]
            with open(path, encoding="utf-8") as f:
                text = f.read().split("#[cfg(test)]")[0]
            code = "\n".join(l for l in text.splitlines() if not l.strip().startswith("//"))
            for dep in set(re.findall(r"crate::([a-z_][a-z0-9_]*)", code)):
                if dep != module:
                    deps.setdefault(module, set()).add(dep)
    return deps


def cycles(deps):
    found = set()
    def walk(node, stack):
        for dep in sorted(deps.get(node, ())):
            if dep in stack:
                cycle = stack[stack.index(dep):]
                key = frozenset(cycle)
                if key not in found:
                    found.add(key)
                    yield cycle + [dep]
            else:
                yield from walk(dep, stack + [dep])
    for module in sorted(deps):
        yield from walk(module, [module])


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "crates"
    bad = 0
    for crate in sorted(os.listdir(root)):
        src = os.path.join(root, crate, "src")
        if not os.path.isdir(src):
            continue
        for cycle in cycles(edges(src)):
            print(f"{crate}: module cycle {' -> '.join(cycle)}")
            bad += 1
    print(f"module cycles: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
