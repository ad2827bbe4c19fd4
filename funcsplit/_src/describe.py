"""The routing table of a plan: every leaf and where it goes, then every binding."""

from __future__ import annotations

from collections.abc import Sequence

from funcsplit._src.errors import SpecError
from funcsplit._src.plan import Plan
from funcsplit._src.registry import BuiltinLoss
from funcsplit._src.registry import RowWise


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def leaf_rows(plan: Plan) -> list[tuple[str, str, str]]:
    """``(path, leaf, roles)`` rows, one per leaf of the element, in `tf.nest` order."""
    return [
        (str(path), leaf.describe(), "; ".join(roles) if roles else "UNUSED (strict=False)")
        for path, leaf, roles in plan.roles
    ]


def loss_name(fn: object) -> str:
    """A short name for a loss: the registry text, a function's name, or a class name."""
    if isinstance(fn, BuiltinLoss):
        return str(fn)
    if isinstance(fn, RowWise):
        return f"row_wise({loss_name(fn.fn)})"
    return getattr(fn, "__name__", None) or type(fn).__name__


def binding_rows(plan: Plan) -> list[tuple[str, ...]]:
    """One row per binding: name, loss, target, output, weight, route, sample weight, group."""
    rows = []
    for bound in plan.losses:
        b = bound.binding
        fn = loss_name(bound.fn)
        rows.append(
            (
                b.name,
                fn,
                str(bound.target),
                "<all>" if b.output is None else str(b.output),
                f"{b.weight:g}",
                str(bound.route) if bound.route else "-",
                str(bound.sample_weight) if bound.sample_weight else "-",
                b.group or "-",
            )
        )
    return rows


def describe(plan: Plan) -> str:
    """The routing table as text: a leaf table and a binding table.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None, 1))})
        >>> c = fs.compile(fs.SplitSpec(spec, inputs="x",
        ...                             losses=(fs.LossBinding("y", "mse", target="y"),)))
        >>> print(c.describe().splitlines()[2])
        x     float32[None, 2]  input
    """
    leaves = _table(("leaf", "spec", "role"), leaf_rows(plan))
    footer = "\n\n" + fingerprint_line(plan)
    if not plan.losses:
        return leaves + "\n\n(no losses)" + footer
    header = ("loss", "fn", "target", "output", "weight", "route", "sample_weight", "group")
    return leaves + "\n\n" + _table(header, binding_rows(plan)) + footer


def fingerprint_line(plan: Plan) -> str:
    """``fingerprint <16 hex digits>`` of the split (what a checkpoint can record)."""
    try:
        return f"fingerprint {plan.split.fingerprint()}"
    except SpecError as error:
        reason = error.problems[0].expected if error.problems else "it cannot be saved"
        return f"fingerprint - (the split cannot be written as JSON: {reason})"


def table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """Rows of cells as a plain-text table: a header, a rule, columns padded to fit (the
    layout of the routing table, for other tables such as a mixture's)."""
    return _table(header, rows)
