"""The TensorFlow implementations of the registry losses, and how a binding's loss is called.

Registry losses follow Keras's defaults (probabilities, not logits, for the cross-entropies;
targets cast to the prediction dtype; a ``[B]`` target aligned with a ``[B, 1]`` prediction)
by calling Keras's own loss functions unreduced, so their values equal Keras's. Keras ``Loss``
objects bound directly are called unreduced too.

A ``[B]`` prediction of an elementwise loss (``mse``, ``mae``, ``huber``,
``binary_crossentropy``, and the Keras classes of `ELEMENTWISE_KERAS`) is one value per
example: it is aligned as ``[B, 1]``, so the values are ``[B]``. Keras's own functions take
their mean over the last axis, which for a ``[B]`` prediction is the batch itself.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from funcsplit._src import registry
from funcsplit._src.registry import BuiltinLoss
from funcsplit._src.registry import RowWise

# Keras losses whose value is a mean over the last axis of an elementwise value.
ELEMENTWISE_KERAS = (
    keras.losses.MeanSquaredError,
    keras.losses.MeanAbsoluteError,
    keras.losses.MeanAbsolutePercentageError,
    keras.losses.MeanSquaredLogarithmicError,
    keras.losses.Huber,
    keras.losses.LogCosh,
    keras.losses.BinaryCrossentropy,
    keras.losses.BinaryFocalCrossentropy,
    keras.losses.Hinge,
    keras.losses.SquaredHinge,
    keras.losses.Poisson,
)


def keras_mask(value: Any) -> tf.Tensor | None:
    """The Keras mask a tensor carries (``Embedding(mask_zero=True)``, ``Masking``, a masked
    RNN and the layers after them), or None. Structures carry none, as in Keras's losses."""
    if not isinstance(value, (tf.Tensor, tf.Variable)):
        return None
    return getattr(value, "_keras_mask", None)


def has_keras_mask(structure: Any) -> bool:
    """Whether any tensor of a structure carries a Keras mask."""
    return any(keras_mask(v) is not None for v in tf.nest.flatten(structure))


def per_example_columns(y_pred: Any) -> Any:
    """A ``[B]`` prediction as ``[B, 1]``: one value per example for an elementwise loss
    (Keras's alignment then gives a ``[B]`` target the same shape)."""
    if isinstance(y_pred, (tf.Tensor, tf.Variable)) and y_pred.shape.rank == 1:
        return tf.expand_dims(y_pred, -1)
    return y_pred


def keras_unreduced(loss: keras.losses.Loss, y_true: Any, y_pred: Any) -> Any:
    """Calls a Keras ``Loss`` object without reduction, as its ``__call__`` does.

    Inputs are converted to the loss's dtype, then its ``call`` gives the unreduced values;
    a ``[B]`` prediction of an elementwise loss is aligned as ``[B, 1]`` first.
    """
    convert = lambda x: keras.ops.convert_to_tensor(x, dtype=loss.dtype)
    y_pred = tf.nest.map_structure(convert, y_pred)
    y_true = tf.nest.map_structure(convert, y_true)
    if isinstance(loss, ELEMENTWISE_KERAS):
        y_pred = per_example_columns(y_pred)
    return loss.call(y_true, y_pred)


def call_loss(fn: Any, y_true: Any, y_pred: Any) -> Any:
    """Calls a binding's loss on TensorFlow tensors.

    Registry losses run their implementation here, `RowWise` declarations the loss they wrap,
    Keras ``Loss`` objects unreduced, other callables as they are.
    """
    if isinstance(fn, BuiltinLoss):
        return _IMPLEMENTATIONS[fn.name](y_true, y_pred, **fn.kwargs())
    if isinstance(fn, RowWise):
        return call_loss(fn.fn, y_true, y_pred)
    if isinstance(fn, keras.losses.Loss):
        return keras_unreduced(fn, y_true, y_pred)
    return fn(y_true, y_pred)


def masked_batch_level(fn: BuiltinLoss, y_true: Any, y_pred: Any, mask: tf.Tensor) -> tf.Tensor:
    """A batch-level registry loss over the examples where ``mask`` is true (static shapes)."""
    if fn.name != "dice":
        raise NotImplementedError(fn.name)
    return _dice(y_true, y_pred, mask=mask, **fn.kwargs())


def _keras(cls: type, **fixed: Any):
    def fn(y_true: Any, y_pred: Any, **kwargs: Any) -> tf.Tensor:
        return keras_unreduced(cls(**fixed, **kwargs), y_true, y_pred)

    return fn


def _sequence_crossentropy(y_true, y_pred, *, from_logits: bool, pad_id: int | None) -> tf.Tensor:
    """Next-token cross-entropy: position t predicts token t + 1; padding ignored.

    Returns per-example means over the non-padding target tokens (0 for an example with none).
    A Keras mask ``[B, T]`` on the predictions removes the masked positions too.
    """
    mask = keras_mask(y_pred)
    tokens = tf.cast(y_true, tf.int32)
    y_pred = tf.convert_to_tensor(y_pred)
    next_tokens = tokens[:, 1:]
    logits = y_pred[:, :-1, :]
    per_token = keras.losses.sparse_categorical_crossentropy(
        next_tokens, logits, from_logits=from_logits
    )
    if pad_id is None and mask is None:
        return tf.reduce_mean(per_token, axis=-1)
    keep = tf.ones_like(per_token) if pad_id is None else tf.not_equal(next_tokens, pad_id)
    keep = tf.cast(keep, per_token.dtype)
    if mask is not None:
        keep = keep * tf.cast(tf.reshape(mask, tf.shape(tokens))[:, :-1], per_token.dtype)
    per_token = tf.where(keep > 0, per_token, tf.zeros([], per_token.dtype))
    return tf.math.divide_no_nan(
        tf.reduce_sum(per_token * keep, axis=-1), tf.reduce_sum(keep, axis=-1)
    )


def _dice(y_true, y_pred, *, epsilon: float, mask: tf.Tensor | None = None) -> tf.Tensor:
    """Keras's dice, ``1 - 2 Σ y·p / (Σ y + Σ p + ε)``, over the masked examples."""
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.cast(y_true, y_pred.dtype)
    if mask is not None:
        m = tf.reshape(tf.cast(mask, y_pred.dtype), [-1] + [1] * (y_pred.shape.rank - 1))
        y_true, y_pred = y_true * m, y_pred * m
    intersection = tf.reduce_sum(y_true * y_pred)
    total = tf.reduce_sum(y_true) + tf.reduce_sum(y_pred) + epsilon
    return 1.0 - tf.math.divide_no_nan(2.0 * intersection, total)


_IMPLEMENTATIONS = {
    "sparse_categorical_crossentropy": _keras(keras.losses.SparseCategoricalCrossentropy),
    "categorical_crossentropy": _keras(keras.losses.CategoricalCrossentropy),
    "binary_crossentropy": _keras(keras.losses.BinaryCrossentropy),
    "mse": _keras(keras.losses.MeanSquaredError),
    "mae": _keras(keras.losses.MeanAbsoluteError),
    "huber": _keras(keras.losses.Huber),
    "dice": _dice,
    "sequence_crossentropy": _sequence_crossentropy,
}

registry.install_tensorflow_call(call_loss)
