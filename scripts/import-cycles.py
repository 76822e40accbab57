#!/usr/bin/env python3
"""Find import circles between the modules of each crate in the workspace.

Why: a module that imports the module which starts or owns it (directly or around a loop) cannot
be understood, tested or moved on its own. This script makes such circles visible so they can be
kept out.

For each crate it follows `mod` declarations from every crate root (src/lib.rs, src/main.rs,
src/bin/*.rs) and builds a graph whose nodes are module files. Module A depends on module B when
A's file names B in code: `use crate::...`, `use super::...`, `use self::...`, paths such as
`crate::b::f()` or `super::Item`, and paths that start with a child module's name. A path is
resolved to the deepest module file it names; an item of a module (for example `super::Item`)
resolves to that module's file, so a submodule using its parent through `super::` is an edge to
the parent. Re-exports (`pub use`, `pub(crate) use`) are aliases, not edges: a path through one
resolves to the module that defines the item. `mod` declarations are not edges.

Ignored: comments, string and char literals, items under `#[cfg(test)]` (such as
`#[cfg(test)] mod tests { ... }` and `#[cfg(test)] mod tests;`), files under a `tests/`
directory, and files under `#![cfg(test)]`.

Prints every strongly connected component of more than one module, with one edge of each
member into the circle, and exits 1 if there is any; otherwise prints
"no import circles in N modules of M crates" and exits 0.

Usage: scripts/import-cycles.py [CRATE_DIR ...]   (default: the workspace members)
"""

import os
import re
import sys

# ----- lexing ------------------------------------------------------------------------------------


def strip_comments_and_literals(src):
    """Replaces comments and string/char literals by spaces, keeping newlines (line numbers)."""
    out = []
    i = 0
    n = len(src)

    def blank(text):
        return "".join("\n" if c == "\n" else " " for c in text)

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(src[i:j]))
            i = j
        elif src.startswith("/*", i):
            depth = 0
            j = i
            while j < n:
                if src.startswith("/*", j):
                    depth += 1
                    j += 2
                elif src.startswith("*/", j):
                    depth -= 1
                    j += 2
                    if depth == 0:
                        break
                else:
                    j += 1
            out.append(blank(src[i:j]))
            i = j
        elif re.match(r'(b|c)?r#*"', src[i:i + 260]) and not _ident_before(src, i):
            m = re.match(r'(b|c)?r(#*)"', src[i:])
            close = '"' + m.group(2)
            j = src.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            out.append(blank(src[i:j]))
            i = j
        elif (c == '"' or (c in "bc" and src.startswith('"', i + 1))) and not _ident_before(src, i):
            j = i + (1 if c == '"' else 2)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j = min(n, j + 1)
            out.append(blank(src[i:j]))
            i = j
        elif c == "'" or (c == "b" and src.startswith("'", i + 1) and not _ident_before(src, i)):
            start = i
            j = i + (1 if c == "'" else 2)
            # A char literal ('x', '\n', '\u{..}', b'x'); otherwise a lifetime or label.
            m = re.match(r"(\\u\{[0-9a-fA-F_]*\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'\n])'", src[j:j + 12])
            if m:
                j += m.end()
                out.append(blank(src[start:j]))
                i = j
            else:
                out.append(src[i:j])
                i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _ident_before(src, i):
    return i > 0 and (src[i - 1].isalnum() or src[i - 1] == "_")


TOKEN = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*|::|#!?\[|[{}()\[\];,*]|\S")


def tokenize(text):
    """(token, line) pairs of already stripped source."""
    toks = []
    for lineno, line in enumerate(text.split("\n"), 1):
        for m in TOKEN.finditer(line):
            t = m.group(0)
            if t.startswith("r#") and len(t) > 2:
                t = t[2:]
            toks.append((t, lineno))
    return toks


def is_ident(t):
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t) is not None


# ----- use trees ---------------------------------------------------------------------------------


def expand_use_tree(toks):
    """Expands `a::{b, c::d as e, f::*}` into (path, alias) pairs."""
    pos = 0

    def parse(prefix):
        nonlocal pos
        results = []
        path = list(prefix)
        while pos < len(toks):
            t = toks[pos]
            if t == "{":
                pos += 1
                while pos < len(toks) and toks[pos] != "}":
                    results.extend(parse(path))
                    if pos < len(toks) and toks[pos] == ",":
                        pos += 1
                pos += 1
                return results
            if t == "*":
                pos += 1
                results.append((path + ["*"], None))
                return results
            if t == "::":
                pos += 1
                continue
            if t in (",", "}"):
                break
            if is_ident(t):
                path.append(t)
                pos += 1
                if pos < len(toks) and toks[pos] == "as":
                    alias = toks[pos + 1] if pos + 1 < len(toks) else None
                    pos += 2
                    results.append((path, alias))
                    return results
                continue
            pos += 1
        if len(path) > len(prefix):
            results.append((path, path[-1]))
        elif path and path[-1] == "self":
            results.append((path[:-1], None))
        return results

    out = []
    while pos < len(toks):
        out.extend(parse([]))
        if pos < len(toks) and toks[pos] in (",", "}"):
            pos += 1
    # `a::b::{self}` yields a::b::self; normalise.
    norm = []
    for path, alias in out:
        if len(path) > 1 and path[-1] == "self":
            path = path[:-1]
            alias = alias if alias != "self" else path[-1]
        norm.append((path, alias))
    return norm


# ----- one file ----------------------------------------------------------------------------------


class FileInfo:
    """What one module file declares and references."""

    def __init__(self):
        self.child_files = []  # names of `mod x;` declared at file level (non-test)
        self.inline_mods = set()  # tuples: inline module paths relative to the file module
        self.refs = []  # (scope tuple, path list, line, is_use)
        self.reexports = []  # (scope tuple, path list, alias)
        self.test_only = False


def scan_file(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = strip_comments_and_literals(f.read())
    toks = tokenize(text)
    info = FileInfo()
    n = len(toks)
    i = 0
    depth = 0
    scope = []  # stack of (inline module name, depth at which its block closes)
    pending_test = False

    def cur_scope():
        return tuple(name for name, _ in scope)

    def skip_attr(j):
        """Returns the index after the attribute starting at j (`#[` or `#![`)."""
        d = 0
        while j < n:
            t = toks[j][0]
            if t in ("#[", "#![", "["):
                d += 1
            elif t == "]":
                d -= 1
                if d == 0:
                    return j + 1
            j += 1
        return n

    def skip_item(j):
        """Skips one item (up to `;` at depth 0 or the end of its first brace block)."""
        d = 0
        while j < n:
            t = toks[j][0]
            if t in ("(", "["):
                d += 1
            elif t in (")", "]"):
                d -= 1
            elif t == ";" and d == 0:
                return j + 1
            elif t == "{":
                bd = 0
                while j < n:
                    if toks[j][0] == "{":
                        bd += 1
                    elif toks[j][0] == "}":
                        bd -= 1
                        if bd == 0:
                            return j + 1
                    j += 1
                return n
            j += 1
        return n

    while i < n:
        t, line = toks[i]
        if t in ("#[", "#!["):
            end = skip_attr(i)
            attr = "".join(x for x, _ in toks[i:end])
            if re.fullmatch(r"#!?\[cfg\(test\)\]", attr):
                if t == "#![" and depth == 0 and not scope:
                    info.test_only = True
                    return info
                pending_test = True
            i = end
            continue
        if pending_test:
            pending_test = False
            i = skip_item(i)
            continue
        if t == "{":
            depth += 1
            i += 1
            continue
        if t == "}":
            depth -= 1
            while scope and scope[-1][1] > depth:
                scope.pop()
            i += 1
            continue
        if t == "mod" and i + 1 < n and is_ident(toks[i + 1][0]):
            name = toks[i + 1][0]
            nxt = toks[i + 2][0] if i + 2 < n else ""
            if nxt == ";":
                if not scope:
                    info.child_files.append(name)
                i += 3
                continue
            if nxt == "{":
                scope.append((name, depth + 1))
                info.inline_mods.add(cur_scope())
                depth += 1
                i += 3
                continue
        if t == "use":
            # Visibility before `use` makes it a re-export.
            k = i - 1
            vis = False
            if k >= 0 and toks[k][0] == "pub":
                vis = True
            elif k >= 0 and toks[k][0] == ")":
                m = k
                while m >= 0 and toks[m][0] != "(":
                    m -= 1
                vis = m >= 1 and toks[m - 1][0] == "pub"
            j = i + 1
            while j < n and toks[j][0] != ";":
                j += 1
            tree = [x for x, _ in toks[i + 1:j]]
            if tree and tree[0] == "::":
                tree = tree[1:]  # `use ::extern_crate` never names a local module
                tree = ["::extern"] + tree
            for p, alias in expand_use_tree(tree):
                if not p or p[0] == "::extern":
                    continue
                if vis and alias and p[-1] != "*":
                    info.reexports.append((cur_scope(), p, alias))
                elif vis and p[-1] == "*":
                    info.reexports.append((cur_scope(), p, "*"))
                else:
                    info.refs.append((cur_scope(), p, line, True))
            i = j + 1
            continue
        if is_ident(t) and i + 1 < n and toks[i + 1][0] == "::":
            prev = toks[i - 1][0] if i > 0 else ""
            if prev != "::" and not prev.startswith("$"):
                p = [t]
                j = i + 1
                while j + 1 < n and toks[j][0] == "::" and is_ident(toks[j + 1][0]):
                    p.append(toks[j + 1][0])
                    j += 2
                info.refs.append((cur_scope(), p, line, False))
                i = j
                continue
        i += 1
    return info


# ----- one crate ---------------------------------------------------------------------------------


class Module:
    def __init__(self, path, file, root_name):
        self.path = path  # tuple of segments from the crate root
        self.file = file
        self.root_name = root_name
        self.info = None


def child_file(parent_file, parent_is_dir_owner, name):
    """Where `mod name;` in parent_file lives."""
    d = os.path.dirname(parent_file)
    if not parent_is_dir_owner:
        stem = os.path.splitext(os.path.basename(parent_file))[0]
        d = os.path.join(d, stem)
    for cand in (os.path.join(d, name + ".rs"), os.path.join(d, name, "mod.rs")):
        if os.path.isfile(cand):
            return cand
    return None


def in_tests_dir(file, src):
    rel = os.path.relpath(file, src)
    return "tests" in rel.split(os.sep)[:-1]


def load_tree(src, root_file, root_name):
    """All module files reachable from one crate root: {module path tuple: Module}."""
    mods = {}
    stack = [((), root_file, True)]
    while stack:
        mpath, file, owner = stack.pop()
        if in_tests_dir(file, src):
            continue
        m = Module(mpath, file, root_name)
        m.info = scan_file(file)
        if m.info.test_only:
            continue
        mods[mpath] = m
        for name in m.info.child_files:
            cf = child_file(file, owner, name)
            if cf is None:
                continue
            stack.append((mpath + (name,), cf, os.path.basename(cf) == "mod.rs"))
    return mods


def crate_roots(crate_dir):
    src = os.path.join(crate_dir, "src")
    roots = []
    for name in ("lib.rs", "main.rs"):
        f = os.path.join(src, name)
        if os.path.isfile(f):
            roots.append((f, os.path.relpath(f, crate_dir)))
    bindir = os.path.join(src, "bin")
    if os.path.isdir(bindir):
        for e in sorted(os.listdir(bindir)):
            p = os.path.join(bindir, e)
            if e.endswith(".rs"):
                roots.append((p, os.path.relpath(p, crate_dir)))
            elif os.path.isfile(os.path.join(p, "main.rs")):
                roots.append((os.path.join(p, "main.rs"), os.path.relpath(p, crate_dir)))
    return src, roots


class Resolver:
    """Resolves paths written in one module to the module file they name."""

    def __init__(self, mods):
        self.mods = mods
        self.reexports = {}  # (module path + inline scope) -> {alias: absolute path}
        for mpath, m in mods.items():
            for scope, p, alias in m.info.reexports:
                base = mpath + scope
                absolute = self.absolute(mpath, scope, p)
                if absolute is None:
                    continue
                self.reexports.setdefault(base, {}).setdefault(alias, []).append(absolute)

    def is_module(self, mpath, scope):
        """Whether (file module, inline scope) names a module."""
        return mpath in self.mods and (not scope or scope in self.mods[mpath].info.inline_mods)

    def split(self, full):
        """Splits an absolute module path into (file module, inline scope)."""
        for k in range(len(full), -1, -1):
            if full[:k] in self.mods:
                return full[:k], full[k:]
        return (), full

    def absolute(self, mpath, scope, p):
        """Turns a written path into an absolute one, or None if it leaves the crate."""
        here = list(mpath + scope)
        first = p[0]
        if first == "crate":
            return tuple(p[1:])
        if first == "self":
            return tuple(here) + tuple(p[1:])
        if first == "super":
            k = 0
            while k < len(p) and p[k] == "super":
                k += 1
            if k > len(here):
                return None
            return tuple(here[: len(here) - k]) + tuple(p[k:])
        # A path starting with a child module of the current scope (2018 uniform paths).
        child = tuple(here) + (first,)
        f, s = self.split(child)
        if len(f) + len(s) == len(child) and self.is_module(f, s) and (f + s == child):
            return child + tuple(p[1:])
        return None

    def resolve(self, absolute, seen=None):
        """The module file an absolute path ends in, following re-exports."""
        seen = seen or set()
        cur = ()
        k = 0
        while k < len(absolute):
            seg = absolute[k]
            nxt = cur + (seg,)
            f, s = self.split(nxt)
            if f + s == nxt and self.is_module(f, s):
                cur = nxt
                k += 1
                continue
            targets = self.reexports.get(cur, {}).get(seg)
            if targets and (cur, seg) not in seen:
                seen.add((cur, seg))
                return self.resolve(targets[0] + absolute[k + 1:], seen)
            break
        return self.split(cur)[0]


def crate_graph(crate_dir):
    """(number of module files, list of (component, edges)) for one crate."""
    src, roots = crate_roots(crate_dir)
    count = 0
    circles = []
    for root_file, root_name in roots:
        mods = load_tree(src, root_file, root_name)
        if root_name.endswith("main.rs") and any(r.endswith("lib.rs") for _, r in roots):
            # A binary beside a library: its own tree, counted separately.
            pass
        count += len(mods)
        res = Resolver(mods)
        edges = {m: {} for m in mods}
        for mpath, m in mods.items():
            for scope, p, line, _is_use in m.info.refs:
                if p and p[-1] == "*":
                    p = p[:-1]
                if not p:
                    continue
                absolute = res.absolute(mpath, scope, p)
                if absolute is None:
                    continue
                target = res.resolve(absolute)
                if target != mpath and target in mods:
                    edges[mpath].setdefault(target, (line, "::".join(p)))
        for comp in sccs(edges):
            if len(comp) > 1:
                circles.append((root_name, comp, edges, mods))
    return count, circles


def sccs(edges):
    """Tarjan's algorithm, iterative. Components in a stable order."""
    index = {}
    low = {}
    on = set()
    stack = []
    out = []
    counter = [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


# ----- main --------------------------------------------------------------------------------------


def workspace_members(root):
    with open(os.path.join(root, "Cargo.toml"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^\s*members\s*=\s*\[(.*?)\]", text, re.S | re.M)
    if not m:
        return ["."]
    return re.findall(r'"([^"]+)"', m.group(1))


def name_of(mpath):
    return "crate" if not mpath else "::".join(mpath)


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    crates = argv[1:] or [os.path.join(root, m) for m in workspace_members(root)]
    total_mods = 0
    total_crates = 0
    found = 0
    for crate in crates:
        if not os.path.isdir(os.path.join(crate, "src")):
            continue
        total_crates += 1
        count, circles = crate_graph(crate)
        total_mods += count
        cname = os.path.basename(os.path.normpath(crate))
        for root_name, comp, edges, mods in circles:
            found += 1
            members = set(comp)
            print(f"{cname} ({root_name}): import circle of {len(comp)} modules:")
            for v in comp:
                rel = os.path.relpath(mods[v].file, crate)
                print(f"  {name_of(v)}  [{rel}]")
                for w in sorted(edges[v]):
                    if w in members:
                        line, written = edges[v][w]
                        print(f"      -> {name_of(w)}  (line {line}: {written})")
    if found:
        print(f"{found} import circle(s) in {total_mods} modules of {total_crates} crates")
        return 1
    print(f"no import circles in {total_mods} modules of {total_crates} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
