#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a circle.

Reads every `crate::…` and `super::…` path in the code of a crate's `src/` (comments,
doc links and `#[cfg(test)]` modules aside: tests may reach anywhere), maps
each to the file of the module it names, and looks for a cycle in that
file-level graph. A module's own submodules are not edges: `mod.rs` may
re-export them.

    scripts/check_module_cycles.py shared/core/src shared/src
"""

import re
import sys
from pathlib import Path

USE_TREE = re.compile(r"\b(crate|(?:super::)+)(?:::)?((?:[A-Za-z_][A-Za-z0-9_]*::)*)(\{|[A-Za-z_][A-Za-z0-9_]*)")


def module_of(root: Path, path: Path) -> tuple:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def strip(source: str) -> str:
    """Code only: no comments, no string literals, no #[cfg(test)] items."""
    source = re.sub(r"//[^\n]*", "", source)
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    source = re.sub(r'"(?:\\.|[^"\\])*"', '""', source)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+\w+\s*(;|\{)", source):
        if m.start() < i:
            continue
        out.append(source[i : m.start()])
        if m.group(1) == ";":
            i = m.end()
            continue
        depth, j = 1, m.end()
        while j < len(source) and depth:
            depth += {"{": 1, "}": -1}.get(source[j], 0)
            j += 1
        i = j
    out.append(source[i:])
    return "".join(out)


def expand(source: str, start: int) -> list:
    """The paths of a `crate::a::{b, c::{d}}` group starting at `start` ('{')."""
    depth, j = 0, start
    while True:
        depth += {"{": 1, "}": -1}.get(source[j], 0)
        j += 1
        if depth == 0:
            break
    body = source[start + 1 : j - 1]
    items, depth, current = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        current += ch
    items.append(current)
    paths = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        head = re.match(r"((?:[A-Za-z_]\w*::)*)(\{)?", item)
        if head.group(2):
            prefix = head.group(1).split("::")[:-1]
            paths += [prefix + sub for sub in expand(item, head.end() - 1)]
        else:
            paths.append(re.split(r"\s+as\s+", item)[0].split("::"))
    return paths


def graph(root: Path) -> dict:
    files = {module_of(root, p): p for p in root.rglob("*.rs")}
    edges = {m: set() for m in files}
    for module, path in files.items():
        code = strip(path.read_text())
        # `super::` is relative to the module that holds this file's module.
        here = list(module)
        for m in USE_TREE.finditer(code):
            base = [] if m.group(1) == "crate" else here[: len(here) - m.group(1).count("super")]
            prefix = base + [p for p in m.group(2).split("::") if p]
            paths = [prefix + s for s in expand(code, m.start(3))] if m.group(3) == "{" else [prefix + [m.group(3)]]
            for target in paths:
                # The longest prefix that is a module file is what is imported.
                for n in range(len(target), 0, -1):
                    if tuple(target[:n]) in files:
                        found = tuple(target[:n])
                        if found != module and found[: len(module)] != module:
                            edges[module].add(found)
                        break
    return edges


def cycle(edges: dict):
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def main(roots):
    failed = False
    for root in map(Path, roots):
        edges = graph(root)
        found = cycle(edges)
        names = lambda c: " → ".join("::".join(m) or "lib" for m in c)
        if found:
            print(f"{root}: module circle: {names(found)}", file=sys.stderr)
            print("  move what both sides need down to a module both can import (docs/design.md, Layers)", file=sys.stderr)
            failed = True
        else:
            print(f"{root}: {len(edges)} modules, {sum(map(len, edges.values()))} imports, no circle", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["shared/core/src", "shared/src"]))
