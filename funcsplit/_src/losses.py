"""The loss registry: backend-neutral descriptions and their TensorFlow implementations.

A registry loss is a `BuiltinLoss` value (a name and its options). It follows Keras's
defaults (probabilities, not logits, for the cross-entropies; targets cast to the
prediction dtype; a ``[B]`` target aligned with a ``[B, 1]`` prediction) by calling Keras's
own loss functions unreduced, so its values equal Keras's. ``funcsplit.jax`` holds JAX
implementations of the same names.
"""

from __future__ import annotations

from typing import Any

import attrs
import keras
import tensorflow as tf

from funcsplit._src.errors import SpecError
from funcsplit._src.errors import close_matches

# name -> (default options, batch_level, integer_target_rank or None)
_REGISTRY: dict[str, tuple[dict[str, Any], bool, int | None]] = {
    "sparse_categorical_crossentropy": ({"from_logits": False}, False, None),
    "categorical_crossentropy": ({"from_logits": False, "label_smoothing": 0.0}, False, None),
    "binary_crossentropy": ({"from_logits": False, "label_smoothing": 0.0}, False, None),
    "mse": ({}, False, None),
    "mae": ({}, False, None),
    "huber": ({"delta": 1.0}, False, None),
    "dice": ({"epsilon": 1e-7}, True, None),
    "sequence_crossentropy": ({"from_logits": False, "pad_id": 0}, False, 2),
}

NAMES = tuple(_REGISTRY)


@attrs.frozen
class BuiltinLoss:
    """A registry loss: its name and options (hashable, backend-neutral).

    Call it as ``loss(y_true, y_pred)`` for TensorFlow tensors; ``funcsplit.jax`` runs the
    same value on JAX arrays. Per-example losses return ``[B]`` values; ``dice`` returns one
    batch-level scalar.

    Examples:
        >>> import funcsplit as fs
        >>> loss = fs.losses.sparse_categorical_crossentropy(from_logits=True)
        >>> loss.name, loss.option("from_logits"), loss.batch_level
        ('sparse_categorical_crossentropy', True, False)
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def batch_level(self) -> bool:
        """Whether the loss returns one scalar for the batch (dice) instead of ``[B]``."""
        return _REGISTRY[self.name][1]

    @property
    def integer_target_rank(self) -> int | None:
        """The rank the target must have when it must be integer tokens, else None."""
        return _REGISTRY[self.name][2]

    def option(self, key: str) -> Any:
        """The value of one option (its default when not given)."""
        return dict(self.options).get(key, _REGISTRY[self.name][0].get(key))

    def __call__(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        return _TF_IMPL[self.name](y_true, y_pred, **self._kwargs())

    def masked(self, y_true: Any, y_pred: Any, mask: tf.Tensor) -> tf.Tensor:
        """A batch-level loss over the examples where ``mask`` is true (static shapes)."""
        if self.name != "dice":
            raise NotImplementedError(self.name)
        return _dice(y_true, y_pred, mask=mask, **self._kwargs())

    def _kwargs(self) -> dict[str, Any]:
        return {**_REGISTRY[self.name][0], **dict(self.options)}

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options)
        return f"{self.name}({opts})" if opts else self.name


def make(name: str, **options: Any) -> BuiltinLoss:
    """Builds a registry loss, checking the option names and types."""
    defaults = _REGISTRY[name][0]
    for key, value in options.items():
        if key not in defaults:
            raise SpecError.single(
                f"funcsplit.losses.{name}",
                None,
                f"options among {sorted(defaults)}",
                key,
                nearby=close_matches(key, defaults),
            )
        default = defaults[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise SpecError.single(f"funcsplit.losses.{name}", None, f"{key}: a bool", repr(value))
        if isinstance(default, float) and (
            isinstance(value, bool) or not isinstance(value, (int, float))
        ):
            raise SpecError.single(
                f"funcsplit.losses.{name}", None, f"{key}: a number", repr(value)
            )
    return BuiltinLoss(name, tuple(sorted((k, v) for k, v in options.items() if v != defaults[k])))


def get(name: str, *, where: str = "loss", path: str | None = None) -> BuiltinLoss:
    """Returns the registry loss named ``name`` with its default options.

    Raises:
        SpecError: for an unknown name, with the closest registry names.
    """
    if name not in _REGISTRY:
        raise SpecError.single(
            where,
            path,
            "a registry loss name: " + ", ".join(NAMES),
            repr(name),
            "use a registry name, a funcsplit.losses constructor or a callable",
            close_matches(name, NAMES),
        )
    return BuiltinLoss(name)


def as_loss(fn: Any) -> Any:
    """Turns a registry name into its `BuiltinLoss`; returns other callables unchanged."""
    return get(fn) if isinstance(fn, str) else fn


@attrs.frozen
class RowWise:
    """A user loss declared row-wise: example ``i``'s value depends on row ``i`` only.

    Built by `funcsplit.losses.row_wise`. It calls ``fn`` as a binding would (a Keras ``Loss``
    unreduced). The declaration lets bindings of the same ``RowWise`` value share one loss
    call (see ``funcsplit/_src/grouped.py``); without it a callable always sees its binding's
    whole batch.
    """

    fn: Any = attrs.field()

    @fn.validator
    def _check(self, _attribute: Any, value: Any) -> None:
        if isinstance(value, (str, BuiltinLoss, RowWise)) or not callable(value):
            raise SpecError.single(
                "funcsplit.losses.row_wise",
                None,
                "a user callable (y_true, y_pred) -> per-example values, or a Keras Loss",
                repr(value),
                "registry losses are row-wise already: pass them to LossBinding as they are",
            )

    @property
    def __wrapped__(self) -> Any:
        return self.fn

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        if isinstance(self.fn, keras.losses.Loss):
            return keras_unreduced(self.fn, y_true, y_pred)
        return self.fn(y_true, y_pred)


def keras_unreduced(loss: keras.losses.Loss, y_true: Any, y_pred: Any) -> Any:
    """Calls a Keras ``Loss`` object without reduction, as its ``__call__`` does.

    Inputs are converted to the loss's dtype, then its ``call`` gives the unreduced values.
    """
    convert = lambda x: keras.ops.convert_to_tensor(x, dtype=loss.dtype)
    y_pred = tf.nest.map_structure(convert, y_pred)
    y_true = tf.nest.map_structure(convert, y_true)
    return loss.call(y_true, y_pred)


def _keras(cls: type, **fixed: Any):
    def fn(y_true: Any, y_pred: Any, **kwargs: Any) -> tf.Tensor:
        return keras_unreduced(cls(**fixed, **kwargs), y_true, y_pred)

    return fn


def _sequence_crossentropy(y_true, y_pred, *, from_logits: bool, pad_id: int | None) -> tf.Tensor:
    """Next-token cross-entropy: position t predicts token t + 1; padding ignored.

    Returns per-example means over the non-padding target tokens (0 for an example with none).
    """
    tokens = tf.cast(y_true, tf.int32)
    y_pred = tf.convert_to_tensor(y_pred)
    next_tokens = tokens[:, 1:]
    logits = y_pred[:, :-1, :]
    per_token = keras.losses.sparse_categorical_crossentropy(
        next_tokens, logits, from_logits=from_logits
    )
    if pad_id is None:
        return tf.reduce_mean(per_token, axis=-1)
    keep = tf.cast(tf.not_equal(next_tokens, pad_id), per_token.dtype)
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


_TF_IMPL = {
    "sparse_categorical_crossentropy": _keras(keras.losses.SparseCategoricalCrossentropy),
    "categorical_crossentropy": _keras(keras.losses.CategoricalCrossentropy),
    "binary_crossentropy": _keras(keras.losses.BinaryCrossentropy),
    "mse": _keras(keras.losses.MeanSquaredError),
    "mae": _keras(keras.losses.MeanAbsoluteError),
    "huber": _keras(keras.losses.Huber),
    "dice": _dice,
    "sequence_crossentropy": _sequence_crossentropy,
}
