"""Griffe extension: load ``funcsplit/_src`` for the API reference.

The public names (``funcsplit.ElementSpec``, ``funcsplit.keras.RoutedModel``…) are imported
from ``funcsplit._src``, a folder without ``__init__.py``. Python imports it as a namespace
package, but griffe (mkdocstrings' loader) skips such a folder inside a regular package, so
every public name would be an unresolvable alias. This extension visits the folder's modules
after the ``funcsplit`` package is loaded, so the aliases resolve to the real definitions.
(An empty ``funcsplit/_src/__init__.py`` would make it unnecessary.)
"""

from __future__ import annotations

import pathlib
from typing import Any

import griffe


class PrivateCore(griffe.Extension):
    """Visits ``<package>/_src/*.py`` when griffe has not loaded them."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "funcsplit" or "_src" in pkg.members:
            return
        folder = pathlib.Path(pkg.filepath).parent / "_src"
        core = griffe.Module("_src", filepath=[folder], parent=pkg)
        pkg.set_member("_src", core)
        for path in sorted(folder.glob("*.py")):
            code = path.read_text(encoding="utf-8")
            loader.lines_collection[path] = code.splitlines()
            module = griffe.visit(
                path.stem,
                path,
                code,
                extensions=loader.extensions,
                parent=core,
                docstring_parser=loader.docstring_parser,
                docstring_options=loader.docstring_options,
                lines_collection=loader.lines_collection,
                modules_collection=loader.modules_collection,
            )
            core.set_member(path.stem, module)
