"""The declarations: `Route`, `LossBinding` and `SplitSpec` (immutable, checked when built)."""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Protocol

import attrs

from funcsplit._src import paths
from funcsplit._src import registry
from funcsplit._src import structure
from funcsplit._src.errors import SpecError
from funcsplit._src.paths import Path
from funcsplit._src.spec import ElementSpec

_OPS = ("truthy", "equals", "not_equal", "one_of")
REDUCTIONS = ("weighted_mean", "sum_over_batch_size")


class LossFn(Protocol):
    """A loss callable: ``fn(y_true, y_pred)`` returns per-example values ``[B, ...]``
    or one batch-level scalar. ``y_true`` / ``y_pred`` are tensors, or nested structures when
    the binding's target / output address subtrees."""

    def __call__(self, y_true: Any, y_pred: Any) -> Any: ...


def _value(value: object) -> object:
    value = structure.python_scalar(value)
    if isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError.single("route", None, "a finite value", repr(value))
        return value
    raise SpecError.single("route", None, "a bool, int, float or str value", repr(value))


@attrs.frozen
class Route:
    """Which examples of a batch feed a loss: a test on one per-example leaf.

    Build it with `route`. ``op`` is ``"truthy"`` (leaf true / non-zero), ``"equals"``,
    ``"not_equal"`` or ``"one_of"``; ``value`` the value compared with (a tuple for
    ``one_of``).
    """

    path: str | Path = attrs.field(converter=lambda p: paths.check_path_like(p, "route"))
    op: str = attrs.field(default="truthy", validator=attrs.validators.in_(_OPS))
    value: Any = None

    def __str__(self) -> str:
        if self.op == "truthy":
            return f"{self.path} is true"
        symbol = {"equals": "==", "not_equal": "!=", "one_of": "in"}[self.op]
        return f"{self.path} {symbol} {self.value!r}"


def route(
    path: str | Path | tuple,
    *,
    equals: object = None,
    not_equal: object = None,
    one_of: object = None,
) -> Route:
    """Declares which examples feed a loss, from one per-example leaf.

    Args:
        path: the leaf (shape ``[B]`` or ``[B, 1]``) that decides.
        equals: route examples whose leaf equals this value.
        not_equal: route examples whose leaf differs from this value (a missing-label
            sentinel such as ``-1``).
        one_of: route examples whose leaf is one of these values.

    With none of them, examples whose leaf is true / non-zero are routed.

    Returns:
        A `Route` for `LossBinding`'s ``route``.

    Raises:
        SpecError: for more than one of ``equals``, ``not_equal``, ``one_of``.

    Examples:
        >>> import funcsplit as fs
        >>> str(fs.route("task", equals=2)), str(fs.route("label", not_equal=-1))
        ('task == 2', 'label != -1')
    """
    given = {k: v for k, v in (("equals", equals), ("not_equal", not_equal), ("one_of", one_of))}
    chosen = [k for k, v in given.items() if v is not None]
    if len(chosen) > 1:
        raise SpecError.single(
            "route", str(path), "at most one of equals=, not_equal=, one_of=", ", ".join(chosen)
        )
    if not chosen:
        return Route(path)
    op = chosen[0]
    value = given[op]
    if op == "one_of":
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise SpecError.single(
                "route", str(path), "one_of= a collection of values", repr(value)
            )
        value = tuple(_value(v) for v in value)
        if not value:
            raise SpecError.single("route", str(path), "one_of= at least one value", "()")
    else:
        value = _value(value)
    return Route(path, op, value)


def _check_name(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SpecError.single(
            "LossBinding", None, "a non-empty name (it names the per-loss metric)", repr(value)
        )


def _check_weight(where: str) -> Callable[[object, attrs.Attribute, object], None]:
    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if not math.isfinite(value):
            raise SpecError.single(where, None, f"a finite {attribute.name}", repr(value))

    return check


def _to_weight(value: object) -> float:
    value = structure.python_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError.single("LossBinding", None, "a number for weight", repr(value))
    return float(value)


def _to_class_weight(value: object) -> tuple[tuple[int, float], ...] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        value = dict(value)  # type: ignore[arg-type]
    out = []
    items = [(structure.python_scalar(c), structure.python_scalar(w)) for c, w in value.items()]
    for cls, weight in sorted(items):
        if isinstance(cls, bool) or not isinstance(cls, int) or cls < 0:
            raise SpecError.single("LossBinding", None, "class ids that are ints >= 0", repr(cls))
        if not math.isfinite(float(weight)) or float(weight) < 0:
            raise SpecError.single("LossBinding", None, "finite class weights >= 0", repr(weight))
        out.append((cls, float(weight)))
    return tuple(out)


def _optional_path(where: str) -> Callable[[object], str | Path | None]:
    return lambda value: None if value is None else paths.check_path_like(value, where)


@attrs.frozen
class LossBinding:
    """Binds one loss to a target in the element and an output of the model.

    Args:
        name: unique name of the loss (names its metric, ``<name>_loss`` in Keras).
        fn: a callable ``(y_true, y_pred) -> values`` (see `LossFn`), a Keras ``Loss``
            object (called unreduced), a registry name such as
            ``"sparse_categorical_crossentropy"``, or a loss from `funcsplit.losses`.
        target: path of the target in the element (a leaf, or a subtree for callables).
        output: path into the model's predictions; ``None`` is the whole predictions,
            ``"1"`` the second output of a tuple. With groups it is relative to the group's
            predictions.
        weight: static weight of this loss in the total (finite).
        sample_weight: optional path of a per-example weight leaf (``[B]`` or ``[B, 1]``).
        route: optional `Route`: which examples feed this loss.
        group: optional model / optimizer group (several models).
        class_weight: optional ``{class_id: weight}`` applied per example by its label.
        reduction: ``"weighted_mean"`` (``Σ w·l / Σ w``, the default) or
            ``"sum_over_batch_size"`` (Keras's ``Σ w·l / B``).

    Raises:
        SpecError: for an empty name, a non-finite weight, a malformed path, an unknown
            registry name or a ``fn`` that is not callable.

    Examples:
        >>> import funcsplit as fs
        >>> b = fs.LossBinding("category_1", "sparse_categorical_crossentropy",
        ...                    target="label_dict/category_1", output="category_1")
        >>> b.weight, b == fs.LossBinding("category_1", "sparse_categorical_crossentropy",
        ...     target="label_dict/category_1", output="category_1")
        (1.0, True)
    """

    name: str = attrs.field(validator=_check_name)
    fn: Any = attrs.field()
    target: str | Path = attrs.field(converter=lambda p: paths.check_path_like(p, "target"))
    output: str | Path | None = attrs.field(default=None, converter=_optional_path("output"))
    weight: float = attrs.field(
        default=1.0, converter=_to_weight, validator=_check_weight("LossBinding")
    )
    sample_weight: str | Path | None = attrs.field(
        default=None, converter=_optional_path("sample_weight"), kw_only=True
    )
    route: Route | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(Route)),
        kw_only=True,
    )
    group: str | None = attrs.field(default=None, kw_only=True)
    class_weight: tuple[tuple[int, float], ...] | None = attrs.field(
        default=None, converter=_to_class_weight, kw_only=True
    )
    reduction: str = attrs.field(default="weighted_mean", kw_only=True)

    def __attrs_post_init__(self) -> None:
        where = f"LossBinding {self.name!r} (target {self.target})"
        if isinstance(self.fn, str):
            registry.get(self.fn, where=where, path=str(self.target))
        elif not callable(self.fn):
            raise SpecError.single(
                where,
                str(self.target),
                "a callable, a Keras Loss or a registry name",
                repr(self.fn),
                "pass e.g. fn='sparse_categorical_crossentropy'",
            )
        if self.group is not None and (not isinstance(self.group, str) or not self.group):
            raise SpecError.single(where, None, "group: a non-empty string", repr(self.group))
        if self.reduction not in REDUCTIONS:
            raise SpecError.single(where, None, f"reduction in {REDUCTIONS}", repr(self.reduction))


def _is_path_leaf(value: object) -> bool:
    return isinstance(value, (str, Path))


def _to_inputs(value: object) -> Any:
    def convert(leaf: object) -> str | Path:
        if not _is_path_leaf(leaf):
            raise SpecError.single(
                "SplitSpec.inputs",
                None,
                "a nested structure (dicts, lists, tuples) of paths (str or Path)",
                f"{leaf!r} of type {type(leaf).__name__}",
                "write inputs like {'image': 'image', 'text': 'text'}; use fs.Path for keys",
            )
        return paths.check_path_like(leaf, "inputs")

    return structure.map_leaves(convert, value, is_leaf=_is_path_leaf)


def _to_losses(value: object) -> tuple[LossBinding, ...]:
    if isinstance(value, LossBinding):
        value = (value,)
    items = tuple(value)  # type: ignore[arg-type]
    for item in items:
        if not isinstance(item, LossBinding):
            raise SpecError.single("SplitSpec.losses", None, "LossBinding values", repr(item))
    return items


def _to_drop(value: object) -> tuple[str | Path, ...]:
    if isinstance(value, (str, Path)):
        value = (value,)
    return tuple(paths.check_path_like(v, "drop") for v in value)  # type: ignore[union-attr]


@attrs.frozen
class SplitSpec:
    """The whole declaration: element structure, model inputs, loss bindings, drops.

    Args:
        element: the `ElementSpec` of the batches.
        inputs: nested structure (dicts, lists, tuples) of paths: what the model is called
            on. A single path gives the tensor itself. With groups, a dict keyed by group.
        losses: the `LossBinding` values (names unique).
        drop: paths of leaves (or subtrees) deliberately unused.
        strict: if True (the default), an unaccounted leaf is a `SpecError` at compile time.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 3)),
        ...                                       "y": fs.Leaf(tf.int32, (None,))})
        >>> split = fs.SplitSpec(spec, inputs="x",
        ...                      losses=(fs.LossBinding("y", "sparse_categorical_crossentropy",
        ...                                             target="y"),))
        >>> split == fs.SplitSpec(spec, inputs="x", losses=split.losses)
        True
    """

    element: ElementSpec = attrs.field(validator=attrs.validators.instance_of(ElementSpec))
    inputs: Any = attrs.field(converter=_to_inputs, eq=structure.freeze)
    losses: tuple[LossBinding, ...] = attrs.field(default=(), converter=_to_losses)
    drop: tuple[str | Path, ...] = attrs.field(default=(), converter=_to_drop)
    strict: bool = attrs.field(default=True, kw_only=True)

    @property
    def groups(self) -> tuple[str, ...]:
        """The binding groups, in order of first use (empty without groups)."""
        return tuple(dict.fromkeys(b.group for b in self.losses if b.group is not None))
