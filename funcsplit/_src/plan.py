"""Resolve: a `SplitSpec` to a backend-neutral `Plan` (pure Python, no TensorFlow ops).

Every path is resolved against the element, every binding checked, every leaf accounted for,
and every mistake collected into one `SpecError`. The TensorFlow and JAX lowerings both start
from the same plan, so they cannot differ in what they route.
"""

from __future__ import annotations

from typing import Any

import attrs
import tensorflow as tf

from funcsplit._src import paths
from funcsplit._src import registry
from funcsplit._src import structure
from funcsplit._src.bindings import LossBinding
from funcsplit._src.bindings import Route
from funcsplit._src.bindings import SplitSpec
from funcsplit._src.errors import Problem
from funcsplit._src.errors import close_matches
from funcsplit._src.errors import raise_if_any
from funcsplit._src.paths import Path
from funcsplit._src.spec import Leaf


@attrs.frozen
class BoundLoss:
    """A binding with its paths resolved: what the lowerings compute.

    Attributes:
        binding: the `LossBinding` as declared.
        fn: its loss: a `BuiltinLoss` for registry names, else the callable.
        target: canonical path of the target in the element.
        sample_weight: canonical path of the sample-weight leaf, or None.
        route: the route with its path canonical, or None.
    """

    binding: LossBinding
    fn: Any
    target: Path
    sample_weight: Path | None
    route: Route | None

    @property
    def name(self) -> str:
        """The binding's name."""
        return self.binding.name

    @property
    def weight_leaves(self) -> dict[str, Path]:
        """The leaves `split` hands to the loss for this binding (``route``, ``sample_weight``)."""
        out = {}
        if self.route is not None:
            out["route"] = self.route.path
        if self.sample_weight is not None:
            out["sample_weight"] = self.sample_weight
        return out


@attrs.frozen
class Plan:
    """The resolved split: canonical paths, bindings, and the role of every leaf.

    Attributes:
        split: the `SplitSpec` it was resolved from.
        inputs: the inputs structure with canonical `Path` leaves (its lists as tuples).
        losses: the `BoundLoss` values, in declaration order.
        roles: ``(path, leaf, roles)`` for every leaf of the element, in `tf.nest` order.
    """

    split: SplitSpec
    inputs: Any = attrs.field(eq=structure.freeze)
    losses: tuple[BoundLoss, ...]
    roles: tuple[tuple[Path, Leaf, tuple[str, ...]], ...]

    @property
    def unused(self) -> tuple[Path, ...]:
        """Leaves with no role (only possible with ``strict=False``)."""
        return tuple(path for path, _, roles in self.roles if not roles)


def _tuples(node: Any) -> Any:
    """Lists as tuples: `split` returns dicts and tuples only. A list returned by a
    ``dataset.map`` is stacked into one tensor by `tf.data`; a tuple stays separate inputs
    (a Keras model built on a list of inputs takes them as a tuple too)."""
    if isinstance(node, list):
        return tuple(_tuples(v) for v in node)
    if isinstance(node, dict):
        return {k: _tuples(v) for k, v in node.items()}
    if structure.is_namedtuple(node):
        return type(node)(*(_tuples(v) for v in node))
    if isinstance(node, tuple):
        return tuple(_tuples(v) for v in node)
    return node


def _leaves_under(element: Any, keys: tuple) -> list[tuple]:
    node = structure.get(element, keys)
    return [(*keys, *sub) for sub, _ in structure.iter_paths(node)]


class _Resolver:
    """Collects problems while resolving one split (internal to `resolve`)."""

    def __init__(self, split: SplitSpec):
        self.split = split
        self.tree = split.element.structure
        self.problems: list[Problem] = []
        self.roles: dict[tuple, list[str]] = {k: [] for k, _ in structure.iter_paths(self.tree)}
        self.unresolved: dict[str, str] = {}  # a path that names nothing -> what it is for

    def path(self, path: str | Path, where: str) -> tuple | None:
        problem = paths.problem(self.tree, path, where)
        if problem is not None:
            self.problems.append(problem)
            self.unresolved.setdefault(str(path), where)
            return None
        return paths.resolve(self.tree, path, where)

    def unaccounted_fix(self, keys: tuple) -> str:
        """How to account for a leaf nothing uses: fix a misspelled path that meant it, if one
        looks like it, else use it or drop it."""
        text = paths.render(keys)
        near = close_matches(text, self.unresolved)
        if near:
            return (
                f"fix the path {near[0]!r} of {self.unresolved[near[0]]}: it names nothing, "
                f"and {text!r} is the leaf it looks like"
            )
        return f"use it, or add {text!r} to drop= (or pass strict=False)"

    def add(self, where: str, path: tuple, expected: str, found: str, fix: str = "") -> None:
        self.problems.append(Problem(where, paths.render(path), expected, found, fix))

    def mark(self, keys: tuple, role: str) -> None:
        for leaf_keys in _leaves_under(self.tree, keys):
            self.roles[leaf_keys].append(role)

    def per_example_leaf(self, keys: tuple, where: str, what: str) -> Leaf | None:
        node = structure.get(self.tree, keys)
        if not isinstance(node, Leaf):
            self.add(where, keys, f"a leaf for {what}", "a subtree " + structure.draw(node))
            return None
        per_example = node.rank == 1 or (node.rank == 2 and node.shape[1] == 1)
        if node.kind != "dense" or not per_example:
            self.add(
                where,
                keys,
                f"a per-example dense leaf of shape [B] or [B, 1] for {what}",
                node.describe(),
                "point it at one value per example",
            )
            return None
        return node


def _value_fits(value: object, dtype: tf.DType) -> bool:
    if dtype == tf.string:
        return isinstance(value, (str, bytes))
    if isinstance(value, (str, bytes)):
        return False
    if dtype == tf.bool:
        return isinstance(value, bool) or value in (0, 1)
    if dtype.is_integer:  # in range too: tf.constant wraps 256 to 0 in uint8, silently
        return float(value).is_integer() and dtype.min <= value <= dtype.max
    return not dtype.is_floating or abs(value) <= float(dtype.max)  # 1e300 becomes inf in float32


def _resolve_route(r: _Resolver, binding: LossBinding, where: str) -> Route | None:
    route = binding.route
    keys = r.path(route.path, f"{where} route")
    if keys is None:
        return None
    r.mark(keys, f"route of {binding.name}")
    leaf = r.per_example_leaf(keys, f"{where} route", "a route")
    if leaf is None:
        return None
    if route.op == "truthy" and leaf.dtype == tf.string:
        r.add(
            f"{where} route",
            keys,
            "a bool or numeric leaf for route(path)",
            "a string leaf",
            "use route(path, equals='value') for string leaves",
        )
        return None
    values = route.value if route.op == "one_of" else (route.value,)
    if route.op != "truthy" and not all(_value_fits(v, leaf.dtype) for v in values):
        r.add(
            f"{where} route",
            keys,
            f"values that fit the leaf's dtype {leaf.dtype.name}",
            repr(route.value),
        )
        return None
    return attrs.evolve(route, path=Path(keys))


def _resolve_binding(r: _Resolver, index: int, binding: LossBinding) -> BoundLoss | None:
    where = f"losses[{index}] {binding.name!r}"
    fn = registry.as_loss(binding.fn)
    target = r.path(binding.target, f"{where} target")
    ok = target is not None
    if target is not None:
        r.mark(target, f"target of {binding.name}")
        node = structure.get(r.tree, target)
        leaves = [leaf for _, leaf in structure.iter_paths(node)]
        if any(leaf.rank == 0 for leaf in leaves):
            r.add(f"{where} target", target, "targets with a batch dimension", "a scalar leaf")
            ok = False
        builtin = isinstance(fn, registry.BuiltinLoss)
        if (builtin or binding.class_weight) and not isinstance(node, Leaf):
            r.add(
                f"{where} target",
                target,
                f"a leaf for {fn if builtin else 'class_weight'}",
                "a subtree " + structure.draw(node),
                "point the target at one leaf, or use a callable that takes the subtree",
            )
            ok = False
        elif builtin and node.dtype == tf.string:
            r.add(f"{where} target", target, f"a numeric leaf for {fn}", node.describe())
            ok = False
        elif (
            builtin
            and fn.integer_target_rank is not None
            and (
                not (node.dtype.is_integer or node.dtype == tf.bool)
                or node.rank != fn.integer_target_rank
            )
        ):
            r.add(
                f"{where} target",
                target,
                f"integer tokens of shape [B, T] for {fn}",
                node.describe(),
            )
            ok = False
    sample_weight = None
    if binding.sample_weight is not None:
        keys = r.path(binding.sample_weight, f"{where} sample_weight")
        if keys is not None:
            r.mark(keys, f"sample weight of {binding.name}")
            leaf = r.per_example_leaf(keys, f"{where} sample_weight", "a sample weight")
            if leaf is not None and leaf.dtype == tf.string:
                r.add(f"{where} sample_weight", keys, "a numeric leaf", leaf.describe())
            elif leaf is not None:
                sample_weight = Path(keys)
        ok = ok and sample_weight is not None
    if (
        isinstance(fn, registry.BuiltinLoss)
        and fn.batch_level
        and (binding.sample_weight is not None or binding.class_weight)
    ):
        r.add(
            where,
            target or (),
            "no per-example weights on a batch-level loss",
            f"{fn} with sample_weight / class_weight",
            "batch-level losses (dice) cannot weight examples: drop the weights",
        )
        ok = False
    route = None
    if binding.route is not None:
        route = _resolve_route(r, binding, where)
        ok = ok and route is not None
    reduction_problem = _keras_reduction_problem(binding, fn, where)
    if reduction_problem is not None:
        r.problems.append(reduction_problem)
        ok = False
    if not ok:
        return None
    return BoundLoss(binding, fn, Path(target), sample_weight, route)


def _is_keras_loss(fn: Any) -> bool:
    """Whether ``fn`` is a Keras ``Loss`` object (by its classes: the core imports no Keras)."""
    return any(c.__name__ == "Loss" and c.__module__.startswith("keras") for c in type(fn).__mro__)


# A Keras Loss object's own reduction, and what funcsplit does with it. Keras's default
# ("sum_over_batch_size") and None say nothing a binding must follow: funcsplit calls the loss
# unreduced and the binding's `reduction=` reduces. The others are refused, saying why.
_KERAS_REDUCTION_FIX = {
    "sum": (
        "a sum over the batch grows with the batch size and the routed count, which a "
        "binding's per-example reduction does not offer; construct the loss without "
        "reduction= and choose LossBinding(reduction='weighted_mean' | 'sum_over_batch_size')"
        ", scaling it with weight= if needed"
    ),
    "mean": (
        "Keras's 'mean' is its 'sum_over_batch_size' (Σ w·l / B), which funcsplit offers as "
        "LossBinding(reduction='sum_over_batch_size'); its default is Σ w·l / Σ w: say which "
        "on the binding and construct the loss without reduction="
    ),
}


def _keras_reduction_problem(binding: LossBinding, fn: Any, where: str) -> Problem | None:
    inner = fn.fn if isinstance(fn, registry.RowWise) else fn
    if not _is_keras_loss(inner):
        return None
    reduction = getattr(inner, "reduction", None)
    if reduction in (None, "none", "sum_over_batch_size"):
        return None
    if reduction == "mean_with_sample_weight":  # Σ w·l / Σ w: funcsplit's weighted_mean
        if binding.reduction == "weighted_mean":
            return None
        fix = (
            "Keras's 'mean_with_sample_weight' is funcsplit's default Σ w·l / Σ w, which "
            f"contradicts reduction={binding.reduction!r} on the binding: drop one of them"
        )
    else:
        fix = _KERAS_REDUCTION_FIX.get(reduction, "construct the loss without reduction=")
    return Problem(
        f"{where} fn",
        str(binding.target),
        "a Keras Loss whose reduction funcsplit can honour per binding: its default "
        "'sum_over_batch_size' or None (the binding reduces), or 'mean_with_sample_weight'",
        f"{type(inner).__name__}(reduction={reduction!r})",
        fix,
    )


def _check_groups(r: _Resolver, inputs: Any) -> None:
    split = r.split
    grouped = [b for b in split.losses if b.group is not None]
    if not grouped:
        return
    for i, b in enumerate(split.losses):
        if b.group is None:
            r.problems.append(
                Problem(
                    f"losses[{i}] {b.name!r}",
                    str(b.target),
                    "a group (other bindings have one)",
                    "group=None",
                    "give every binding a group, or none",
                )
            )
    groups = set(split.groups)
    if not isinstance(inputs, dict) or set(inputs) != groups:
        found = sorted(inputs) if isinstance(inputs, dict) else structure.draw(inputs)
        r.problems.append(
            Problem(
                "SplitSpec.inputs",
                None,
                f"a dict keyed by the groups {sorted(groups)}",
                str(found),
                "give each group's model its inputs: inputs={group: paths, ...}",
            )
        )


def resolve(split: SplitSpec) -> Plan:
    """Resolves a `SplitSpec` into a `Plan`, or raises every problem found at once.

    Raises:
        SpecError: naming each offending path: unknown or ambiguous paths, duplicate binding
            names, targets or weights of the wrong kind, misplaced groups, dropped leaves
            that are used, and (strict mode) leaves that nothing uses.
    """
    r = _Resolver(split)

    resolved: dict[str | Path, Path | None] = {}
    for slot, path in structure.iter_paths(split.inputs):
        keys = r.path(path, "inputs" + (f" {paths.render(slot)}" if slot else ""))
        if keys is not None:
            r.mark(keys, "input" + (f" {paths.render(slot)}" if slot else ""))
            resolved[path] = Path(keys)
    inputs = _tuples(
        structure.map_leaves(
            resolved.get, split.inputs, is_leaf=lambda v: isinstance(v, (str, Path))
        )
    )
    seen: dict[str, int] = {}
    bound = []
    for i, binding in enumerate(split.losses):
        if binding.name in seen:
            r.problems.append(
                Problem(
                    f"losses[{i}] {binding.name!r}",
                    str(binding.target),
                    "unique binding names",
                    f"the name {binding.name!r} is also losses[{seen[binding.name]}]",
                    "rename one of them",
                )
            )
        seen.setdefault(binding.name, i)
        bound.append(_resolve_binding(r, i, binding))
    _check_groups(r, split.inputs)
    for path in split.drop:
        keys = r.path(path, "drop")
        if keys is None:
            continue
        for leaf_keys in _leaves_under(r.tree, keys):
            if r.roles[leaf_keys]:
                r.add(
                    "drop",
                    leaf_keys,
                    "only leaves nothing uses",
                    "a leaf used as " + ", ".join(r.roles[leaf_keys]),
                    "remove it from drop=",
                )
        r.mark(keys, "dropped")
    if split.strict:
        for keys, roles in r.roles.items():
            if not roles:
                leaf = structure.get(r.tree, keys)
                r.add(
                    "unaccounted leaf",
                    keys,
                    "every leaf to be an input, a target, a sample weight, a route or dropped",
                    f"{leaf.describe()} used by nothing",
                    r.unaccounted_fix(keys),
                )
    raise_if_any(r.problems)
    roles = tuple((Path(k), structure.get(r.tree, k), tuple(v)) for k, v in r.roles.items())
    return Plan(split, inputs, tuple(bound), roles)
