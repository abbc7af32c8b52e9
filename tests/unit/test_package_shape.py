"""The package's shape: no import circle anywhere in localsb/, no room too large to hold.

The import graph is read with ast, every import counted, the ones inside functions too (lazy
imports are imports all the same: a circle through them breaks as soon as both ends run).
"""
import ast
import os

import localsb

ROOT = os.path.dirname(os.path.abspath(localsb.__file__))
MAX_LINES = 600
LONG_MARK = "# long:"      # `# long: <why this module stays whole>` in its first lines


def _modules() -> dict:
    """{dotted name: path} of every module of the package (packages as their __init__)."""
    mods = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for fn in filenames:
            if fn.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, fn), os.path.dirname(ROOT))[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                mods[".".join(rel)] = os.path.join(dirpath, fn)
    return mods


def _edges(name: str, path: str, mods: dict) -> set:
    """The package's modules that ``name`` imports, at module level or inside functions."""
    is_pkg = path.endswith("__init__.py")
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods:
                    out.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in mods:       # from pkg import submodule: the submodule
                    out.add(sub)
                elif target in mods:  # from module import name: the module
                    out.add(target)
    out.discard(name)
    return out


def _cycle(graph: dict):
    """One import circle as a list of modules, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack = []

    def visit(n):
        color[n] = GREY
        stack.append(n)
        for m in sorted(graph[n]):
            if color[m] == GREY:
                return stack[stack.index(m):] + [m]
            if color[m] == WHITE:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        color[n] = BLACK
        return None

    for n in sorted(graph):
        if color[n] == WHITE:
            found = visit(n)
            if found:
                return found
    return None


def test_the_walker_sees_lazy_and_relative_imports():
    mods = _modules()
    edges = _edges("localsb.engine.engine", mods["localsb.engine.engine"], mods)
    assert "localsb.engine.context" in edges           # from .context import Context
    assert "localsb.engine.doctor" in edges            # inside a method: from .doctor import report
    assert "localsb.engine.runtimes" in edges          # from . import runtimes
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package():
    mods = _modules()
    graph = {name: _edges(name, path, mods) for name, path in mods.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_module_is_larger_than_a_room_without_saying_why():
    too_big = []
    for name, path in sorted(_modules().items()):
        with open(path) as fh:
            lines = fh.read().splitlines()
        if len(lines) > MAX_LINES and not any(line.startswith(LONG_MARK) and line[len(LONG_MARK):].strip()
                                              for line in lines[:5]):
            too_big.append(f"{name} ({len(lines)} lines)")
    assert not too_big, (f"modules above {MAX_LINES} lines without a `{LONG_MARK} <reason>` line at their top: "
                         + ", ".join(too_big))


def test_every_module_states_its_job_in_its_first_line():
    missing = []
    for name, path in sorted(_modules().items()):
        with open(path) as fh:
            doc = ast.get_docstring(ast.parse(fh.read(), path), clean=False)
        if not doc or not doc.split("\n", 1)[0].strip():
            missing.append(name)
    assert not missing, "modules without a first docstring line saying what they are for: " + ", ".join(missing)
