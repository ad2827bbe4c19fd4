"""The errors about a binding's loss function, raised by both lowerings when they call it."""

from __future__ import annotations

from typing import Any

from funcsplit._src.errors import SpecError
from funcsplit._src.errors import describe_callable
from funcsplit._src.plan import BoundLoss
from funcsplit._src.registry import BuiltinLoss


def fn_where(bound: BoundLoss) -> str:
    """Where errors about a binding's loss point: its name, and its loss by registry name
    (``'mse'``) or as ``fn @ file:line`` for a user's callable."""
    if isinstance(bound.fn, BuiltinLoss):
        return f"binding {bound.name!r} fn {str(bound.fn)!r}"
    return f"binding {bound.name!r} fn {describe_callable(bound.fn)}"


def call_failure(bound: BoundLoss, error: Exception, shapes: tuple[Any, Any]) -> SpecError:
    """The error for a loss that failed on ``(target, predictions)`` of these shapes."""
    return SpecError.single(
        fn_where(bound),
        str(bound.target),
        "a loss that accepts the target and the predictions "
        f"(target, predictions shapes: {shapes[0]}, {shapes[1]})",
        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
        "check the binding's target and output paths and what the loss expects",
    )


def batch_mismatch(bound: BoundLoss, batch: Any, shape: Any) -> SpecError:
    """The error for per-example values whose batch dimension is not ``batch``."""
    return SpecError.single(
        fn_where(bound),
        str(bound.target),
        f"per-example values with batch dimension {batch}",
        f"values of shape {shape}",
        "return one value per example (or per element), not reduced over the batch",
    )


def weighted_batch_level(bound: BoundLoss) -> SpecError:
    """The error for a batch-level (scalar) loss on a binding with per-example weights."""
    return SpecError.single(
        fn_where(bound),
        str(bound.target),
        "per-example values [B, ...] when the binding has sample or class weights",
        "one batch-level scalar",
        "return per-example values, or drop the weights",
    )


def unknown_rank(bound: BoundLoss) -> SpecError:
    """The error for loss values whose rank is not known while tracing."""
    return SpecError.single(
        fn_where(bound),
        str(bound.target),
        "per-example values [B, ...] or a scalar",
        "values of unknown rank",
    )


def check_prediction_rank(bound: BoundLoss, y_pred: Any) -> None:
    """Raises a `SpecError` for a registry loss's prediction of too low a rank: class scores
    ``[B, C]`` for the cross-entropies over classes, ``[B, T, V]`` for sequence tokens."""
    fn = bound.fn
    if not isinstance(fn, BuiltinLoss):
        return
    shape = getattr(y_pred, "shape", None)
    rank = len(shape) if isinstance(shape, tuple) else getattr(shape, "rank", None)
    need = fn.record.prediction_rank
    if rank is None or rank >= need:
        return
    expected = {2: "class scores [B, C]", 3: "token scores [B, T, V]"}[need]
    raise SpecError.single(
        fn_where(bound),
        str(bound.target),
        f"a prediction of {expected} for {fn.name}",
        f"a prediction of shape {list(shape)}",
        "bind the output that holds the class scores (e.g. Dense(C), not squeezed); "
        "a [B] probability of one class is binary_crossentropy's",
    )


def masked_batch_level(bound: BoundLoss) -> SpecError:
    """The error for a batch-level (scalar) loss on a prediction that carries a Keras mask."""
    return SpecError.single(
        fn_where(bound),
        str(bound.target),
        "per-example values [B, ...] when the prediction carries a Keras mask (it weighs "
        "each example's values)",
        "one batch-level scalar",
        "return per-example (per-timestep) values, or remove the mask from the output "
        "(e.g. an identity layer that does not support masking)",
    )


def mask_reduced(bound: BoundLoss, mask_shape: Any, values_shape: Any) -> SpecError:
    """The error for values reduced over axes that a prediction's Keras mask covers."""
    return SpecError.single(
        fn_where(bound),
        str(bound.target),
        f"values with the axes of the prediction's Keras mask (mask shape {mask_shape})",
        f"values of shape {values_shape}, reduced over masked axes",
        "return per-timestep values (e.g. a Keras Loss, or reduction over the last axis "
        "only), so the mask can weigh them",
    )
