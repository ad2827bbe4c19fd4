"""The ``funcsplit`` commands: ``funcsplit demo`` and ``funcsplit describe TARGET``.

The arguments are parsed by ``_funcsplit_cli`` (beside the package, so that ``--help`` does
not import TensorFlow); this module runs the commands. A mistake on the command line (a
module, name or file that is not there, a factory that needs arguments, a value that is not
a split) is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from typing import Any

import funcsplit as fs
from funcsplit._src import registry
from funcsplit._src.errors import close_matches

USAGE_ERROR = 2


class CommandError(Exception):
    """A mistake on the command line: its message is the one line the user sees."""


class Placeholder:
    """Stands for a user loss of a split read from JSON: shown by name, never called."""

    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        raise RuntimeError(f"{self.__name__!r} is a placeholder: funcsplit describe runs no loss")


def _holes(document: Any) -> list[str]:
    """The hole names of a document's plain holes (those with no Keras description)."""
    names = []
    for binding in document.get("losses", []) if isinstance(document, dict) else []:
        fn = binding.get("fn") if isinstance(binding, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("row_wise"), dict):
            fn = fn["row_wise"]
        if isinstance(fn, dict) and isinstance(fn.get("callable"), str) and "keras" not in fn:
            names.append(fn["callable"])
    return names


def _read_json(path: str) -> fs.SplitSpec:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise CommandError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"cannot read {path}: {error}") from None
    try:
        holes = _holes(json.loads(text))
    except (ValueError, RecursionError):
        holes = []  # from_json says what is wrong with the text
    registered = {name for name in holes if registry.registered(name) is not None}
    placeholders = {name: Placeholder(name) for name in holes if name not in registered}
    return fs.SplitSpec.from_json(text, losses=placeholders)


def _import(module_name: str) -> Any:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise CommandError(
                f"no module named {module_name!r} (run from the folder that holds it, "
                "or add that folder to PYTHONPATH)"
            ) from None
        raise CommandError(f"importing {module_name!r} failed: {error}") from None
    except Exception as error:
        raise CommandError(
            f"importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from None


def _required_parameters(fn: Any) -> list[str]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        p.name
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind not in kinds
    ]


def load_target(target: str) -> fs.SplitSpec | fs.CompiledSplit:
    """The split a ``describe`` target names: ``MODULE:NAME`` or a JSON file.

    ``NAME`` may be dotted (``module:obj.attr``) and may name a zero-argument factory.

    Raises:
        CommandError: for a missing module, name or file, a factory that needs arguments,
            or a value that is not a split.
        SpecError: for a JSON file that is not a valid split document.
    """
    module_name, colon, name = target.partition(":")
    if not colon:
        if target.endswith(".json") or os.path.isfile(target):
            return _read_json(target)
        raise CommandError(
            f"expected MODULE:NAME or a .json file, got {target!r} "
            "(e.g. funcsplit describe funcsplit.demo.example_split:split)"
        )
    if not module_name or not name:
        raise CommandError(f"expected MODULE:NAME, got {target!r}")
    value = _import(module_name)
    for part in name.split("."):
        if not hasattr(value, part):
            public = [n for n in dir(value) if not n.startswith("_")]
            nearby = close_matches(part, public)
            hint = f" (did you mean {', '.join(nearby)}?)" if nearby else ""
            raise CommandError(f"module {module_name!r} has no name {name!r}{hint}")
        value = getattr(value, part)
    if callable(value) and not isinstance(value, (fs.SplitSpec, fs.CompiledSplit)):
        needed = _required_parameters(value)
        if needed:
            raise CommandError(
                f"{target} needs arguments ({', '.join(needed)}): point at a SplitSpec, a "
                "CompiledSplit or a factory that takes none"
            )
        try:
            value = value()
        except Exception as error:
            raise CommandError(f"{target}() raised {type(error).__name__}: {error}") from None
    if not isinstance(value, (fs.SplitSpec, fs.CompiledSplit)):
        raise CommandError(
            f"{target} is of type {type(value).__name__}, not a SplitSpec, a CompiledSplit "
            "or a factory of one"
        )
    return value


def describe_command(target: str) -> str:
    """The routing table of a `SplitSpec` / `CompiledSplit` (or a factory, or a JSON file).

    Examples:
        >>> text = describe_command("funcsplit.demo.example_split:split")
        >>> "label" in text and "fingerprint" in text
        True
    """
    value = load_target(target)
    compiled = fs.compile(value) if isinstance(value, fs.SplitSpec) else value
    return compiled.describe()


def prepare(args: argparse.Namespace, *, quiet: bool) -> None:
    """Imports what the command needs (inside ``_funcsplit_cli``'s quiet block) and, when
    ``quiet``, turns TensorFlow's and TFDS's Python logs and progress bars down."""
    import tensorflow as tf

    if args.command == "demo":
        import tensorflow_datasets as tfds

        from funcsplit.demo import digits  # noqa: F401 - import now, inside the quiet block

        if quiet:
            tfds.disable_progress_bar()
    if quiet:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        tf.get_logger().setLevel("ERROR")


def run(args: argparse.Namespace) -> int:
    """Runs a parsed command; returns the exit status."""
    if args.command == "describe":
        try:
            print(describe_command(args.target))
        except CommandError as error:
            print(f"funcsplit describe: {error}", file=sys.stderr)
            return USAGE_ERROR
        except fs.SpecError as error:
            print(f"funcsplit describe: {args.target}: {error}", file=sys.stderr)
            return USAGE_ERROR
        return 0
    from funcsplit import demo

    options = {}
    if args.weighting is not None:
        options["weighting"] = args.weighting
    if args.compare_weightings:
        options["compare_weightings"] = True
    return demo.main(out=args.out, epochs=args.epochs, data_dir=args.data_dir, **options)
