"""The ``funcsplit`` command: ``funcsplit demo`` and ``funcsplit describe MODULE:NAME``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence


def _load(target: str):
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"funcsplit describe: expected MODULE:NAME, got {target!r}")
    sys.path.insert(0, ".")
    value = getattr(importlib.import_module(module_name), attr)
    return value() if callable(value) and not hasattr(value, "describe") else value


def describe_command(target: str) -> str:
    """The routing table of a `SplitSpec` / `CompiledSplit` (or a function returning one).

    Examples:
        >>> text = describe_command("funcsplit.demo.example_split:split")
        >>> "label" in text
        True
    """
    import funcsplit as fs

    value = _load(target)
    if isinstance(value, fs.SplitSpec):
        value = fs.compile(value)
    if not isinstance(value, fs.CompiledSplit):
        raise SystemExit(f"{target} is a {type(value).__name__}, not a SplitSpec or CompiledSplit")
    return value.describe()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``funcsplit`` command line."""
    parser = argparse.ArgumentParser(prog="funcsplit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a multi-task model on a local TFDS dataset")
    demo.add_argument("--out", default="funcsplit-demo", help="folder for the plot and table")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs")
    demo.add_argument("--data-dir", default=None, help="TFDS data dir (default: a cache dir)")
    demo.add_argument("--weighting", default=None, help="train with fs.weighting.NAME()")
    demo.add_argument(
        "--compare-weightings",
        action="store_true",
        help="train once per weighting method; write a table and a plot",
    )
    describe = commands.add_parser("describe", help="print a split's routing table")
    describe.add_argument("target", help="MODULE:NAME of a SplitSpec, CompiledSplit or factory")
    args = parser.parse_args(argv)
    if args.command == "describe":
        print(describe_command(args.target))
        return 0
    from funcsplit.demo import main as demo_main

    options = {}
    if args.weighting is not None:
        options["weighting"] = args.weighting
    if args.compare_weightings:
        options["compare_weightings"] = True
    return demo_main(out=args.out, epochs=args.epochs, data_dir=args.data_dir, **options)


if __name__ == "__main__":
    raise SystemExit(main())
