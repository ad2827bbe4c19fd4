"""One loss call for several bindings that share a row-wise loss.

A loss is row-wise when each example's value depends on its own row only: the registry's
per-example losses, and user losses declared with `funcsplit.losses.row_wise`.

- **Routed by one key**: multi-task heads bound as ``task_t`` with the same registry loss,
  each routed by ``route("task", equals=t)``. Routing by masks computes every head's loss on
  the whole batch: T times the work and the ops. Here each example's row is taken from the
  head it is routed to (a gather from the stacked heads: static shapes, so XLA compiles it
  once), the loss runs once on the batch, and the per-binding sums are segment sums.
- **Not routed**: many bindings of one loss (a regression target per leaf, an attribute per
  label): their targets and outputs are concatenated along the batch, the loss runs once and
  the values are summed per binding: a constant number of ops instead of a dozen per binding.

Row-wise losses give every example the value the per-binding computation gives it, so the
results agree up to the order of the sums. Anything else (undeclared callables, which are
documented to see their binding's whole batch; batch-level losses; class weights; other
routes; shapes or dtypes that differ) keeps the per-binding path.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from funcsplit._src import registry
from funcsplit._src.plan import BoundLoss
from funcsplit._src.plan import Plan
from funcsplit._src.routing import select_output
from funcsplit._src.tf_losses import has_keras_mask
from funcsplit._src.tf_reduction import checked_call
from funcsplit._src.tf_reduction import per_example
from funcsplit._src.tf_reduction import safe_targets
from funcsplit._src.tf_replicas import global_sum

_FLOAT = tf.float32

Results = dict[str, tuple[tf.Tensor, tf.Tensor]]  # binding name -> (value, routed count)


def _results(group: tuple[BoundLoss, ...], value: tf.Tensor, counts: list) -> Results:
    values = tf.unstack(value, len(group))
    return dict(zip((b.name for b in group), zip(values, counts)))


def _key(bound: BoundLoss) -> tuple | None:
    fn, binding, route = bound.fn, bound.binding, bound.route
    if not registry.is_row_wise(fn):
        return None
    if binding.class_weight or binding.reduction != "weighted_mean":
        return None
    if route is not None and route.op != "equals":
        return None
    try:
        hash(fn)  # a row_wise callable of a class with __eq__ but no __hash__
    except TypeError:
        return None
    return (fn, None if route is None else route.path, bound.sample_weight, binding.group)


def plan_groups(plan: Plan) -> list[tuple[BoundLoss, ...]]:
    """The bindings that can share one loss call: same registry loss, same sample weight, and
    no route or the same route key (``equals``, distinct values); groups of two or more."""
    by_key: dict[tuple, list[BoundLoss]] = {}
    for bound in plan.losses:
        key = _key(bound)
        if key is not None:
            by_key.setdefault(key, []).append(bound)
    groups = []
    for members in by_key.values():
        values = [b.route.value for b in members if b.route is not None]
        if len(members) > 1 and len(set(values)) == len(values):
            groups.append(tuple(members))
    return groups


def _same_dense(values: list[Any]) -> list[tf.Tensor] | None:
    """The values as tensors if all are dense, of one dtype and one known example shape."""
    if not all(isinstance(v, (tf.Tensor, tf.Variable)) for v in values):
        return None
    tensors = [tf.convert_to_tensor(v) for v in values]
    first = tensors[0]
    shape = first.shape[1:]
    if shape.is_fully_defined() and all(
        t.dtype == first.dtype and t.shape[1:] == shape for t in tensors
    ):
        return tensors
    return None


def reduce_group(
    group: tuple[BoundLoss, ...], targets: Any, predictions: Any, weights: Any
) -> Results | None:
    """Each binding's ``(value, count)``, from one loss call.

    Returns None, for the per-binding path, when an argument is missing (that path raises the
    usual error) or when the heads' or targets' shapes or dtypes differ.
    """
    first = group[0]
    names = [b.name for b in group]
    if not all(n in targets for n in names):
        return None
    if first.route is not None and not all("route" in weights.get(n, {}) for n in names):
        return None
    if first.sample_weight is not None and "sample_weight" not in weights.get(first.name, {}):
        return None
    outputs = [select_output(b, predictions) for b in group]
    if has_keras_mask(outputs):  # a Keras mask weighs each head's own values
        return None
    heads = _same_dense(outputs)
    labels = _same_dense([targets[n] for n in names])
    if heads is None or labels is None:
        return None
    if first.route is None:
        return _unrouted(group, heads, labels, weights)
    one_target = all(b.target == first.target for b in group)
    size = len(group)
    leaf = weights[first.name]["route"]
    if leaf.shape.rank != 1:
        leaf = tf.reshape(leaf, [-1])
    hit = tf.equal(leaf[:, None], tf.constant([b.route.value for b in group], leaf.dtype))
    routed = tf.reduce_any(hit, axis=1)
    # segment[i]: the binding example i is routed to, or `size` (a segment dropped below).
    chosen = tf.argmax(tf.cast(hit, tf.int32), axis=1, output_type=tf.int32)
    segment = tf.where(routed, chosen, size)
    rows = tf.stack([tf.minimum(segment, size - 1), tf.range(tf.size(leaf))], axis=1)
    y_pred = tf.gather_nd(tf.stack(heads), rows)
    y_true = labels[0] if one_target else tf.gather_nd(tf.stack(labels), rows)
    y_true = safe_targets(y_true, routed)
    values = tf.convert_to_tensor(checked_call(first, y_true, y_pred))
    if values.shape.rank == 0:
        return None
    values = per_example(first, values, y_pred)
    mask = tf.cast(routed, _FLOAT)
    if first.sample_weight is None:
        weight = mask
        contribution = tf.math.multiply_no_nan(values, weight)
    else:
        sample = tf.reshape(tf.cast(weights[first.name]["sample_weight"], _FLOAT), [-1])
        weight = tf.math.multiply_no_nan(sample, mask)
        contribution = tf.where(routed, values * weight, tf.zeros([], _FLOAT))

    def per_binding(x: tf.Tensor) -> tf.Tensor:
        return tf.math.unsorted_segment_sum(x, segment, size + 1)[:size]

    numerator, denominator = per_binding(contribution), per_binding(weight)
    counts = per_binding(tf.ones_like(segment))
    value = tf.math.divide_no_nan(numerator, global_sum(denominator))
    return _results(group, value, tf.unstack(counts, size))


def _unrouted(
    group: tuple[BoundLoss, ...], heads: list[tf.Tensor], labels: list[tf.Tensor], weights: Any
) -> Results | None:
    """Bindings without a route: one loss call on the concatenated batches."""
    first, size = group[0], len(group)
    y_pred, y_true = tf.concat(heads, 0), tf.concat(labels, 0)
    values = tf.convert_to_tensor(checked_call(first, y_true, y_pred))
    if values.shape.rank == 0:
        return None
    values = tf.reshape(per_example(first, values, y_pred), [size, -1])
    count = tf.shape(values, out_type=tf.int32)[1]
    if first.sample_weight is None:
        numerator = tf.reduce_sum(values, axis=1)
        denominator = tf.cast(count, _FLOAT)
    else:
        sample = tf.reshape(tf.cast(weights[first.name]["sample_weight"], _FLOAT), [-1])
        numerator = tf.reduce_sum(values * sample, axis=1)
        denominator = tf.reduce_sum(sample)
    value = tf.math.divide_no_nan(numerator, global_sum(denominator))
    return _results(group, value, [count] * size)
