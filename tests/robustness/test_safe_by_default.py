"""Safe by default: no code path under src/ unpickles, evaluates strings, runs a shell or
talks to the network on its own.

The source is parsed (``ast``), not grepped, so ``model.eval()`` or a docstring that
mentions ``torch.load`` does not count, while ``from pickle import loads as l`` does.
Rules:

- ``pickle``/``cPickle``/``dill``/``marshal``/``shelve``/``jsonpickle`` loading, ``pandas.read_pickle``;
- ``torch.load`` without ``weights_only=True``; ``torch.jit.load``;
- ``yaml.load``/``load_all`` without ``Loader=SafeLoader``/``CSafeLoader``; ``yaml.unsafe_load``/``full_load``;
- ``numpy.load(..., allow_pickle=True)``;
- builtins ``eval``/``exec``/``compile``/``__import__``; ``os.system``/``os.popen``;
- any call with ``shell=True``;
- network: importing ``urllib``, ``urllib3``, ``requests``, ``httpx``, ``aiohttp``, ``http.client``,
  ``socket``, ``ftplib``, ``smtplib``; calling astropy's ``download_file``.

A legitimate exception goes in ``ALLOWED`` with its justification.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "jsonpickle", "cloudpickle"}
NET_MODULES = {
    "urllib",
    "urllib3",
    "requests",
    "httpx",
    "aiohttp",
    "http",
    "socket",
    "ftplib",
    "smtplib",
    "telnetlib",
    "xmlrpc",
}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader"}

# (path relative to src/, rule) -> why it is fine
ALLOWED: dict[tuple[str, str], str] = {
    # the widgets' worker process: the viewer and its own child exchange jobs and results over a
    # socketpair the child inherits by descriptor (no file, no network, nothing another party can write)
    ("napari_astrosr/_napari/_process.py", "import pickle"): "parent <-> own child over an inherited socketpair",
    ("napari_astrosr/_napari/_process.py", "pickle.loads()"): "parent <-> own child over an inherited socketpair",
}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def check_source(text: str, filename: str = "<src>") -> list[tuple[int, str, str]]:
    """Violations in one module: (line, rule, code)."""
    tree = ast.parse(text, filename)
    found: list[tuple[int, str, str]] = []
    aliases: dict[str, str] = {}  # local name -> dotted origin ("pl" -> "pickle", "ld" -> "pickle.loads")

    def add(node, rule):
        found.append((node.lineno, rule, ast.get_source_segment(text, node) or ""))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                top = a.name.split(".")[0]
                if top in NET_MODULES:
                    add(node, f"network import {a.name}")
                if top in PICKLE_MODULES:
                    add(node, f"import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if top in NET_MODULES:
                add(node, f"network import from {node.module}")
            if top in PICKLE_MODULES:
                add(node, f"import from {node.module}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = (aliases.get(head, head) + ("." + rest if rest else "")) if name else ""
        last = full.rsplit(".", 1)[-1]
        mod = full.rsplit(".", 1)[0] if "." in full else ""
        if _is_true(_kw(node, "shell")):
            add(node, "shell=True")
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in {"eval", "exec", "compile", "__import__"}
            and node.func.id not in aliases
        ):
            add(node, f"builtin {node.func.id}()")
        if full in {"os.system", "os.popen"}:
            add(node, full)
        if mod.split(".")[0] in PICKLE_MODULES and last in {"load", "loads", "open", "Unpickler"}:
            add(node, f"{full}()")
        if last == "read_pickle":
            add(node, "read_pickle()")
        if full == "torch.load" and not _is_true(_kw(node, "weights_only")):
            add(node, "torch.load without weights_only=True")
        if full == "torch.jit.load":
            add(node, "torch.jit.load")
        if mod == "yaml" and last in {"unsafe_load", "full_load", "unsafe_load_all", "full_load_all"}:
            add(node, f"yaml.{last}")
        if mod == "yaml" and last in {"load", "load_all"}:
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                add(node, f"yaml.{last} without SafeLoader")
        if last == "load" and mod in {"numpy", "np"} and _is_true(_kw(node, "allow_pickle")):
            add(node, "numpy.load(allow_pickle=True)")
        if last in {"download_file", "download_files_in_parallel"}:
            add(node, f"network {last}()")
    return found


def _sources():
    return sorted(SRC.rglob("*.py"))


def test_source_tree_is_safe_by_default():
    files = _sources()
    assert len(files) > 20, f"no sources found under {SRC}"
    problems = []
    for f in files:
        rel = str(f.relative_to(SRC))
        for line, rule, code in check_source(f.read_text(encoding="utf-8"), rel):
            if (rel, rule) not in ALLOWED:
                problems.append(f"{rel}:{line}: {rule}: {code.strip()[:100]}")
    assert not problems, "unsafe calls (fix, or whitelist in ALLOWED with a reason):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "code,rule",
    [
        ("import pickle\npickle.load(f)", "pickle.load()"),
        ("from pickle import loads as l\nl(b)", "pickle.loads()"),
        ("import torch\ntorch.load(p)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load(p, weights_only=False)", "torch.load without weights_only=True"),
        ("import yaml\nyaml.load(s)", "yaml.load without SafeLoader"),
        ("import yaml\nyaml.load(s, Loader=yaml.FullLoader)", "yaml.load without SafeLoader"),
        ("import yaml\nyaml.unsafe_load(s)", "yaml.unsafe_load"),
        ("eval('1+1')", "builtin eval()"),
        ("exec(code)", "builtin exec()"),
        ("import subprocess\nsubprocess.run('ls', shell=True)", "shell=True"),
        ("import os\nos.system('ls')", "os.system"),
        ("import requests", "network import requests"),
        ("from urllib.request import urlopen", "network import from urllib.request"),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", "numpy.load(allow_pickle=True)"),
        ("from astropy.utils.data import download_file\ndownload_file(u)", "network download_file()"),
    ],
)
def test_checker_catches(code, rule):
    assert rule in [r for _, r, _ in check_source(code)]


@pytest.mark.parametrize(
    "code",
    [
        "model.eval()",
        "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
        "import yaml\nyaml.safe_load(s)",
        "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
        "import numpy as np\nnp.load(p, allow_pickle=False)",
        "import subprocess\nsubprocess.run(['ls'], check=True)",
        "'''torch.load(p) and eval( in a docstring'''",
    ],
)
def test_checker_allows(code):
    assert check_source(code) == []
