"""JAX implementations of the registry losses, written to equal Keras's math on float32.

The TensorFlow lowering calls Keras's own losses unreduced (see ``losses.py``); these are the
same formulas in ``jax.numpy``: targets cast to the prediction dtype, a ``[B]`` target aligned
with a ``[B, 1]`` prediction (Keras's ``squeeze_or_expand_to_same_rank``), probabilities
clipped to ``[1e-7, 1 - 1e-7]`` before the log in the cross-entropies, label smoothing, the
huber ``delta``, the dice ``epsilon``, and the next-token sequence cross-entropy with
``pad_id``. Keras ``Loss`` objects of the matching classes translate to these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras

from funcsplit._src import registry
from funcsplit._src.errors import SpecError

EPSILON = 1e-7  # keras.backend.epsilon()
_FLOAT = jnp.float32  # the dtype of a Keras Loss (floatx): Keras converts both sides to it


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, 0 where the denominator is 0, with finite gradients.

    The double-``where``: the division never sees a zero denominator, so neither the value
    nor the gradient is NaN (as ``tf.math.divide_no_nan``).
    """
    zero = denominator == 0
    return jnp.where(zero, 0.0, numerator / jnp.where(zero, 1.0, denominator))


def _same_rank(y_true: jax.Array, y_pred: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keras's ``squeeze_or_expand_to_same_rank`` (``expand_rank_1=True``)."""
    true_rank, pred_rank = y_true.ndim, y_pred.ndim
    if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            y_pred = y_pred[..., None]
        else:
            y_true = jnp.squeeze(y_true, -1)
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            y_true = y_true[..., None]
        else:
            y_pred = jnp.squeeze(y_pred, -1)
    return y_true, y_pred


def _keras_inputs(y_true: Any, y_pred: Any) -> tuple[jax.Array, jax.Array]:
    """Both sides converted to float32 (as a Keras ``Loss`` does), then aligned in rank."""
    return _same_rank(jnp.asarray(y_true).astype(_FLOAT), jnp.asarray(y_pred).astype(_FLOAT))


def _clipped_log(p: jax.Array) -> jax.Array:
    return jnp.log(jnp.clip(p, EPSILON, 1.0 - EPSILON))


def _sparse_ce(labels: jax.Array, y_pred: jax.Array, from_logits: bool) -> jax.Array:
    """Keras's backend sparse cross-entropy; out-of-range labels give NaN (TF raises)."""
    labels = labels.astype(jnp.int32)
    if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
        labels = jnp.squeeze(labels, -1)
    logits = y_pred if from_logits else _clipped_log(y_pred)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    classes = y_pred.shape[-1]
    valid = (labels >= 0) & (labels < classes)
    picked = jnp.take_along_axis(log_probs, jnp.clip(labels, 0, classes - 1)[..., None], -1)
    return jnp.where(valid, -picked[..., 0], jnp.nan)


def sparse_categorical_crossentropy(y_true: Any, y_pred: Any, *, from_logits: bool) -> jax.Array:
    """Integer labels ``[B]`` (or ``[B, 1]``) against class scores ``[B, C]``: ``[B]`` values."""
    y_true, y_pred = _keras_inputs(y_true, y_pred)
    return _sparse_ce(y_true, y_pred, from_logits)


def categorical_crossentropy(
    y_true: Any, y_pred: Any, *, from_logits: bool, label_smoothing: float
) -> jax.Array:
    """One-hot (or soft) targets ``[B, C]`` against class scores ``[B, C]``."""
    y_true, y_pred = _keras_inputs(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_true.shape[-1]
    if from_logits:
        return -jnp.sum(y_true * jax.nn.log_softmax(y_pred, axis=-1), axis=-1)
    y_pred = y_pred / jnp.sum(y_pred, axis=-1, keepdims=True)
    return -jnp.sum(y_true * _clipped_log(y_pred), axis=-1)


def binary_crossentropy(
    y_true: Any, y_pred: Any, *, from_logits: bool, label_smoothing: float
) -> jax.Array:
    """Binary cross-entropy, averaged over the last axis."""
    y_true, y_pred = _keras_inputs(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        x = y_pred
        values = jnp.maximum(x, 0.0) - x * y_true + jnp.log1p(jnp.exp(-jnp.abs(x)))
    else:
        p = jnp.clip(y_pred, EPSILON, 1.0 - EPSILON)
        values = -(y_true * jnp.log(p) + (1.0 - y_true) * jnp.log(1.0 - p))
    return jnp.mean(values, axis=-1)


def mse(y_true: Any, y_pred: Any) -> jax.Array:
    """Mean squared error over the last axis."""
    y_true, y_pred = _keras_inputs(y_true, y_pred)
    return jnp.mean(jnp.square(y_true - y_pred), axis=-1)


def mae(y_true: Any, y_pred: Any) -> jax.Array:
    """Mean absolute error over the last axis."""
    y_true, y_pred = _keras_inputs(y_true, y_pred)
    return jnp.mean(jnp.abs(y_true - y_pred), axis=-1)


def huber(y_true: Any, y_pred: Any, *, delta: float) -> jax.Array:
    """Huber loss with threshold ``delta``, over the last axis."""
    y_true, y_pred = _keras_inputs(y_true, y_pred)
    error = y_pred - y_true
    abs_error = jnp.abs(error)
    quadratic = 0.5 * jnp.square(error)
    linear = delta * abs_error - 0.5 * delta**2
    return jnp.mean(jnp.where(abs_error <= delta, quadratic, linear), axis=-1)


def dice(y_true: Any, y_pred: Any, *, epsilon: float, mask: Any = None) -> jax.Array:
    """Keras's dice ``1 - 2 Σ y·p / (Σ y + Σ p + ε)`` over the examples where ``mask`` is true.

    One batch-level scalar. The mask zeroes the other examples (static shapes, jittable).
    """
    y_pred = jnp.asarray(y_pred)
    y_true = jnp.asarray(y_true).astype(y_pred.dtype)
    if mask is not None:
        m = jnp.reshape(jnp.asarray(mask).astype(y_pred.dtype), (-1,) + (1,) * (y_pred.ndim - 1))
        y_true, y_pred = y_true * m, y_pred * m
    intersection = jnp.sum(y_true * y_pred)
    total = jnp.sum(y_true) + jnp.sum(y_pred) + epsilon
    return 1.0 - safe_divide(2.0 * intersection, total)


def sequence_crossentropy(
    y_true: Any, y_pred: Any, *, from_logits: bool, pad_id: int | None
) -> jax.Array:
    """Next-token cross-entropy of ``[B, T]`` tokens and ``[B, T, V]`` predictions.

    Position ``t`` is scored against token ``t + 1``; tokens equal to ``pad_id`` are ignored.
    Each example's value is the mean over its scored tokens (0 when it has none).
    """
    tokens = jnp.asarray(y_true).astype(jnp.int32)
    y_pred = jnp.asarray(y_pred)
    next_tokens = tokens[:, 1:]
    per_token = _sparse_ce(next_tokens, y_pred[:, :-1, :], from_logits)
    if pad_id is None:
        return jnp.mean(per_token, axis=-1)
    keep = (next_tokens != pad_id).astype(per_token.dtype)
    per_token = jnp.where(keep > 0, per_token, 0.0)
    return safe_divide(jnp.sum(per_token * keep, axis=-1), jnp.sum(keep, axis=-1))


_IMPL: dict[str, Callable[..., jax.Array]] = {
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "binary_crossentropy": binary_crossentropy,
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "dice": dice,
    "sequence_crossentropy": sequence_crossentropy,
}


def registry_loss(loss: str | registry.BuiltinLoss) -> Callable[..., jax.Array]:
    """The JAX function of a registry loss, its options bound: ``fn(y_true, y_pred)``.

    ``dice`` also takes ``mask=`` (a ``[B]`` bool array: the examples it is computed over).

    Args:
        loss: a registry name (``"huber"``) or a `funcsplit.losses` value with its options.

    Returns:
        A JAX function ``fn(y_true, y_pred)`` of Keras's unreduced math: ``[B]`` values for
        the per-example losses, one scalar for ``dice``. A ``[B]`` prediction of an
        elementwise loss (``mse``, ``mae``, ``huber``, ``binary_crossentropy``) is one value
        per example, aligned as ``[B, 1]`` (``[B]`` values), as in the TF lowering.

    Raises:
        SpecError: for an unknown registry name.

    Examples:
        >>> import numpy as np, funcsplit as fs, funcsplit.jax as fsj
        >>> fsj.registry_loss("mse")(np.zeros((2, 2)), np.ones((2, 2))).tolist()
        [1.0, 1.0]
        >>> huber = fsj.registry_loss(fs.losses.huber(delta=0.5))
        >>> [round(v, 4) for v in huber(np.zeros((1, 1)), np.full((1, 1), 2.0)).tolist()]
        [0.875]
    """
    builtin = registry.as_loss(loss)
    impl = _IMPL[builtin.name]
    kwargs = builtin.kwargs()
    elementwise = builtin.elementwise

    def fn(y_true: Any, y_pred: Any, **extra: Any) -> jax.Array:
        if elementwise and jnp.ndim(y_pred) == 1:  # one value per example: [B] as [B, 1]
            y_pred = jnp.asarray(y_pred)[:, None]
        return impl(y_true, y_pred, **kwargs, **extra)

    fn.__name__ = fn.__qualname__ = builtin.name
    return fn


# Keras Loss classes whose unreduced values a registry loss equals, and their option names.
_KERAS_CLASSES: dict[type, tuple[str, tuple[str, ...]]] = {
    keras.losses.SparseCategoricalCrossentropy: (
        "sparse_categorical_crossentropy",
        ("from_logits",),
    ),
    keras.losses.CategoricalCrossentropy: (
        "categorical_crossentropy",
        ("from_logits", "label_smoothing"),
    ),
    keras.losses.BinaryCrossentropy: ("binary_crossentropy", ("from_logits", "label_smoothing")),
    keras.losses.MeanSquaredError: ("mse", ()),
    keras.losses.MeanAbsoluteError: ("mae", ()),
    keras.losses.Huber: ("huber", ("delta",)),
}
_NEUTRAL = {"axis": -1, "ignore_class": None}


def from_keras(loss: keras.losses.Loss) -> registry.BuiltinLoss | None:
    """The registry loss equal to a Keras ``Loss`` object, or None if there is none.

    Only the exact classes above with Keras's float32 dtype and default ``axis`` /
    ``ignore_class`` translate (their reduction is irrelevant: funcsplit reduces).
    """
    entry = _KERAS_CLASSES.get(type(loss))
    kwargs = dict(getattr(loss, "_fn_kwargs", {}))
    if entry is None or loss.dtype != "float32":
        return None
    name, options = entry
    if any(kwargs.pop(key, value) != value for key, value in _NEUTRAL.items()):
        return None
    if set(kwargs) - set(options):
        return None
    try:
        return registry.make(name, **{k: kwargs[k] for k in options if k in kwargs})
    except SpecError:
        return None
