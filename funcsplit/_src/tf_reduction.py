"""One binding's loss in TensorFlow: route masks, safe targets, exact reduction.

For a per-example loss the value is ``Σ_i w_i·l_i / Σ_i w_i`` where ``w_i`` is the route mask
times the sample weight times the class weight (each 1 when absent). Routing is by masks
(static shapes, cheap under XLA); routed-away targets are replaced by zeros before the loss
sees them, so a ``-1`` label or a NaN cannot crash or poison it. Inside a replica context
with several replicas, denominators are summed across replicas.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from funcsplit._src import loss_errors
from funcsplit._src import registry
from funcsplit._src.errors import SpecError
from funcsplit._src.plan import BoundLoss
from funcsplit._src.tf_losses import call_loss
from funcsplit._src.tf_losses import keras_mask
from funcsplit._src.tf_losses import masked_batch_level
from funcsplit._src.tf_replicas import global_sum
from funcsplit._src.tf_replicas import replicas_in_sync

_FLOAT = tf.float32


def route_mask(route: Any, leaf: tf.Tensor) -> tf.Tensor:
    """The boolean ``[B]`` mask of the examples a route sends to its loss."""
    if leaf.shape.rank != 1:
        leaf = tf.reshape(leaf, [-1])
    if route.op == "truthy":
        return leaf if leaf.dtype == tf.bool else tf.not_equal(leaf, tf.zeros_like(leaf))
    if route.op == "one_of":
        constants = tf.constant(route.value, dtype=leaf.dtype)
        return tf.reduce_any(tf.equal(leaf[:, None], constants[None, :]), axis=1)
    equal = tf.equal(leaf, tf.constant(route.value, dtype=leaf.dtype))
    return equal if route.op == "equals" else tf.logical_not(equal)


def _broadcast_mask(mask: tf.Tensor, rank: int) -> tf.Tensor:
    if rank == 1:
        return mask
    return tf.reshape(mask, [-1] + [1] * max(rank - 1, 0))


def _safe_leaf(value: Any, mask: tf.Tensor) -> Any:
    if isinstance(value, tf.RaggedTensor):
        flat_mask = mask
        for rowids in value.nested_value_rowids():
            flat_mask = tf.gather(flat_mask, rowids)
        flat = value.flat_values
        safe = tf.where(_broadcast_mask(flat_mask, flat.shape.rank), flat, _zero(flat.dtype))
        return value.with_flat_values(safe)
    if isinstance(value, tf.SparseTensor) or value.dtype == tf.string:
        return value
    return tf.where(_broadcast_mask(mask, value.shape.rank), value, _zero(value.dtype))


def _zero(dtype: tf.DType) -> tf.Tensor:
    """A scalar zero that `tf.where` broadcasts (a constant, not a ``zeros_like`` op)."""
    return tf.zeros([], dtype)


def safe_targets(y_true: Any, mask: tf.Tensor) -> Any:
    """Replaces the targets of routed-away examples by zeros (strings and sparse kept)."""
    return tf.nest.map_structure(lambda v: _safe_leaf(v, mask), y_true)


def _gather(value: Any, mask: tf.Tensor) -> Any:
    def one(v: Any) -> Any:
        if isinstance(v, tf.RaggedTensor):
            return tf.ragged.boolean_mask(v, mask)
        return tf.boolean_mask(v, mask)

    return tf.nest.map_structure(one, value)


def _class_weights(bound: BoundLoss, y_true: tf.Tensor) -> tf.Tensor:
    pairs = bound.binding.class_weight
    top = max(c for c, _ in pairs)
    table = [1.0] * (top + 2)
    for cls, weight in pairs:
        table[cls] = weight
    if (
        y_true.shape.rank is not None
        and y_true.shape.rank >= 2
        and y_true.shape[-1] not in (1, None)
    ):
        labels = tf.argmax(y_true, axis=-1, output_type=tf.int32)
    else:
        labels = tf.cast(y_true, tf.int32)
    labels = tf.reshape(labels, [tf.shape(labels)[0], -1])[:, 0]
    outside = tf.logical_or(labels < 0, labels > top)
    labels = tf.where(outside, top + 1, labels)
    return tf.gather(tf.constant(table, _FLOAT), labels)


def checked_call(bound: BoundLoss, y_true: Any, y_pred: Any) -> Any:
    """Calls the binding's loss; a failure while tracing names the binding and its ``fn``."""
    loss_errors.check_prediction_rank(bound, y_pred)
    try:
        return call_loss(bound.fn, y_true, y_pred)
    except (ValueError, TypeError) as error:
        if isinstance(error, SpecError):
            raise
        shapes = tf.nest.map_structure(lambda t: getattr(t, "shape", t), (y_true, y_pred))
        raise loss_errors.call_failure(bound, error, shapes) from error


def per_example(bound: BoundLoss, values: tf.Tensor, y_pred: Any, *, keep: Any = None) -> Any:
    """Checks a loss's values are per example and reduces them to ``[B]`` float32 means.

    With a Keras mask ``keep``, returns ``(values, weights)`` of `masked_per_example`.
    """
    if values.shape.rank is None:
        raise loss_errors.unknown_rank(bound)
    batch = tf.TensorShape(getattr(tf.nest.flatten(y_pred)[0], "shape", None))[:1]
    if batch.rank and batch[0] is not None and values.shape[0] not in (None, batch[0]):
        raise loss_errors.batch_mismatch(bound, batch[0], values.shape)
    if keep is not None:
        return masked_per_example(bound, values, keep)
    values = tf.cast(values, _FLOAT)
    if values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


def prediction_mask(bound: BoundLoss, y_pred: Any, values: Any = None) -> tf.Tensor | None:
    """The Keras mask that weighs a binding's values: the prediction's, and the values' own
    (Keras's ``Loss.__call__`` takes both, joined by ``&``); None without either, or when
    the loss applies the prediction's mask itself (``sequence_crossentropy``)."""
    fn = bound.fn
    reads = isinstance(fn, registry.BuiltinLoss) and fn.record.reads_mask
    masks = [None if reads else keras_mask(y_pred), keras_mask(values)]
    masks = [tf.cast(m, tf.bool) for m in masks if m is not None]
    if not masks:
        return None
    return masks[0] if len(masks) == 1 else tf.logical_and(masks[0], masks[1])


def masked_per_example(
    bound: BoundLoss, values: tf.Tensor, keep: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """``[B]`` values and weights from ``[B, ...]`` values and a Keras mask over them.

    With ``m`` the mask over example *i*'s ``n`` elements: its value is the mean over the
    kept elements, ``Σ_t m_t·l_t / Σ_t m_t``, and its weight ``Σ_t m_t / n``; so
    ``Σ_i w_i·l_i / Σ_i w_i`` is the mean over every kept (example, timestep) pair. A mask
    of lower rank covers the trailing axes; masked values never reach a sum (NaN-safe).
    """
    values = tf.cast(values, _FLOAT)
    rank = values.shape.rank
    if keep.shape.rank is not None and keep.shape.rank == rank + 1 and keep.shape[-1] == 1:
        keep = tf.squeeze(keep, -1)
    if keep.shape.rank is None or keep.shape.rank > rank:
        raise loss_errors.mask_reduced(bound, keep.shape, values.shape)
    keep = tf.reshape(keep, tf.concat([tf.shape(keep), [1] * (rank - keep.shape.rank)], 0))
    keep = tf.broadcast_to(keep, tf.shape(values))
    kept = tf.cast(keep, _FLOAT)
    values = tf.where(keep, values, _zero(_FLOAT))
    if rank == 1:
        return values, kept
    axes = list(range(1, rank))
    per_example_values = tf.math.divide_no_nan(
        tf.reduce_sum(values, axis=axes), tf.reduce_sum(kept, axis=axes)
    )
    return per_example_values, tf.reduce_mean(kept, axis=axes)


def reduce_binding(
    bound: BoundLoss, y_true: Any, y_pred: Any, extra: dict[str, tf.Tensor]
) -> tuple[tf.Tensor, tf.Tensor]:
    """One binding's value and routed count, exactly as the semantics say.

    Args:
        bound: the resolved binding.
        y_true: its target (a tensor, or a structure for a subtree).
        y_pred: its predictions.
        extra: the binding's ``route`` and ``sample_weight`` leaves from `split`.

    Returns:
        ``(value, count)``: a float32 scalar and an int32 scalar.
    """
    mask = None if bound.route is None else route_mask(bound.route, extra["route"])
    if mask is not None:
        y_true = safe_targets(y_true, mask)
    fn = bound.fn
    if isinstance(fn, registry.BuiltinLoss) and fn.batch_level:
        if prediction_mask(bound, y_pred) is not None:
            raise loss_errors.masked_batch_level(bound)
        return _batch_level(bound, y_true, y_pred, mask, builtin=fn)
    raw = checked_call(bound, y_true, y_pred)
    keep = prediction_mask(bound, y_pred, raw)
    values = tf.convert_to_tensor(raw)
    if values.shape.rank == 0:
        if keep is not None:
            raise loss_errors.masked_batch_level(bound)
        return _batch_level(bound, y_true, y_pred, mask, builtin=None, full=values)
    values = per_example(bound, values, y_pred, keep=keep)
    kept = None
    if keep is not None:
        values, kept = values

    def batch() -> tf.Tensor:  # values are [B]: one Size op, built only where needed
        return tf.size(values, out_type=tf.int32)

    weight = kept  # a Keras mask: each example weighs its kept share (see masked_per_example)
    if "sample_weight" in extra:
        sample = tf.reshape(tf.cast(extra["sample_weight"], _FLOAT), [-1])
        weight = sample if weight is None else weight * sample
    if bound.binding.class_weight:
        classes = _class_weights(bound, y_true)
        weight = classes if weight is None else weight * classes
    if mask is None:
        count = batch()
    if weight is None and mask is None:
        numerator = tf.reduce_sum(values)
        denominator = tf.cast(count, _FLOAT)
    elif weight is None:
        # multiply_no_nan: a routed-away example adds 0 even when its value is NaN or inf;
        # one op (as a hand-written ``values * mask``) where a select costs more to derive.
        routed = tf.cast(mask, _FLOAT)
        numerator = tf.reduce_sum(tf.math.multiply_no_nan(values, routed))
        denominator = tf.reduce_sum(routed)
        count = tf.cast(denominator, tf.int32)
    else:
        if mask is not None:
            # no_nan: a NaN sample weight of a routed-away example must not leak into Σ w
            # (tests/test_properties_losses.py::test_regression_a_nan_sample_weight_...).
            weight = tf.math.multiply_no_nan(weight, tf.cast(mask, _FLOAT))
            count = tf.reduce_sum(tf.cast(mask, tf.int32))
        weighted = values * weight
        if mask is not None:
            weighted = tf.where(mask, weighted, _zero(_FLOAT))
        numerator = tf.reduce_sum(weighted)
        denominator = tf.reduce_sum(weight)
    if bound.binding.reduction == "sum_over_batch_size":
        # Keras: Σ w·l / B, or with a mask Σ w·m·l / Σ m (its apply_mask's total / valid)
        denominator = tf.cast(batch(), _FLOAT) if kept is None else tf.reduce_sum(kept)
    value = tf.math.divide_no_nan(numerator, global_sum(denominator))
    return value, count


def _batch_level(
    bound: BoundLoss,
    y_true: Any,
    y_pred: Any,
    mask: tf.Tensor | None,
    *,
    builtin: registry.BuiltinLoss | None,
    full: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    if "sample_weight" in bound.weight_leaves or bound.binding.class_weight:
        raise loss_errors.weighted_batch_level(bound)
    batch = tf.shape(tf.nest.flatten(y_pred)[0])[0]
    if mask is None:
        value = tf.cast(call_loss(builtin, y_true, y_pred) if builtin else full, _FLOAT)
        count = batch
    else:
        count = tf.reduce_sum(tf.cast(mask, tf.int32))
        if builtin is not None:
            masked = masked_batch_level(builtin, y_true, y_pred, mask)
            value = tf.where(count > 0, tf.cast(masked, _FLOAT), 0.0)
        else:
            routed_true, routed_pred = _gather(y_true, mask), _gather(y_pred, mask)
            value = tf.cond(
                count > 0,
                lambda: tf.cast(call_loss(bound.fn, routed_true, routed_pred), _FLOAT),
                lambda: tf.constant(0.0, _FLOAT),
            )
    if replicas_in_sync() > 1:
        local = tf.cast(count, _FLOAT)
        value = tf.math.divide_no_nan(value * local, global_sum(local))
    return value, count
