#!/usr/bin/env python3
"""Lists import circles between sibling modules of every crate target.

A crate target is src/lib.rs, src/main.rs, src/bin/*.rs or tests/*.rs of a
package (every Cargo.toml below the repository). Its modules are found by
following `mod name;` from the target's root file. Module A depends on
module B when A's code names `crate::B...` or `super::...B...` (in a `use`
or in a path). Each dependency is lifted to the two sibling modules under
the pair's common parent, so `a::x -> b` and `b -> a::y` make the circle
`a <-> b`. A child naming its parent (or the parent naming a child, as
`mod.rs` re-exports do) is normal and not reported. Test modules
(`#[cfg(test)] mod ...`) are left out.

Run from anywhere in the repository. Exits 1 when a circle exists, listing each as `crate: a <-> b`.
"""

import re
import subprocess
import sys
from pathlib import Path

MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", re.M)
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*[;{]")
USE_STMT = re.compile(r"\buse\s+([^;]+);", re.S)
PATH = re.compile(r"\b((?:crate|super)(?:\s*::\s*\w+)+)")


def strip(text):
    """The code without comments, strings, test modules and `pub(in ...)`."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"pub\(in [^)]*\)", "pub", text)
    test = TEST_MOD.search(text)
    if test:
        text = text[: test.start()]
    return text


def expand(tree):
    """The paths of a use tree: `a::{b, c::d}` gives `a::b`, `a::c::d`."""
    tree = re.sub(r"\s+", "", tree)
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix, inner, rest = tree[:start], tree[start + 1 : i], tree[i + 1 :]
                parts, level, cur = [], 0, ""
                for c in inner:
                    if c == "," and level == 0:
                        parts.append(cur)
                        cur = ""
                        continue
                    level += (c == "{") - (c == "}")
                    cur += c
                parts.append(cur)
                out = []
                for p in parts:
                    if p:
                        out.extend(expand(prefix + p + rest))
                return out
    return [tree.split(" as ")[0]]


def modules(root):
    """{module path tuple: file} reachable from a target's root file."""
    found = {(): root}
    todo = [((), root, root.parent)]
    while todo:
        path, file, dir_ = todo.pop()
        code = strip(file.read_text())
        for name in MOD_DECL.findall(code):
            for cand in (dir_ / f"{name}.rs", dir_ / name / "mod.rs"):
                if cand.exists():
                    child = path + (name,)
                    found[child] = cand
                    sub = cand.parent if cand.name == "mod.rs" else cand.with_suffix("")
                    todo.append((child, cand, sub))
                    break
    return found


def resolve(known, here, path):
    """The module a `crate::...` / `super::...` path names, from `here`."""
    parts = [p for p in re.sub(r"\s+", "", path).split("::") if p]
    if parts[0] == "crate":
        base, parts = (), parts[1:]
    else:
        base = here
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    target = base
    for p in parts:
        if target + (p,) in known:
            target = target + (p,)
        else:
            break
    return target


def circles(root):
    known = modules(root)
    edges = set()
    for here, file in known.items():
        code = strip(file.read_text())
        paths = [p for use in USE_STMT.findall(code) for p in expand(use)]
        paths += PATH.findall(USE_STMT.sub("", code))
        for p in paths:
            if not re.match(r"(crate|super)\b", p):
                continue
            there = resolve(known, here, p)
            n = 0
            while n < min(len(here), len(there)) and here[n] == there[n]:
                n += 1
            if n < len(here) and n < len(there):
                edges.add((here[: n + 1], there[: n + 1]))
    return sorted(
        (a, b) for a, b in edges if (b, a) in edges and a < b
    )


def targets(repo):
    files = subprocess.run(
        ["git", "ls-files", "*Cargo.toml"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    for manifest in files:
        pkg = (repo / manifest).parent
        roots = [pkg / "src" / "lib.rs", pkg / "src" / "main.rs"]
        roots += sorted((pkg / "src" / "bin").glob("*.rs"))
        roots += sorted((pkg / "tests").glob("*.rs"))
        roots += sorted((pkg / "tests").glob("*/main.rs"))
        for r in roots:
            if r.exists():
                yield r


def main():
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
    )
    repo = Path(top.stdout.strip())
    found = 0
    for root in targets(repo):
        for a, b in circles(root):
            found += 1
            name = root.relative_to(repo)
            print(f"{name}: {'::'.join(a)} <-> {'::'.join(b)}")
    if found:
        print(f"{found} import circle(s) between sibling modules", file=sys.stderr)
        return 1
    print("no import circles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
