"""The TensorFlow loss of a plan: every binding's value and count, and the weighted total.

The one orchestrator of the TF lowering: bindings that share a row-wise loss take one loss
call (`funcsplit._src.tf_grouped`), every other binding is reduced on its own
(`funcsplit._src.tf_reduction`), and the total ``Σ_b weight_b · value_b`` is computed here,
once, from the per-binding values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from funcsplit._src import tf_grouped
from funcsplit._src.plan import Plan
from funcsplit._src.result import LossResult
from funcsplit._src.routing import binding_arguments
from funcsplit._src.routing import select_output
from funcsplit._src.tf_reduction import reduce_binding

_FLOAT = tf.float32


_FEW = 16  # up to this many values, one AddN of the (weighted) values is the cheapest sum


def weighted_total(values: list[tf.Tensor], weights: list[float]) -> tf.Tensor:
    """``Σ_b weights[b] · values[b]`` as one sum: an ``add_n`` of few values, else one
    weighted ``reduce_sum`` of them stacked (a constant number of ops for any count)."""
    if not values:
        return tf.constant(0.0, _FLOAT)
    if len(values) <= _FEW:
        terms = [v if w == 1.0 else w * v for v, w in zip(values, weights)]
        return terms[0] if len(terms) == 1 else tf.add_n(terms)
    stacked = tf.stack(values)
    if any(w != 1.0 for w in weights):
        stacked = stacked * tf.constant(weights, _FLOAT)
    return tf.reduce_sum(stacked)


def loss_function(plan: Plan) -> Callable[..., LossResult]:
    """Builds the pure loss function ``(targets, predictions, weights) -> LossResult``."""
    groups = tf_grouped.plan_groups(plan)
    group_of = {b.name: group for group in groups for b in group}

    def loss(targets: Any, predictions: Any, weights: Any = None) -> LossResult:
        weights = {} if weights is None else weights
        results: dict[str, tuple[tf.Tensor, tf.Tensor]] = {}
        tried: set[str] = set()  # bindings whose group was tried (shared, or fell back)
        for bound in plan.losses:
            target, extra = binding_arguments(bound, targets, weights, "CompiledSplit.loss")
            group = group_of.get(bound.name)
            if group is not None and bound.name not in tried:
                tried.update(b.name for b in group)
                results.update(tf_grouped.reduce_group(group, targets, predictions, weights) or {})
            if bound.name not in results:
                y_pred = select_output(bound, predictions)
                results[bound.name] = reduce_binding(bound, target, y_pred, extra)
        per_loss = {b.name: results[b.name][0] for b in plan.losses}
        counts = {b.name: results[b.name][1] for b in plan.losses}
        total = weighted_total(list(per_loss.values()), [b.binding.weight for b in plan.losses])
        return LossResult(total, per_loss, counts)

    return loss
