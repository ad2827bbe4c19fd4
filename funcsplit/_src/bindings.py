"""The declarations: `Route`, `LossBinding` and `SplitSpec` (immutable, checked when built)."""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Protocol

import attrs

from funcsplit._src import documents
from funcsplit._src import loading
from funcsplit._src import paths
from funcsplit._src import registry
from funcsplit._src import serialization
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
            ``"sparse_categorical_crossentropy"``, or a loss from `funcsplit.losses`. A
            Keras ``Loss``'s own ``reduction``: its default and ``None`` leave the binding's
            ``reduction`` to reduce, ``"mean_with_sample_weight"`` is the default
            ``Σ w·l / Σ w``; ``"sum"`` and ``"mean"`` are a `SpecError` at compile time.
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

    def to_dict(self) -> dict[str, Any]:
        """The split as a ``funcsplit.split/1`` document: JSON values only.

        User callables and Keras ``Loss`` objects are named holes, ``{"callable": name}``
        (see `callables`); everything else is written out.

        Raises:
            SpecError: for a part JSON cannot hold (a dict key that is not str or int, a
                route value that is not a bool, number or string).
        """
        return serialization.to_dict(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        """The split as JSON text (`to_dict`); `from_json` reads it back.

        Examples:
            >>> import funcsplit as fs, tensorflow as tf
            >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 3)),
            ...                                       "y": fs.Leaf(tf.int32, (None,))})
            >>> split = fs.SplitSpec(spec, inputs="x", losses=fs.LossBinding(
            ...     "y", fs.losses.sparse_categorical_crossentropy(from_logits=True), target="y"))
            >>> fs.SplitSpec.from_json(split.to_json()) == split
            True
            >>> split.to_json(indent=None)[:60]
            '{"format": "funcsplit.split/1", "element": {"dict": {"x": {"'
        """
        return serialization.to_json(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(
        cls,
        document: Mapping[str, Any],
        *,
        losses: Mapping[str, Any] | None = None,
        namedtuples: Mapping[str, type] | None = None,
    ) -> SplitSpec:
        """Reads a split from its document (`to_dict`), executing no code.

        Args:
            document: the ``funcsplit.split/1`` document.
            losses: callables by hole name (``{"my_dice": my_dice}``). Holes not given here
                are filled from `funcsplit.losses.register`, then, for Keras ``Loss``
                objects of Keras or registered with
                ``keras.saving.register_keras_serializable``, through Keras's registry in
                safe mode.
            namedtuples: namedtuple classes by name, for elements or inputs that hold
                namedtuples (without one, a namedtuple class of the same name and fields
                is made, the same one for every load).

        Raises:
            SpecError: naming each wrong field (wrong format version, unknown key, wrong
                type, nesting too deep, a number out of range) and each hole no one filled.
        """
        parts = loading.from_dict(document, losses=losses, namedtuples=namedtuples)
        bindings = []
        problems = []
        for index, kwargs in enumerate(parts.bindings):
            try:
                route = kwargs["route"]
                route = None if route is None else Route(**route)
                bindings.append(LossBinding(**{**kwargs, "route": route}))
            except SpecError as error:
                for p in error.problems:
                    where = f"SplitSpec.from_json field 'losses[{index}]': {p.where}"
                    problems.append(attrs.evolve(p, where=where))
        if problems:
            raise SpecError(problems)
        return cls(parts.element, parts.inputs, tuple(bindings), parts.drop, strict=parts.strict)

    @classmethod
    def from_json(
        cls,
        text: str | bytes,
        *,
        losses: Mapping[str, Any] | None = None,
        namedtuples: Mapping[str, type] | None = None,
    ) -> SplitSpec:
        """Reads a split from JSON text (`to_json`), executing no code.

        The text is parsed strictly (no NaN, no duplicate keys, bounded nesting and number
        sizes); see `from_dict` for ``losses`` and ``namedtuples``.

        Raises:
            SpecError: naming each wrong field and each hole no one filled.

        Examples:
            >>> import funcsplit as fs, tensorflow as tf
            >>> def my_dice(y_true, y_pred):
            ...     return tf.reduce_mean(tf.abs(y_true - y_pred))
            >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 3)),
            ...                                       "y": fs.Leaf(tf.float32, (None, 3))})
            >>> split = fs.SplitSpec(spec, inputs="x", losses=fs.LossBinding("y", my_dice, "y"))
            >>> split.to_dict()["losses"][0]["fn"]
            {'callable': 'my_dice'}
            >>> fs.SplitSpec.from_json(split.to_json(), losses={"my_dice": my_dice}) == split
            True
        """
        document = documents.parse(text)
        return cls.from_dict(document, losses=losses, namedtuples=namedtuples)

    def callables(self) -> dict[str, Any]:
        """The user callables (and Keras ``Loss`` objects) of the bindings, by hole name.

        ``from_json(split.to_json(), losses=split.callables())`` gives back an equal split.
        A callable registered with `funcsplit.losses.register` keeps its registered name;
        others are named by ``__name__`` (else their class name), with ``_2``, ``_3``... for
        different callables of one name.
        """
        return serialization.callables(self.losses)

    def fingerprint(self) -> str:
        """A short stable hash (16 hex digits) of the split's canonical JSON.

        Equal splits have equal fingerprints, whatever their dict key order, in any process.

        Examples:
            >>> import funcsplit as fs, tensorflow as tf
            >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 3))})
            >>> split = fs.SplitSpec(spec, inputs="x")
            >>> same = fs.SplitSpec(spec, inputs="x")
            >>> len(split.fingerprint()), split.fingerprint() == same.fingerprint()
            (16, True)
        """
        return serialization.fingerprint(self.to_dict())
