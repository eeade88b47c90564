"""Import layering (DESIGN.md section 1), checked on the source with ast.

- ``core/`` never imports torch, napari, Qt or magicgui (anywhere in the module);
- outside ``_napari/``, no *module-level* import of napari, Qt or magicgui (lazy imports
  inside functions are allowed, e.g. ``cli/demo.py`` importing ``_napari.demo``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "napari_astrosr"
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy")
CORE_BANNED = GUI + ("torch",)


def _imports(tree: ast.AST, *, module_level_only: bool) -> list[tuple[int, str]]:
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:
        # also look inside module-level if/try blocks (e.g. TYPE_CHECKING-free fallbacks)
        stack, nodes = list(nodes), []
        while stack:
            n = stack.pop()
            nodes.append(n)
            if isinstance(n, ast.If) and _is_type_checking(n):
                continue  # typing-only imports never run
            if isinstance(n, (ast.If, ast.Try)):
                stack.extend(n.body + n.orelse + getattr(n, "finalbody", []))
                for h in getattr(n, "handlers", []):
                    stack.extend(h.body)
    out = []
    for n in nodes:
        if isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            out.append((n.lineno, n.module))
        elif isinstance(n, ast.ImportFrom) and n.level > 0 and n.module and n.module.split(".")[0] == "_napari":
            out.append((n.lineno, "napari_astrosr._napari"))
    return sorted(out)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _banned(name: str, banned: tuple[str, ...]) -> bool:
    return name.split(".")[0] in banned


def test_core_imports_no_torch_or_gui():
    bad = []
    for f in sorted((PKG / "core").rglob("*.py")):
        tree = ast.parse(f.read_text(), filename=str(f))
        for line, name in _imports(tree, module_level_only=False):
            if _banned(name, CORE_BANNED):
                bad.append(f"{f.relative_to(PKG)}:{line} imports {name}")
    assert not bad, "core/ must stay free of torch/napari/Qt:\n" + "\n".join(bad)


def test_gui_imports_only_in_napari_package():
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG)
        if rel.parts[0] == "_napari":
            continue
        tree = ast.parse(f.read_text(), filename=str(f))
        for line, name in _imports(tree, module_level_only=True):
            if _banned(name, GUI) or name == "napari_astrosr._napari" or name.startswith("napari_astrosr._napari."):
                bad.append(f"{rel}:{line} imports {name} at module level")
    assert not bad, "napari/Qt/magicgui only inside _napari/ (or lazily inside functions):\n" + "\n".join(bad)


def test_checker_catches_violations():
    """The checker itself must fail on a bad module (guards against a test that cannot fail)."""
    tree = ast.parse("import torch\nfrom napari.layers import Image\ndef f():\n    import qtpy\n")
    names = [n for _, n in _imports(tree, module_level_only=True)]
    assert names == ["torch", "napari.layers"]
    assert [n for _, n in _imports(tree, module_level_only=False)][-1] == "qtpy"
    tree = ast.parse("from .._napari.demo import run_demo\n")
    assert _imports(tree, module_level_only=True) == [(1, "napari_astrosr._napari")]


# --- the package's own import graph: no cycles, no upward imports -------------------------------------

ROOT = "napari_astrosr"

#: layer of each top-level name under the package; imports may only go to the same or a lower layer.
#: ``napari_astrosr`` itself (the lazy facade) and ``__main__`` are on top.
LAYERS = {
    **dict.fromkeys(("_version", "exceptions", "_extras", "progress", "config", "data"), 0),  # base
    "core": 1,
    **dict.fromkeys(("models", "training"), 2),
    **dict.fromkeys(
        ("restoration", "restore_options", "method_table", "restore_jobs", "batch", "pipeline", "coadd_job"), 3
    ),  # jobs
    **dict.fromkeys(("cli", "_napari"), 4),
    "__main__": 5,
}
LAYER_NAMES = {0: "base", 1: "core", 2: "models/training", 3: "jobs", 4: "cli/_napari", 5: "package root"}

#: cycles known and not yet removed, each a frozenset of module names (short, without ``napari_astrosr.``).
#: None left: the last, batch <-> restoration, went when the restore jobs moved to ``restore_jobs/`` (issue 19
#: item 2): ``restoration.restore`` hands a dask array to ``restore_jobs.blocks``, which imports no job and is
#: given the per-block restore as an argument.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _module_names(pkg: Path = PKG, root: str = ROOT) -> dict[str, tuple[Path, bool]]:
    mods = {}
    for f in sorted(pkg.rglob("*.py")):
        parts = list(f.relative_to(pkg).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join([root, *parts])] = (f, is_pkg)
    return mods


def _package_edges(
    mods: dict[str, tuple[Path, bool]], sources: dict[str, str] | None = None, root: str = ROOT
) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(importer, imported) -> [(kind, line)] for imports between the package's own modules.

    ``kind`` is ``"module"`` (runs at import) or ``"function"`` (inside a def or lambda: runs when called);
    imports under ``if TYPE_CHECKING:`` never run and are skipped. ``from . import x`` resolves to the
    submodule ``x`` when there is one, else to the package.
    """

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    def targets(name: str, is_pkg: bool, node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if node.level == 0:
            base = node.module or ""
        else:
            pkg = name.split(".") if is_pkg else name.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([node.module] if node.module else []))
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]

    edges: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for name, (f, is_pkg) in mods.items():
        text = sources[name] if sources is not None else f.read_text()
        stack = [(ast.parse(text, filename=str(f)), "module")]
        while stack:
            node, kind = stack.pop()
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, ast.If) and _is_type_checking(ch):
                    continue
                k = "function" if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else kind
                if isinstance(ch, (ast.Import, ast.ImportFrom)):
                    for t in targets(name, is_pkg, ch):
                        if t.split(".")[0] != root:
                            continue
                        t = owner(t)
                        if t and t != name and (k, ch.lineno) not in edges.get((name, t), []):
                            edges.setdefault((name, t), []).append((k, ch.lineno))
                stack.append((ch, k))
    return edges


def _cycles(mods, edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
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
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _short(name: str, root: str = ROOT) -> str:
    return name[len(root) + 1 :] if name.startswith(root + ".") else name


def _layer(name: str, root: str = ROOT) -> int | None:
    if name == root:
        return max(LAYERS.values())
    return LAYERS.get(_short(name, root).split(".")[0])


def _cycle_report(mods, edges, known=KNOWN_CYCLES) -> list[str]:
    bad = []
    for comp in _cycles(mods, edges):
        if frozenset(_short(m) for m in comp) in known:
            continue
        lines = [
            f"  {_short(a)}:{line} ({kind}) imports {_short(b)}"
            for (a, b), where in sorted(edges.items())
            if a in comp and b in comp
            for kind, line in where
        ]
        bad.append("cycle " + " <-> ".join(_short(m) for m in comp) + "\n" + "\n".join(lines))
    return sorted(bad)


def _upward_report(mods, edges) -> list[str]:
    bad = []
    for (a, b), where in sorted(edges.items()):
        la, lb = _layer(a), _layer(b)
        if la is not None and lb is not None and lb > la:
            for kind, line in where:
                bad.append(f"{_short(a)}:{line} ({LAYER_NAMES[la]}, {kind}) imports {_short(b)} ({LAYER_NAMES[lb]})")
    return bad


def test_every_module_has_a_layer():
    mods = _module_names()
    missing = sorted(_short(m) for m in mods if _layer(m) is None)
    assert not missing, f"add these top-level modules to LAYERS in tests/test_layering.py: {missing}"


def test_no_import_cycles():
    """No two modules of the package import each other, directly or round a circle (module- or function-level)."""
    mods = _module_names()
    bad = _cycle_report(mods, _package_edges(mods))
    assert not bad, "import cycles (move the shared code to the lower module or a new small one):\n" + "\n".join(bad)


def test_no_upward_imports():
    """base < core < models, training < jobs < cli, _napari < the package root: imports only go down."""
    mods = _module_names()
    bad = _upward_report(mods, _package_edges(mods))
    assert not bad, "imports going up a layer:\n" + "\n".join(bad)


def test_graph_checks_catch_violations():
    """The cycle and layer checks fail on planted violations (function-level ones included)."""
    files = {
        "napari_astrosr": "",
        "napari_astrosr.exceptions": "",
        "napari_astrosr.core": "",
        "napari_astrosr.core.a": "from .b import f\n",
        "napari_astrosr.core.b": "def g():\n    from . import a\n",
        "napari_astrosr.core.c": "def h():\n    from .. import __version__\n",
        "napari_astrosr.core.d": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..batch import x\n",
        "napari_astrosr.models": "",
        "napari_astrosr.models.m": "def k():\n    from napari_astrosr.restoration import restore\n",
        "napari_astrosr.batch": "def r():\n    from .core.e import z\n    from . import restoration\n",
        "napari_astrosr.restoration": "from . import batch\n",
    }
    mods = {}
    for name in files:
        is_pkg = name.count(".") == 0 or name.split(".")[-1] in ("core", "models")
        mods[name] = (Path(name.replace(".", "/") + ("/__init__.py" if is_pkg else ".py")), is_pkg)
    edges = _package_edges(mods, files)
    assert edges[("napari_astrosr.core.b", "napari_astrosr.core.a")] == [("function", 2)]
    assert ("napari_astrosr.core.d", "napari_astrosr.batch") not in edges  # typing-only
    assert edges[("napari_astrosr.batch", "napari_astrosr.core")] == [("function", 2)]  # core.e absent: the package
    cycles = _cycle_report(mods, edges, known=set())
    assert len(cycles) == 2 and cycles[0].startswith("cycle batch <-> restoration")
    assert cycles[1].startswith("cycle core.a <-> core.b")
    assert len(_cycle_report(mods, edges, known={frozenset({"batch", "restoration"})})) == 1  # a known one is allowed
    up = _upward_report(mods, edges)
    assert up == [
        "core.c:2 (core, function) imports napari_astrosr (package root)",
        "models.m:2 (models/training, function) imports restoration (jobs)",
    ]


def test_job_packages_do_not_shadow_public_names():
    """A subpackage named like a public function (``napari_astrosr.restore``) would replace it on the package once
    imported; the restore jobs live in ``restore_jobs/`` for that reason."""
    import importlib

    import napari_astrosr

    subpackages = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert not subpackages & set(napari_astrosr._LAZY), subpackages & set(napari_astrosr._LAZY)
    importlib.import_module("napari_astrosr.restore_jobs.tiling")
    assert callable(napari_astrosr.restore) and napari_astrosr.restore.__module__ == "napari_astrosr.restoration"
