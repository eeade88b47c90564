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
