#!/usr/bin/env python3
"""Import cycles between a crate's modules.

For every crate under crates/*/src, the modules of each parent (the
crate root's top-level modules; a folder module's submodules) are the
nodes of a graph, and `crate::x`, `super::x` and `use` paths are its edges:
module A depends on sibling B when code anywhere inside A names a path
into B (directly, or through a name the parent re-exports from B). A
parent itself (lib.rs, main.rs, a mod.rs) is no node: it declares its
children, so naming them is expected. Every cycle found is printed with
one place per edge; the exit code is 1 if there is any.

    python3 .ci/module-cycles.py [CRATE_DIR ...]   # default: crates/*
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """The source with comments and string/char literals blanked out
    (newlines kept, so offsets still give line numbers)."""
    out = []
    i, n = 0, len(text)
    blank = lambda s: re.sub(r"[^\n]", " ", s)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not re.match(r"\w", text[i - 1])):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i : j + 1]))
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\.[^']*|[^\\'])'", text[i:])):
            out.append(blank(m.group(0)))
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text)


class Module:
    def __init__(self, path, file):
        self.path = path  # ("a", "b") for crate::a::b
        self.file = file
        self.children = {}  # name -> Module
        self.reexports = {}  # name a `use child::..` brings in -> child

    def walk(self):
        yield self
        for child in self.children.values():
            yield from child.walk()


def child_file(parent_file, parent_is_dir_owner, name):
    """Where `mod name;` of parent_file lives."""
    base = parent_file.parent if parent_is_dir_owner else parent_file.parent / parent_file.stem
    for candidate in (base / f"{name}.rs", base / name / "mod.rs"):
        if candidate.exists():
            return candidate
    return None


def owns_dir(file, is_root):
    return is_root or file.name == "mod.rs"


def use_tree_leaves(group):
    """The names a use tree's group (`a::{B, c as D}`) brings in, each with
    the first segment of its path."""
    tokens = re.findall(rf"{IDENT}|::|[{{}},*]", group)
    leaves, stack, current = [], [], []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "{":
            stack.append(list(current))
        elif t == "}":
            current = stack.pop() if stack else []
        elif t == ",":
            current = list(stack[-1]) if stack else []
        elif t == "::":
            pass
        elif t == "as":
            i += 1
            if i < len(tokens) and leaves:
                leaves[-1] = (leaves[-1][0], tokens[i])
        elif t != "*":
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            current.append(t)
            if nxt != "::":
                leaves.append((current[0], t))
        i += 1
    return leaves


def build(file, path, is_root):
    module = Module(path, file)
    text = strip(file.read_text(encoding="utf-8"))
    inline = inline_ranges(text)
    for m in re.finditer(rf"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+({IDENT})\s*;", text):
        name = m.group(1)
        found = child_file(file, owns_dir(file, is_root), name)
        if found:
            module.children[name] = build(found, path + (name,), False)
    for m in re.finditer(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]*);", text):
        if any(a <= m.start() < b for a, b, _ in inline):
            continue
        tree = re.sub(r"^(self::)", "", m.group(1).strip())
        for first, leaf in use_tree_leaves(tree):
            if first in module.children and leaf != "self":
                module.reexports[leaf] = first
    return module


def inline_ranges(text):
    """(start, end, name) of every inline `mod name { ... }`."""
    ranges = []
    for m in re.finditer(rf"\bmod\s+({IDENT})\s*\{{", text):
        open_at = m.end() - 1
        ranges.append((open_at, matching_brace(text, open_at), m.group(1)))
    return ranges


def references(module, crate_root):
    """(absolute path, line) for every crate:: / super:: path in the file."""
    text = strip(module.file.read_text(encoding="utf-8"))
    inline = inline_ranges(text)
    for m in re.finditer(r"\b(crate|super)((?:\s*::\s*super)*)\s*::\s*", text):
        at = m.start()
        here = module.path + tuple(name for a, b, name in inline if a < at < b)
        if m.group(1) == "crate":
            base = ()
        else:
            ups = 1 + m.group(2).count("super")
            base = here[: max(len(here) - ups, 0)]
        rest = text[m.end() :]
        line = text.count("\n", 0, at) + 1
        if rest.startswith("{"):
            group = rest[: matching_brace(rest, 0) + 1]
            for first, leaf in group_paths(group[1:-1]):
                yield base + first, here, line
        else:
            segs = re.match(rf"{IDENT}(?:\s*::\s*{IDENT})*", rest)
            if segs:
                yield base + tuple(re.split(r"\s*::\s*", segs.group(0))), here, line


def group_paths(inner):
    """The leading paths of a `{a::b, C, d::{E, F}}` group's elements."""
    depth, start, parts = 0, 0, []
    for i, c in enumerate(inner):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    for part in parts:
        segs = re.match(rf"\s*({IDENT}(?:\s*::\s*{IDENT})*)", part)
        if segs:
            path = tuple(s for s in re.split(r"\s*::\s*", segs.group(1)) if s != "self")
            if path:
                yield path, path[-1]


def resolve_child(parent, target):
    """The child of `parent` that absolute path `target` points into."""
    depth = len(parent.path)
    if target[:depth] != parent.path or len(target) <= depth:
        return None
    name = target[depth]
    if name in parent.children:
        return name
    return parent.reexports.get(name)


def cycles(nodes, edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def check_crate(crate_dir):
    found = []
    for root_name in ("lib.rs", "main.rs"):
        root_file = crate_dir / "src" / root_name
        if not root_file.exists():
            continue
        root = build(root_file, (), True)
        refs = []
        for module in root.walk():
            for target, here, line in references(module, root):
                refs.append((module.file, line, here, target))
        for parent in root.walk():
            if not parent.children:
                continue
            edges = {}
            for file, line, here, target in refs:
                source = resolve_child(parent, here) if here[: len(parent.path)] == parent.path else None
                if source is None or len(here) <= len(parent.path):
                    continue
                source = here[len(parent.path)]
                dest = resolve_child(parent, target)
                if dest is None or dest == source:
                    continue
                edges.setdefault(source, {}).setdefault(dest, (file, line))
            for comp in cycles(parent.children.keys(), edges):
                where = "::".join(("crate",) + parent.path)
                lines = [f"{crate_dir.name}: cycle among {where}'s modules: {' <-> '.join(comp)}"]
                for a in comp:
                    for b in comp:
                        if b in edges.get(a, {}):
                            file, line = edges[a][b]
                            lines.append(f"    {a} -> {b}  ({file}:{line})")
                found.append("\n".join(lines))
    return found


def main(args):
    crates = [Path(a) for a in args] or sorted(p for p in Path("crates").glob("*") if (p / "src").is_dir())
    problems = []
    for crate in crates:
        problems.extend(check_crate(crate))
    for problem in problems:
        print(problem)
    if not problems:
        print(f"no module cycles in {len(crates)} crate(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
