"""The package's layout: imports point only down the data's path, no circle, packages say what they own.

Every import of a ``braindecode_pkg`` module, at the top of a file or inside a function, is read
from the source (``ast``), so an import that would only run on one code path counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "braindecode_pkg"

#: the stages in the order of the data's path; a module may import its own layer and earlier ones.
#: Module names are relative to braindecode_pkg; a name stands for itself and its submodules, the
#: longest match wins (``sim.recipes`` is a later layer than ``sim``).
LAYERS = [
    ("core", ["", "errors", "io", "weights_file", "command"]),
    ("data", ["data"]),
    ("sim world", ["sim"]),
    ("preprocess", ["preprocess"]),
    ("decoders", ["decoders"]),
    ("embed", ["embed"]),
    ("brain", ["brain"]),
    ("decode", ["decode"]),
    ("evaluate", ["evaluate"]),
    ("sim recipes", ["sim.recipes"]),
    ("report", ["report"]),
    ("workflow", ["workflow"]),
    ("cli", ["cli", "__main__"]),
]

#: functions allowed over MAX_LINES, each with the reason it stays whole
MAX_LINES = 120
LONG_FUNCTIONS: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if module == pre or (pre and module.startswith(pre + ".")) or (pre == "" and module == ""):
                if len(pre) > best:
                    best, rank = len(pre), i
    if rank is None:
        raise AssertionError(f"braindecode_pkg.{module}: in no layer of LAYERS (add it)")
    return rank


def _imports(module: str, path: Path) -> set[str]:
    """The braindecode_pkg modules ``module`` imports (a ``from X import name`` of a submodule
    counts as that submodule)."""
    tree = ast.parse(path.read_text())
    pkg = module.split(".") if module else []
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else list(pkg)
                base = ".".join(base + ([node.module] if node.module else []))
            elif node.module == "braindecode_pkg" or (node.module or "").startswith("braindecode_pkg."):
                base = node.module[len("braindecode_pkg") + 1:]
            else:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}" if base else a.name
                out.add(sub if sub in MODULES else base)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "braindecode_pkg" or a.name.startswith("braindecode_pkg."):
                    out.add(a.name[len("braindecode_pkg") + 1:])
    out.discard(module)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_import_resolves_to_a_module():
    unknown = {(m, n) for m, ns in GRAPH.items() for n in ns if n not in MODULES}
    assert not unknown


def test_imports_point_down_the_pipeline():
    wrong = sorted(
        f"braindecode_pkg.{m} ({LAYERS[_layer(m)][0]}) imports braindecode_pkg.{n} ({LAYERS[_layer(n)][0]})"
        for m, ns in GRAPH.items() for n in ns if _layer(n) > _layer(m)
    )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    # Tarjan's strongly connected components: a component of more than one module is a circle
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
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
            comps.append(comp)

    for v in GRAPH:
        if v not in index:
            visit(v)
    circles = [sorted(c) for c in comps if len(c) > 1]
    assert not circles


def test_the_checker_sees_a_wrong_way_import_and_a_circle(tmp_path):
    """The rules above on a planted example: a late stage imported early, and two modules in a circle."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from braindecode_pkg.report import build\n    from .b import g\n")
    got = _imports("data.a", a)
    assert got == {"report.build", "data.b"}
    assert _layer("report.build") > _layer("data.a")
    assert _layer("sim.recipes.chain") > _layer("evaluate.score") > _layer("sim.world")


def test_every_package_says_what_it_owns_and_may_import():
    for m, p in MODULES.items():
        if p.name == "__init__.py" and m:
            doc = ast.get_docstring(ast.parse(p.read_text())) or ""
            assert "May import" in doc, f"{p}: the package docstring names what it may import"
            body = [n for n in ast.parse(p.read_text()).body if not isinstance(n, ast.Expr)]
            assert not body, f"{p}: a package's __init__ holds only its docstring (import the modules)"


def _long_functions():
    out = {}
    for m, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    out[f"{m}.{node.name}"] = n
    return out


def test_no_function_over_the_limit_but_the_listed_ones():
    long = _long_functions()
    assert set(long) <= set(LONG_FUNCTIONS), {k: v for k, v in long.items() if k not in LONG_FUNCTIONS}
    stale = set(LONG_FUNCTIONS) - set(long)
    assert not stale, f"no longer over {MAX_LINES} lines: remove from LONG_FUNCTIONS: {sorted(stale)}"


@pytest.mark.parametrize("module", ["preprocess", "data.nsd", "sim.world", "evaluate.collect", "cli"])
def test_stages_that_need_no_torch_do_not_import_it(module):
    import subprocess
    import sys

    code = f"import sys, braindecode_pkg.{module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
