"""The architecture, held against the package's imports (read with `ast`, nothing imported).

The rules are the table below: each file of ``funcsplit/`` belongs to the first layer whose
pattern matches its path, and may import (every ``import`` statement, at module level or in
a function) only the funcsplit layers and the third-party packages its row allows. On top of
the table: no import circle anywhere in the package. The README's "Where things are" and
``docs/concepts.md`` show the same tree of rooms, and it is the tree on disk.
"""

from __future__ import annotations

import ast
import fnmatch
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

CORE = ("neutral core", "tf lowering")
ADAPTER_BASE = (*CORE, "weighting")
OPTIONAL = ("jax", "optax", "tensorflow_datasets")

# layer, files (first match wins), the funcsplit layers it may import, packages it never imports
LAYERS = (
    ("tf lowering", "funcsplit/_src/tf_*.py", CORE, OPTIONAL),
    ("neutral core", "funcsplit/_src/*.py", ("neutral core",), ("keras", *OPTIONAL)),
    # the public face imports the Keras adapter so that `import funcsplit` registers
    # RoutedModel with Keras's loader (keras.models.load_model finds it by name)
    ("public face", "funcsplit/__init__.py", (*CORE, "public face", "keras"), OPTIONAL),
    ("public face", "funcsplit/losses.py", CORE, OPTIONAL),
    ("weighting", "funcsplit/weighting/*", ADAPTER_BASE, ("keras", "tensorflow_datasets")),
    ("keras", "funcsplit/keras/*", (*ADAPTER_BASE, "keras"), OPTIONAL),
    ("jax", "funcsplit/jax/*", ("neutral core", "weighting", "jax"), ("tensorflow_datasets",)),
    ("tfds", "funcsplit/tfds/*", (*CORE, "tfds"), ("keras", "jax", "optax")),
    ("distribute", "funcsplit/distribute.py", CORE, ("keras", *OPTIONAL)),
    ("tools", "funcsplit/*", None, ()),  # cli, demo, testing: anything public
)


def layer_of(relative: str) -> tuple[str, tuple[str, ...] | None, tuple[str, ...]]:
    """``(layer, allowed funcsplit layers or None for any, forbidden packages)`` of a file."""
    for name, pattern, allowed, forbidden in LAYERS:
        if fnmatch.fnmatch(relative, pattern):
            return name, allowed, forbidden
    raise AssertionError(f"{relative} matches no layer: add a row to LAYERS")


def module_name(relative: str) -> str:
    parts = relative[: -len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_package(root: pathlib.Path) -> dict[str, tuple[str, list[str]]]:
    """``{module: (file, [imported names])}`` for every ``.py`` file under ``root/funcsplit``.

    ``from a import b`` is recorded as ``a.b`` (resolved below to module ``a.b`` when there is
    one, else to ``a``); ``import a.b`` as ``a.b``.
    """
    modules = {}
    for path in sorted((root / "funcsplit").rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        imported = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported += [f"{node.module}.{alias.name}" for alias in node.names]
        modules[module_name(relative)] = (relative, imported)
    return modules


def resolve(name: str, modules: dict) -> str | None:
    """The funcsplit module an imported name is (its longest known prefix), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def edges(modules: dict) -> dict[str, set[str]]:
    """Module -> the funcsplit modules it imports."""
    graph: dict[str, set[str]] = {}
    for module, (_, imported) in modules.items():
        targets = {resolve(name, modules) for name in imported}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def violations(root: pathlib.Path) -> list[str]:
    """Every broken rule of the table, and every circle, as readable lines."""
    modules = read_package(root)
    graph = edges(modules)
    found = []
    for module, (relative, imported) in modules.items():
        layer, allowed, forbidden = layer_of(relative)
        for name in imported:
            top = name.split(".")[0]
            if top in forbidden:
                found.append(f"{relative} ({layer}) imports {name}: {top} is not allowed here")
        if allowed is None:
            continue
        for target in sorted(graph[module]):
            target_layer = layer_of(modules[target][0])[0]
            if target_layer not in allowed:
                found.append(
                    f"{relative} ({layer}) imports {target} ({target_layer}): "
                    f"{layer} may import only {', '.join(allowed)}"
                )
    found += [f"import circle: {' -> '.join(circle)}" for circle in circles(graph)]
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of a graph (one path per strongly connected group of modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append([*sorted(group), sorted(group)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_package_keeps_its_layers_and_has_no_circle():
    assert violations(ROOT) == []


def write_package(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


GOOD = {
    "funcsplit/__init__.py": "from funcsplit._src.spec import Leaf\n",
    "funcsplit/_src/__init__.py": "",
    "funcsplit/_src/spec.py": "import tensorflow as tf\n",
    "funcsplit/_src/tf_loss.py": "from funcsplit._src import spec\n",
    "funcsplit/keras/__init__.py": "from funcsplit.keras._model import RoutedModel\n",
    "funcsplit/keras/_model.py": "import keras\nfrom funcsplit._src.tf_loss import x\n",
    "funcsplit/jax/__init__.py": "import jax\nfrom funcsplit._src import spec\n",
}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"funcsplit/_src/spec.py": "import keras\n"}, "keras is not allowed here"),
        ({"funcsplit/_src/spec.py": "from funcsplit._src import tf_loss\n"}, "may import only"),
        ({"funcsplit/_src/spec.py": "import funcsplit as fs\n"}, "(public face)"),
        ({"funcsplit/jax/_x.py": "from funcsplit.keras import _model\n"}, "jax may import only"),
        ({"funcsplit/jax/_x.py": "from funcsplit._src.tf_loss import x\n"}, "(tf lowering)"),
        ({"funcsplit/keras/_model.py": "import jax\n"}, "jax is not allowed here"),
        (
            {
                "funcsplit/_src/other.py": "from funcsplit._src import spec\n",
                "funcsplit/_src/spec.py": "def f():\n    from funcsplit._src import other\n",
            },
            "import circle: funcsplit._src.other -> funcsplit._src.spec -> funcsplit._src.other",
        ),
    ],
    ids=[
        "neutral-imports-keras",
        "neutral-imports-lowering",
        "core-imports-face",
        "adapter-imports-adapter",
        "jax-imports-tf-lowering",
        "keras-imports-jax",
        "circle",
    ],
)
def test_a_bad_import_is_named(tmp_path, bad, message):
    assert violations(write_package(tmp_path, GOOD)) == []
    found = violations(write_package(tmp_path, bad))
    assert any(message in line for line in found), found


# The tree of rooms shown in the README and in docs/concepts.md.
TREE = re.compile(r"<!-- layout:start -->\n```text\n(.*?)```\n<!-- layout:end -->", re.S)
FOLDERS_SHOWN_WHOLE = ("funcsplit/demo/", "funcsplit/testing/")


def shown_tree(text: str) -> list[str]:
    """The paths the tree block names (``a/`` folders, ``a/b.py`` files), from indentation."""
    match = TREE.search(text)
    assert match, "no <!-- layout:start --> tree block"
    names, stack = [], []
    for line in match.group(1).splitlines():
        stripped = line.lstrip(" ")
        depth = (len(line) - len(stripped)) // 2
        entry = stripped.split()[0]
        stack[depth:] = [entry]
        names.append("".join(stack))
    return names


def test_readme_and_concepts_show_the_tree_on_disk():
    readme = shown_tree((ROOT / "README.md").read_text())
    concepts = shown_tree((ROOT / "docs" / "concepts.md").read_text())
    assert readme == concepts
    on_disk = set()
    for path in (ROOT / "funcsplit").rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        whole = [f for f in FOLDERS_SHOWN_WHOLE if relative.startswith(f)]
        on_disk.add(whole[0] if whole else relative)
    shown = {name for name in readme if name.endswith((".py", *FOLDERS_SHOWN_WHOLE))}
    assert shown == on_disk
