"""The ``funcsplit`` command's entry point: its arguments, parsed without importing TensorFlow.

It sits beside the ``funcsplit`` package, not in it, because importing any module of the
package runs ``funcsplit/__init__.py``, which imports TensorFlow (seconds). ``funcsplit
--help`` and ``funcsplit describe --help`` answer from here at once; a command imports
``funcsplit.cli`` (and TensorFlow) only when it runs. By default that import happens with
TensorFlow's C++ start-up notices (CUDA probing, oneDNN, CPU features) kept out of the
terminal and ``TF_CPP_MIN_LOG_LEVEL=3`` for the rest of the run; ``--verbose`` shows them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from collections.abc import Sequence

DESCRIPTION = "funcsplit: declared, checked and compiled routing of tf.data elements."

EXAMPLES = """\
examples:
  funcsplit demo                                 train the multi-task demo (local data)
  funcsplit demo --epochs 2 --out /tmp/demo      a short run, outputs in /tmp/demo
  funcsplit describe mypkg.splits:split          the routing table of a SplitSpec
  funcsplit describe split.json                  ... of a split saved with to_json()
"""

DEMO_EXAMPLES = """\
examples:
  funcsplit demo
  funcsplit demo --epochs 2 --out /tmp/demo --data-dir /tmp/tfds
  funcsplit demo --weighting uncertainty         train with uncertainty weighting
  funcsplit demo --compare-weightings            one run per weighting method, compared
  funcsplit demo --verbose                       with TensorFlow's start-up logs
"""

DESCRIBE_EXAMPLES = """\
examples:
  funcsplit describe funcsplit.demo.example_split:split    a SplitSpec in a module
  funcsplit describe mypkg.splits:compiled                 a CompiledSplit
  funcsplit describe mypkg.splits:make_split               a zero-argument factory
  funcsplit describe split.json                            split.to_json() written to a file

MODULE is imported with the current folder on the path (as `python -m` does); a JSON
file is read without running any code: user losses show under their hole names.
"""


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``funcsplit`` (argparse only: no TensorFlow)."""
    formatter = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(
        prog="funcsplit", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=formatter
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="train a multi-task model on a locally built TFDS dataset",
        description="Train a multi-task model on funcsplit_digits (built locally, nothing\n"
        "downloaded) with routed losses; write a plot and the routing table.",
        epilog=DEMO_EXAMPLES,
        formatter_class=formatter,
    )
    demo.add_argument("--out", default="funcsplit-demo", help="folder for the plot and table")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs (default 12)")
    demo.add_argument("--data-dir", default=None, help="TFDS data dir (default: a cache dir)")
    demo.add_argument("--weighting", default=None, help="train with fs.weighting.NAME()")
    demo.add_argument(
        "--compare-weightings",
        action="store_true",
        help="train once per weighting method; write a table and a plot",
    )
    demo.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up logs")
    describe = commands.add_parser(
        "describe",
        help="print a split's routing table",
        description="Print the routing table of a split: every leaf and its role, then\n"
        "every loss binding, and the split's fingerprint.",
        epilog=DESCRIBE_EXAMPLES,
        formatter_class=formatter,
    )
    describe.add_argument(
        "target",
        metavar="MODULE:NAME | FILE.json",
        help="a SplitSpec, a CompiledSplit or a zero-argument factory, or a JSON file",
    )
    describe.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up logs")
    return top


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Sends file descriptor 2 (where C++ libraries log) to a temporary file meanwhile.

    What was written there is shown after all if the block raises.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``funcsplit``: parses the arguments, then imports and runs the command."""
    args = parser().parse_args(argv)
    if args.verbose:
        from funcsplit import cli

        cli.prepare(args, quiet=False)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with quiet_stderr():
            from funcsplit import cli

            cli.prepare(args, quiet=True)
    return cli.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
