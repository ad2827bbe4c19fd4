"""Strategies for declarations over a given structure: routes, bindings, whole split specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

import funcsplit as fs
from funcsplit.testing import _checks
from funcsplit.testing._values import leafwise_squared_error

LossFns = Callable[[Any], st.SearchStrategy[Any]]


def binding_names() -> st.SearchStrategy[str]:
    """Binding names: identifiers, and names with ``/``, digits, spaces or unicode.

    Examples:
        >>> from hypothesis import given, settings
        >>> from funcsplit.testing import strategies as fst
        >>> @settings(max_examples=10, database=None)
        ... @given(fst.binding_names())
        ... def test(name):
        ...     assert name.strip()
        >>> test()
    """
    return st.one_of(
        st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True),
        st.text(
            st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), min_size=1, max_size=6
        ).filter(str.strip),
    )


def per_example_paths(spec: fs.ElementSpec) -> tuple[fs.Path, ...]:
    """The leaves with one value per example (dense, shape ``[B]`` or ``[B, 1]``).

    Routes and sample weights must point at such leaves.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> from funcsplit.testing import strategies as fst
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "task": fs.Leaf(tf.int32, (None, 1))})
        >>> fst.per_example_paths(spec)
        (Path(('task',)),)
    """
    spec = _checks.check_element_spec("spec", spec)
    return tuple(
        path
        for path, leaf in spec.leaves
        if leaf.kind == "dense" and (leaf.shape[1:] in ((), (1,)))
    )


def _route_value(dtype: tf.DType) -> st.SearchStrategy[Any]:
    """Route values that fit ``dtype`` exactly (what `fs.route` compares the leaf with)."""
    if dtype == tf.string:
        return st.text(st.characters(codec="utf-8"), max_size=4)
    if dtype == tf.bool:
        return st.booleans()
    if dtype.is_integer:
        small = st.integers(max(dtype.min, -3), min(dtype.max, 3))
        values = st.one_of(small, st.integers(dtype.min, dtype.max))
        # NumPy scalars of the leaf's dtype too: what np.unique(labels) gives.
        as_numpy = values.map(lambda v: np.array(v, dtype=dtype.as_numpy_dtype)[()])
        return st.one_of(values, as_numpy)
    np_dtype = np.float32 if dtype == tf.bfloat16 else dtype.as_numpy_dtype
    exact = hnp.from_dtype(  # no subnormals: TensorFlow flushes them to zero on the CPU
        np.dtype(np_dtype), allow_nan=False, allow_infinity=False, allow_subnormal=False
    )
    return st.one_of(st.sampled_from([0.0, 1.0, -1.0]), exact.map(float), exact)


def routes(
    spec: fs.ElementSpec, *, paths: tuple[fs.Path, ...] | None = None
) -> st.SearchStrategy[fs.Route]:
    """Routes over the per-example leaves of ``spec``, with values that fit each leaf's dtype.

    ``route(path)`` (truthy) for numeric and bool leaves, and ``equals=``, ``not_equal=``,
    ``one_of=`` with values of the leaf's dtype (strings for string leaves).

    Args:
        spec: the element spec.
        paths: the leaves to route on (default: every per-example leaf).

    Returns:
        A strategy of `fs.Route` values with tuple-form paths.

    Raises:
        InvalidArgument: when there is no per-example leaf to route on, or a path in
            ``paths`` is not one.

    Examples:
        >>> from hypothesis import given, settings
        >>> import funcsplit as fs, tensorflow as tf
        >>> from funcsplit.testing import strategies as fst
        >>> spec = fs.ElementSpec.from_structure({"task": fs.Leaf(tf.int32, (None,))})
        >>> @settings(max_examples=10, database=None)
        ... @given(fst.routes(spec))
        ... def test(route):
        ...     assert route.path == fs.Path(("task",))
        >>> test()
    """
    allowed = per_example_paths(spec)
    chosen = allowed if paths is None else tuple(fs.Path(p) for p in paths)
    bad = [str(p) for p in chosen if p not in allowed]
    if bad or not chosen:
        raise InvalidArgument(
            f"routes() needs per-example leaves (dense, [B] or [B, 1]); {bad or 'none'} "
            f"of {[str(p) for p in allowed]}"
        )
    return st.sampled_from(chosen).flatmap(lambda path: _route(path, spec[path].dtype))


def _route(path: fs.Path, dtype: tf.DType) -> st.SearchStrategy[fs.Route]:
    value = _route_value(dtype)
    choices = [
        value.map(lambda v: fs.route(path, equals=v)),
        value.map(lambda v: fs.route(path, not_equal=v)),
        st.lists(value, min_size=1, max_size=3).map(lambda vs: fs.route(path, one_of=vs)),
    ]
    if dtype != tf.string:
        choices.insert(0, st.just(fs.route(path)))
    return st.one_of(choices)


def loss_fns(target: fs.Leaf | fs.ElementSpec) -> st.SearchStrategy[Any]:
    """Losses that are valid for a target (a `fs.Leaf` or a subtree `fs.ElementSpec`).

    For a dense numeric leaf: ``"mse"``, ``"mae"``, ``"huber"``, `fs.losses.huber` with
    ``delta=2``, a Keras ``MeanSquaredError`` and `leafwise_squared_error`. For any other
    target (string, ragged, sparse, a subtree): `leafwise_squared_error`. `predictions`
    knows the outputs of all of them.

    Returns:
        A strategy of values for `fs.LossBinding`'s ``fn``.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> from funcsplit.testing import strategies as fst
        >>> from hypothesis import given, settings
        >>> @settings(max_examples=5, database=None)
        ... @given(fst.loss_fns(fs.Leaf(tf.string, (None,))))
        ... def test(fn):
        ...     assert fn is fst.leafwise_squared_error
        >>> test()
    """
    if isinstance(target, fs.Leaf) and target.kind == "dense" and target.dtype != tf.string:
        return st.one_of(
            st.sampled_from(
                ["mse", "mae", "huber", fs.losses.huber(delta=2.0), leafwise_squared_error]
            ),
            st.builds(keras.losses.MeanSquaredError),
        )
    if not isinstance(target, (fs.Leaf, fs.ElementSpec)):
        raise InvalidArgument(f"loss_fns() takes a Leaf or an ElementSpec, got {target!r}")
    return st.just(leafwise_squared_error)


def _node_paths(spec: fs.ElementSpec) -> tuple[fs.Path, ...]:
    """Every leaf and subtree path (the root only when the element is a single leaf)."""
    out = dict.fromkeys(spec.paths)
    for path in spec.paths:
        for end in range(1, len(path)):
            out.setdefault(fs.Path(path.keys[:end]))
    return tuple(out)


def bindings(
    spec: fs.ElementSpec,
    *,
    name: str | st.SearchStrategy[str] | None = None,
    group: str | None = None,
    fns: LossFns = loss_fns,
    subtree_targets: bool = True,
) -> st.SearchStrategy[fs.LossBinding]:
    """One valid `fs.LossBinding` over ``spec``: target, loss, weight, route, sample weight.

    The output is the binding's name (``output=Path((name,))``, so `predictions` builds
    ``{name: prediction}``); routes come from `routes`, sample weights are numeric
    per-example leaves, the static weight is a finite float (0 and negatives included), the
    reduction either of funcsplit's.

    Args:
        spec: the element spec.
        name: the binding name, or a strategy of them (default `binding_names`).
        group: the binding's group, if any.
        fns: gives a strategy of losses for a target (`loss_fns` by default).
        subtree_targets: whether targets may be subtrees (with losses that take them).

    Returns:
        A strategy of `fs.LossBinding` values with tuple-form paths.

    Examples:
        >>> from hypothesis import given, settings
        >>> import funcsplit as fs, tensorflow as tf
        >>> from funcsplit.testing import strategies as fst
        >>> spec = fs.ElementSpec.from_structure({"y": fs.Leaf(tf.float32, (None,))})
        >>> @settings(max_examples=5, database=None)
        ... @given(fst.bindings(spec, name="y"))
        ... def test(binding):
        ...     assert binding.name == "y" and binding.target == fs.Path(("y",))
        >>> test()
    """
    spec = _checks.check_element_spec("spec", spec)
    names = binding_names() if name is None else name
    if not isinstance(names, st.SearchStrategy):
        if not isinstance(names, str) or not names.strip():
            raise InvalidArgument(f"name must be a non-empty string or a strategy, got {name!r}")
        names = st.just(names)
    if group is not None and (not isinstance(group, str) or not group):
        raise InvalidArgument(f"group must be a non-empty string or None, got {group!r}")
    if not callable(fns):
        raise InvalidArgument(f"fns must be a function target -> strategy, got {fns!r}")
    return _bindings(spec, names, group, fns, bool(subtree_targets))


@st.composite
def _bindings(draw: Any, spec, names, group, fns, subtree_targets) -> fs.LossBinding:
    name = draw(names)
    targets = _node_paths(spec) if subtree_targets else spec.paths
    target = draw(st.sampled_from(targets))
    fn = draw(fns(spec[target]))
    per_example = per_example_paths(spec)
    weight_paths = [p for p in per_example if spec[p].dtype != tf.string]
    batch_level = isinstance(fn, fs.losses.BuiltinLoss) and fn.batch_level
    sample_weight = None
    if weight_paths and not batch_level and draw(st.booleans()):
        sample_weight = draw(st.sampled_from(weight_paths))
    route = draw(st.none() | routes(spec)) if per_example else None
    weight = draw(st.sampled_from([1.0, 0.0, 0.5, 2.0, -1.0, 1e3]) | st.floats(-10, 10))
    if draw(st.booleans()):
        weight = np.float32(weight)  # NumPy scalars work wherever numbers do
    reduction = draw(st.sampled_from(["weighted_mean", "weighted_mean", "sum_over_batch_size"]))
    return fs.LossBinding(
        name,
        fn,
        target=target,
        output=fs.Path((name,)),
        weight=weight,
        sample_weight=sample_weight,
        route=route,
        group=group,
        reduction=reduction,
    )


def split_specs(
    spec: fs.ElementSpec,
    *,
    min_bindings: int = 0,
    max_bindings: int = 3,
    max_groups: int = 2,
    fns: LossFns = loss_fns,
    subtree_targets: bool = True,
) -> st.SearchStrategy[fs.SplitSpec]:
    """Valid split specs over ``spec``, with every leaf accounted for (``strict=True``).

    Draws `bindings` (unique names; with groups, every binding has one and ``inputs`` is a
    dict keyed by group), then sends each leaf that no binding uses to the inputs or to
    ``drop`` (whole subtrees at times). Some leaves serve several roles (a target that is
    also an input, a route key that is also a sample weight). Inputs are a single path, a
    dict, a list, a tuple or a nested mix of them. Paths are in tuple form (`fs.Path`).

    Args:
        spec: the element spec.
        min_bindings: the fewest loss bindings.
        max_bindings: the most loss bindings.
        max_groups: the most groups (0: never groups).
        fns: gives a strategy of losses for a target (`loss_fns` by default).
        subtree_targets: whether targets may be subtrees.

    Returns:
        A strategy of `fs.SplitSpec` values that `fs.compile` accepts.

    Raises:
        InvalidArgument: for bounds out of order or range.

    Examples:
        >>> from hypothesis import given, settings
        >>> import funcsplit as fs, tensorflow as tf
        >>> from funcsplit.testing import strategies as fst
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None,))})
        >>> @settings(max_examples=5, database=None)
        ... @given(fst.split_specs(spec, min_bindings=1))
        ... def test(split):
        ...     roles = fs.compile(split).plan.roles
        ...     assert all(leaf_roles for _, _, leaf_roles in roles)
        >>> test()
    """
    spec = _checks.check_element_spec("spec", spec)
    _checks.check_int("min_bindings", min_bindings, minimum=0)
    _checks.check_int("max_bindings", max_bindings, minimum=0)
    _checks.check_order("min_bindings", min_bindings, "max_bindings", max_bindings)
    _checks.check_int("max_groups", max_groups, minimum=0)
    if not callable(fns):
        raise InvalidArgument(f"fns must be a function target -> strategy, got {fns!r}")
    return _split_specs(spec, min_bindings, max_bindings, max_groups, fns, bool(subtree_targets))


def _under(spec: fs.ElementSpec, path: fs.Path) -> set[fs.Path]:
    return {p for p in spec.paths if p.keys[: len(path)] == path.keys}


def _collapse(draw: Any, spec: fs.ElementSpec, chosen: list[fs.Path]) -> list[fs.Path]:
    """At times replaces leaves by a subtree whose leaves are all chosen."""
    if not chosen or not draw(st.booleans()):
        return chosen
    pool, out, covered = set(chosen), [], set()
    for node in sorted(_node_paths(spec), key=len):
        under = _under(spec, node)
        if len(node) and under <= pool and not under & covered and draw(st.booleans()):
            out.append(node)
            covered |= under
    return out + [p for p in chosen if p not in covered]


def _arrange(draw: Any, chosen: list[fs.Path]) -> Any:
    """A nested structure (single path, dict, list, tuple, dict of lists) of paths."""
    if len(chosen) == 1 and draw(st.booleans()):
        return chosen[0]
    kind = draw(st.sampled_from(["dict", "list", "tuple", "nested"]))
    if kind == "list":
        return list(chosen)
    if kind == "tuple":
        return tuple(chosen)
    slots = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
    if kind == "nested" and len(chosen) > 1:
        cut = draw(st.integers(1, len(chosen) - 1))
        return {"head": _arrange(draw, chosen[:cut]), "tail": list(chosen[cut:])}
    names = draw(st.lists(slots, min_size=len(chosen), max_size=len(chosen), unique=True))
    return dict(zip(names, chosen))


@st.composite
def _split_specs(draw: Any, spec, min_bindings, max_bindings, max_groups, fns, subtrees):
    count = draw(st.integers(min_bindings, max_bindings))
    names = draw(st.lists(binding_names(), min_size=count, max_size=count, unique=True))
    group_count = draw(st.integers(0, min(max_groups, count)))
    group_names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9]{0,4}", fullmatch=True),
            min_size=group_count,
            max_size=group_count,
            unique=True,
        )
    )
    groups = [
        None
        if not group_names
        else group_names[i]
        if i < group_count
        else draw(st.sampled_from(group_names))
        for i in range(count)
    ]
    losses = tuple(
        draw(_bindings(spec, st.just(n), g, fns, subtrees)) for n, g in zip(names, groups)
    )
    used: set[fs.Path] = set()
    for b in losses:
        for path in (b.target, b.sample_weight, b.route.path if b.route else None):
            if path is not None:
                used |= _under(spec, fs.Path(path))
    rest = [p for p in spec.paths if p not in used]
    to_input = [draw(st.booleans()) for _ in rest]
    dropped = [p for p, keep in zip(rest, to_input) if not keep]
    kept = [p for p in spec.paths if p not in dropped]
    inputs = [p for p, keep in zip(rest, to_input) if keep]
    inputs += draw(st.lists(st.sampled_from(kept), max_size=2)) if kept else []
    drop = tuple(_collapse(draw, spec, dropped))
    if not group_names:
        structure = _arrange(draw, _collapse(draw, spec, inputs)) if inputs else {}
        return fs.SplitSpec(spec, inputs=structure, losses=losses, drop=drop)
    per_group: dict[str, list[fs.Path]] = {g: [] for g in group_names}
    for path in inputs:
        per_group[draw(st.sampled_from(group_names))].append(path)
    structure = {
        g: _arrange(draw, chosen or [draw(st.sampled_from(kept or spec.paths))])
        for g, chosen in per_group.items()
    }
    return fs.SplitSpec(spec, inputs=structure, losses=losses, drop=drop)
