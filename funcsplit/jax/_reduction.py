"""Lower a plan's bindings to JAX: route masks, safe targets, the exact reduction.

The same formulas as the TensorFlow lowering (``funcsplit/_src/tf_reduction.py``): for a
per-example loss ``Σ_i w_i·l_i / Σ_i w_i`` with ``w_i`` the route mask times the sample weight
times the class weight; routed-away targets replaced by zeros before the loss sees them; an
empty route gives 0 with finite gradients (a double-``where`` division). Shapes are static, so
every function here is jittable; with ``axis_name`` (inside ``shard_map`` / ``pmap``)
denominators are summed over that axis, as the TF lowering sums them over replicas.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcsplit._src import loss_errors
from funcsplit._src import registry
from funcsplit._src.errors import SpecError
from funcsplit._src.plan import BoundLoss
from funcsplit._src.plan import Plan
from funcsplit._src.result import LossResult
from funcsplit._src.routing import binding_arguments
from funcsplit._src.routing import select_output
from funcsplit.jax import _losses as jax_losses

_FLOAT = jnp.float32


def route_mask(route: Any, leaf: Any) -> jax.Array:
    """The boolean ``[B]`` mask of the examples a route sends to its loss."""
    leaf = jnp.reshape(jnp.asarray(leaf), (-1,))
    if route.op == "truthy":
        return leaf if leaf.dtype == jnp.bool_ else leaf != 0
    values = route.value if route.op == "one_of" else (route.value,)
    constants = jnp.asarray(values, dtype=leaf.dtype)
    if route.op == "one_of":
        return jnp.any(leaf[:, None] == constants[None, :], axis=1)
    equal = leaf == constants[0]
    return equal if route.op == "equals" else ~equal


def _broadcast(mask: jax.Array, ndim: int) -> jax.Array:
    return jnp.reshape(mask, (-1,) + (1,) * max(ndim - 1, 0))


def safe_targets(y_true: Any, mask: jax.Array) -> Any:
    """Replaces the targets of routed-away examples by zeros (a ``-1`` label, a NaN)."""

    def one(value: Any) -> jax.Array:
        value = jnp.asarray(value)
        return jnp.where(_broadcast(mask, value.ndim), value, jnp.zeros_like(value))

    return jax.tree.map(one, y_true)


def _class_weights(bound: BoundLoss, y_true: Any) -> jax.Array:
    pairs = bound.binding.class_weight
    top = max(c for c, _ in pairs)
    table = [1.0] * (top + 2)
    for cls, weight in pairs:
        table[cls] = weight
    y_true = jnp.asarray(y_true)
    if y_true.ndim >= 2 and y_true.shape[-1] != 1:
        labels = jnp.argmax(y_true, axis=-1).astype(jnp.int32)
    else:
        labels = y_true.astype(jnp.int32)
    labels = jnp.reshape(labels, (labels.shape[0], -1))[:, 0]
    labels = jnp.where((labels < 0) | (labels > top), top + 1, labels)
    return jnp.asarray(table, _FLOAT)[labels]


def _global_sum(value: jax.Array, axis_name: Hashable | None) -> jax.Array:
    return value if axis_name is None else jax.lax.psum(value, axis_name)


def _loss_callable(bound: BoundLoss) -> Callable[..., Any]:
    fn = bound.fn
    return jax_losses.registry_loss(fn) if isinstance(fn, registry.BuiltinLoss) else fn


def _accepts_mask(fn: Callable[..., Any]) -> bool:
    import inspect

    try:
        return "mask" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _concrete(mask: jax.Array) -> np.ndarray | None:
    """The mask's values if they are known now (not under `jax.jit`), else None."""
    try:
        return np.asarray(mask)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _checked_call(bound: BoundLoss, fn: Callable[..., Any], y_true: Any, y_pred: Any) -> Any:
    """Calls the binding's loss; a failure names the binding, its ``fn`` and the shapes."""
    loss_errors.check_prediction_rank(bound, y_pred)
    try:
        return fn(y_true, y_pred)
    except (ValueError, TypeError) as error:
        if isinstance(error, SpecError):
            raise
        shapes = jax.tree.map(lambda t: getattr(t, "shape", t), (y_true, y_pred))
        raise loss_errors.call_failure(bound, error, shapes) from error


def _per_example(bound: BoundLoss, values: jax.Array, y_pred: Any) -> jax.Array:
    """``[B]`` float32 values: the mean over non-batch axes; a batch mismatch is named."""
    batch = jax.tree.leaves(y_pred)[0].shape[:1]
    if batch and values.shape[0] != batch[0]:
        raise loss_errors.batch_mismatch(bound, batch[0], values.shape)
    values = values.astype(_FLOAT)
    if values.ndim > 1:
        values = jnp.mean(values, axis=tuple(range(1, values.ndim)))
    return values


def reduce_binding(
    bound: BoundLoss,
    y_true: Any,
    y_pred: Any,
    extra: dict[str, Any],
    axis_name: Hashable | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One binding's value and routed count, exactly as the semantics say.

    Args:
        bound: the resolved binding.
        y_true: its target (an array, or a pytree for a subtree).
        y_pred: its predictions.
        extra: the binding's ``route`` and ``sample_weight`` leaves from ``split``.
        axis_name: a mapped axis to sum denominators over (``shard_map`` / ``pmap``), or None.

    Returns:
        ``(value, count)``: a float32 scalar and an int32 scalar.
    """
    mask = None if bound.route is None else route_mask(bound.route, extra["route"])
    if mask is not None:
        y_true = safe_targets(y_true, mask)
    fn = _loss_callable(bound)
    if isinstance(bound.fn, registry.BuiltinLoss) and bound.fn.batch_level:
        return _batch_level(bound, fn, y_true, y_pred, mask, axis_name, static_mask=True)
    values = jnp.asarray(_checked_call(bound, fn, y_true, y_pred))
    if values.ndim == 0:
        return _batch_level(bound, fn, y_true, y_pred, mask, axis_name, full=values)
    values = _per_example(bound, values, y_pred)
    batch = values.shape[0]
    weight = None
    if "sample_weight" in extra:
        weight = jnp.reshape(jnp.asarray(extra["sample_weight"]).astype(_FLOAT), (-1,))
    if bound.binding.class_weight:
        classes = _class_weights(bound, y_true)
        weight = classes if weight is None else weight * classes
    if mask is not None:
        # a NaN sample weight of a routed-away example must not leak into Σ w
        weight = mask.astype(_FLOAT) if weight is None else jnp.where(mask, weight, 0.0)
    if weight is None:
        numerator = jnp.sum(values)
        denominator = jnp.asarray(batch, _FLOAT)
    else:
        weighted = values * weight
        if mask is not None:
            weighted = jnp.where(mask, weighted, 0.0)
        numerator = jnp.sum(weighted)
        denominator = jnp.sum(weight)
    if bound.binding.reduction == "sum_over_batch_size":
        denominator = jnp.asarray(batch, _FLOAT)
    value = jax_losses.safe_divide(numerator, _global_sum(denominator, axis_name))
    count = jnp.asarray(batch, jnp.int32) if mask is None else jnp.sum(mask.astype(jnp.int32))
    return value, count


def _batch_level(
    bound: BoundLoss,
    fn: Callable[..., Any],
    y_true: Any,
    y_pred: Any,
    mask: jax.Array | None,
    axis_name: Hashable | None,
    *,
    static_mask: bool = False,
    full: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    if "sample_weight" in bound.weight_leaves or bound.binding.class_weight:
        raise loss_errors.weighted_batch_level(bound)
    batch = jax.tree.leaves(y_pred)[0].shape[0]
    if mask is None:
        value = jnp.asarray(fn(y_true, y_pred) if full is None else full).astype(_FLOAT)
        count = jnp.asarray(batch, jnp.int32)
    else:
        count = jnp.sum(mask.astype(jnp.int32))
        if static_mask or _accepts_mask(fn):
            routed = jnp.asarray(fn(y_true, y_pred, mask=mask)).astype(_FLOAT)
        else:
            routed = _gathered(bound, fn, y_true, y_pred, mask)
        value = jnp.where(count > 0, routed, 0.0)
    if axis_name is not None:
        local = count.astype(_FLOAT)
        value = jax_losses.safe_divide(value * local, jax.lax.psum(local, axis_name))
    return value, count


def _gathered(
    bound: BoundLoss, fn: Callable[..., Any], y_true: Any, y_pred: Any, mask: Any
) -> jax.Array:
    """A user's batch-level loss over the routed examples: only when the mask is concrete."""
    rows = _concrete(mask)
    if rows is None:
        raise SpecError.single(
            loss_errors.fn_where(bound),
            str(bound.target),
            "under jax.jit, a routed batch-level loss that takes the route as `mask=` "
            "(a static-shape formulation: fn(y_true, y_pred, *, mask))",
            "a loss returning one scalar, which would need the routed examples gathered "
            "(a shape that depends on the values)",
            "give the loss a `mask` keyword and compute over the masked examples (as "
            "fs.losses.dice does), return per-example values, or call the loss outside jit",
        )
    if not rows.any():
        return jnp.asarray(0.0, _FLOAT)
    pick = lambda v: jnp.asarray(v)[rows]
    return jnp.asarray(fn(jax.tree.map(pick, y_true), jax.tree.map(pick, y_pred))).astype(_FLOAT)


def loss_function(
    plan: Plan, axis_name: Hashable | None = None
) -> Callable[[Any, Any, Any], LossResult]:
    """Builds the pure JAX loss ``(targets, predictions, weights) -> LossResult``."""

    def loss(targets: Any, predictions: Any, weights: Any = None) -> LossResult:
        weights = {} if weights is None else weights
        per_loss, counts = {}, {}
        total = jnp.asarray(0.0, _FLOAT)
        for bound in plan.losses:
            target, extra = binding_arguments(bound, targets, weights, "funcsplit.jax loss")
            y_pred = select_output(bound, predictions)
            value, count = reduce_binding(bound, target, y_pred, extra, axis_name)
            per_loss[bound.name] = value
            counts[bound.name] = count
            total = total + bound.binding.weight * value
        return LossResult(total, per_loss, counts)

    return loss
