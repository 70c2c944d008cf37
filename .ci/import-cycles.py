#!/usr/bin/env python3
"""Fails when a Rust module imports a module of the same crate that imports it back.

Reads every crate's `src/` below the repository root (test modules excluded), resolves
`use crate::…` and `use super::…` paths to the module files they name, and prints each
pair of files that import each other. Exit status 1 when there is one.
"""
import itertools
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
USE = re.compile(r"\buse\s+(crate|super)((?:::\w+)+)")
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(pub(\(\w+\))?\s+)?mod\s+\w+\s*\{")


def module_path(path, src):
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def crate_pairs(src):
    files = {}
    for d, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                files[module_path(p, src)] = p
    imports = {}
    for mod, path in files.items():
        text = open(path, encoding="utf-8").read()
        m = TEST_MOD.search(text)
        if m:
            text = text[: m.start()]
        targets = set()
        for base, rest in USE.findall(text):
            parts = rest.strip(":").split("::")
            # `super` is the parent module whether the file is `x.rs` or `x/mod.rs`.
            full = parts if base == "crate" else list(mod[:-1]) + parts
            for k in range(len(full), 0, -1):
                key = tuple(full[:k])
                if key in files:
                    # A folder module and its own children are one unit: `mod.rs` declares
                    # them and they may use its items.
                    related = key[: len(mod)] == mod or mod[: len(key)] == key
                    if not related:
                        targets.add(key)
                    break
        imports[mod] = targets
    for a, b in itertools.combinations(sorted(files), 2):
        if b in imports[a] and a in imports[b]:
            yield files[a], files[b]


def main():
    found = []
    for crate in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, crate, "src")
        if os.path.isdir(src):
            found += crate_pairs(src)
    for a, b in found:
        print(f"{os.path.relpath(a, ROOT)} <-> {os.path.relpath(b, ROOT)}")
    print(f"import cycles between files: {len(found)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
