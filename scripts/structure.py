#!/usr/bin/env python3
"""Measures the code's shape: long functions, string errors, file and mod.rs sizes,
`use super::*`, and imports between the top-level modules against docs/architecture.md's
layers. `--check` exits 1 when a limit is crossed (the suite runs it).

    scripts/structure.py            # the numbers
    scripts/structure.py --check    # fail on a function over 80 lines, a file over 500, ...
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
LIMITS = {"function": 80, "file": 500, "mod_rs_code": 150, "string_errors": 5}

# The order the code keeps (docs/architecture.md, "Layers"): a module may use the ones
# on its own line or below it, never above. Test modules are not counted.
LAYERS = [
    ["main", "cli", "commands", "app", "supervisor", "error"],
    ["http"],
    ["pipeline", "demo"],
    ["query"],
    ["maintenance", "sync", "catalog"],
    ["sink"],
    ["engine", "decode"],
    ["source"],
    ["metrics"],
    ["config"],
    ["storage", "retry", "failpoint", "report"],
]
LEVEL = {m: i for i, row in enumerate(LAYERS) for m in row}


def top_module(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def code_lines(text: str) -> int:
    return sum(1 for line in strip_comments(text).splitlines() if line.strip())


def long_functions(path: Path, text: str):
    """(name, line, length) of each fn over the limit, by brace matching past strings."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", line)
        if not m:
            continue
        depth, started = 0, False
        for j in range(i, len(lines)):
            body = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j])
            body = re.sub(r"'(\\.|[^'\\])'", "''", body)
            body = re.sub(r"//.*", "", body)
            if not started and ";" in body and "{" not in body:
                break
            for ch in body:
                if ch == "{":
                    depth += 1
                    started = True
                elif ch == "}":
                    depth -= 1
            if started and depth <= 0:
                length = j - i + 1
                if length > LIMITS["function"]:
                    out.append((m.group(5), i + 1, length))
                break
    return out


def imports(path: Path, text: str):
    """Top-level crate modules a file's non-test code names (`crate::x` paths)."""
    if path.name == "tests.rs":
        return set()
    code = strip_comments(text).split("#[cfg(test)]")[0]
    return set(re.findall(r"\bcrate::(\w+)", code))


def main() -> int:
    check = "--check" in sys.argv
    files = sorted(SRC.rglob("*.rs"))
    problems = []
    string_errors = []
    edges = {}
    for path in files:
        text = path.read_text()
        rel = path.relative_to(ROOT)
        n = len(text.splitlines())
        if n > LIMITS["file"]:
            problems.append(f"{rel}: {n} lines (limit {LIMITS['file']})")
        if path.name == "mod.rs":
            code = code_lines(text)
            if code > LIMITS["mod_rs_code"]:
                problems.append(f"{rel}: {code} lines of code in a mod.rs (limit {LIMITS['mod_rs_code']})")
        for name, line, length in long_functions(path, text):
            problems.append(f"{rel}:{line}: fn {name} is {length} lines (limit {LIMITS['function']})")
        for k, line in enumerate(text.splitlines(), 1):
            code = re.sub(r"//.*", "", line)
            if re.search(r"Result<[^;{}]*,\s*String\s*>", code):
                string_errors.append(f"{rel}:{k}")
            if re.search(r"use\s+super::\*", code) and "mod tests" not in text[: text.find(line)][-400:]:
                problems.append(f"{rel}:{k}: `use super::*` outside a test module")
        me = top_module(path)
        for dep in imports(path, text) - {me}:
            edges.setdefault(me, set()).add(dep)
    if len(string_errors) > LIMITS["string_errors"]:
        problems.append(f"{len(string_errors)} `Result<_, String>` (limit {LIMITS['string_errors']}): "
                        + ", ".join(string_errors))
    for me, deps in sorted(edges.items()):
        for dep in sorted(deps):
            if me in LEVEL and dep in LEVEL and LEVEL[dep] < LEVEL[me]:
                problems.append(f"src/{me} imports crate::{dep}, a layer above it")
    loops = find_loops(edges)
    for loop in loops:
        problems.append("import loop: " + " -> ".join(loop))
    print(f"{len(files)} files, {len(string_errors)} Result<_, String>, {len(loops)} loops")
    for p in problems:
        print(p)
    if check and problems:
        return 1
    return 0


def find_loops(edges):
    """Module cycles (each reported once, from its smallest name)."""
    loops, seen = [], set()

    def walk(start, node, path):
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    loops.append(path + [start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return loops


if __name__ == "__main__":
    sys.exit(main())
