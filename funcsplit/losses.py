"""Registry losses with options: ``fs.losses.sparse_categorical_crossentropy(from_logits=True)``.

Each constructor returns a `BuiltinLoss` for `LossBinding`'s ``fn``. The plain registry names
(``fn="mse"``) give the same losses with Keras's defaults: probabilities, not logits, for the
cross-entropies. Targets are cast to the prediction dtype and a ``[B]`` target is aligned with a
``[B, 1]`` prediction, as Keras does.
"""

from __future__ import annotations

from typing import Any

from funcsplit._src.registry import NAMES
from funcsplit._src.registry import BuiltinLoss
from funcsplit._src.registry import RowWise
from funcsplit._src.registry import make as _make
from funcsplit._src.registry import register as _register

__all__ = [
    "NAMES",
    "BuiltinLoss",
    "RowWise",
    "binary_crossentropy",
    "categorical_crossentropy",
    "dice",
    "huber",
    "mae",
    "mse",
    "register",
    "row_wise",
    "sequence_crossentropy",
    "sparse_categorical_crossentropy",
]


def sparse_categorical_crossentropy(*, from_logits: bool = False) -> BuiltinLoss:
    """Cross-entropy between integer labels ``[B]`` and class scores ``[B, C]``.

    Examples:
        >>> import funcsplit as fs
        >>> str(fs.losses.sparse_categorical_crossentropy(from_logits=True))
        'sparse_categorical_crossentropy(from_logits=True)'
    """
    return _make("sparse_categorical_crossentropy", from_logits=from_logits)


def categorical_crossentropy(
    *, from_logits: bool = False, label_smoothing: float = 0.0
) -> BuiltinLoss:
    """Cross-entropy between one-hot targets ``[B, C]`` and class scores ``[B, C]``.

    Examples:
        >>> import funcsplit as fs
        >>> fs.losses.categorical_crossentropy().batch_level
        False
    """
    return _make(
        "categorical_crossentropy", from_logits=from_logits, label_smoothing=label_smoothing
    )


def binary_crossentropy(*, from_logits: bool = False, label_smoothing: float = 0.0) -> BuiltinLoss:
    """Binary cross-entropy, averaged over the last axis (bool and int labels work).

    Examples:
        >>> import funcsplit as fs
        >>> fs.losses.binary_crossentropy(from_logits=True).option("from_logits")
        True
    """
    return _make("binary_crossentropy", from_logits=from_logits, label_smoothing=label_smoothing)


def mse() -> BuiltinLoss:
    """Mean squared error over the last axis.

    Examples:
        >>> import funcsplit as fs
        >>> fs.losses.mse().name
        'mse'
    """
    return _make("mse")


def mae() -> BuiltinLoss:
    """Mean absolute error over the last axis.

    Examples:
        >>> import funcsplit as fs
        >>> fs.losses.mae().name
        'mae'
    """
    return _make("mae")


def huber(*, delta: float = 1.0) -> BuiltinLoss:
    """Huber loss with threshold ``delta``, over the last axis.

    Examples:
        >>> import funcsplit as fs
        >>> fs.losses.huber(delta=2.0).option("delta")
        2.0
    """
    return _make("huber", delta=delta)


def dice(*, epsilon: float = 1e-7) -> BuiltinLoss:
    """Keras's dice loss ``1 - 2 Σ y·p / (Σ y + Σ p + ε)``: one batch-level scalar.

    Routed, it is computed over the routed examples only (a static-shape masked sum, so it
    works under XLA). Under `tf.distribute` each replica's value is weighted by its share of
    the routed examples.

    Examples:
        >>> import funcsplit as fs
        >>> fs.losses.dice().batch_level
        True
    """
    return _make("dice", epsilon=epsilon)


def sequence_crossentropy(*, from_logits: bool = False, pad_id: int | None = 0) -> BuiltinLoss:
    """Next-token cross-entropy of ``[B, T]`` tokens and ``[B, T, V]`` predictions.

    Position ``t`` of the predictions is scored against token ``t + 1``; target tokens equal
    to ``pad_id`` are ignored (``None``: none are). Each example's value is the mean over its
    scored tokens (0 when it has none).

    Examples:
        >>> import funcsplit as fs
        >>> fs.losses.sequence_crossentropy(from_logits=True, pad_id=None).option("pad_id") is None
        True
    """
    return _make("sequence_crossentropy", from_logits=from_logits, pad_id=pad_id)


def row_wise(fn: Any) -> RowWise:
    """Declares a user loss row-wise, so that bindings sharing it can share one loss call.

    Row-wise means each example's value depends on that example's target and prediction rows
    only (no batch statistics, no in-batch negatives). Multi-task heads bound with the same
    ``row_wise`` value, each routed by ``route(key, equals=t)`` with distinct ``t``, then
    compute the loss once on the batch, each example on the head it is routed to, instead of
    once per head on the whole batch (what routing by masks costs: ``T`` times the work). The
    shapes stay static, so it compiles once under XLA. Unrouted bindings of one ``row_wise``
    loss run it once on their concatenated batches. The values equal the per-binding ones up
    to the order of the sums. Bind the *same* object (or ``row_wise`` of the same function)
    to every head; a loss that is not row-wise gives wrong values when declared so.

    Examples:
        >>> import tensorflow as tf
        >>> import funcsplit as fs
        >>> def hinge(y_true, y_pred):
        ...     return tf.reduce_mean(tf.nn.relu(1.0 - y_true * y_pred), axis=-1)
        >>> loss = fs.losses.row_wise(hinge)
        >>> loss == fs.losses.row_wise(hinge), float(loss(tf.ones([1, 2]), tf.zeros([1, 2]))[0])
        (True, 1.0)
    """
    return RowWise(fn)


def register(name: str, fn: Any) -> Any:
    """Registers a user loss by name, to fill the named holes of splits read from JSON.

    A saved split writes a user callable (or a Keras ``Loss`` object) as a hole,
    ``{"callable": "my_dice"}``: loading runs no code named in the text, so the callable
    comes from ``SplitSpec.from_json(text, losses={...})`` or from this registry. A split
    whose binding holds a registered callable writes its registered name. Registering a name
    again replaces the callable. Returns ``fn``, so it works as a decorator with
    `functools.partial` or as a plain call.

    Args:
        name: the hole name (not one of the registry losses' names).
        fn: a callable ``(y_true, y_pred) -> values`` or a Keras ``Loss`` object.

    Returns:
        ``fn``.

    Raises:
        SpecError: for an empty name, a registry name, or a ``fn`` that is not callable.

    Examples:
        >>> import tensorflow as tf
        >>> import funcsplit as fs
        >>> def my_dice(y_true, y_pred):
        ...     return tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)
        >>> fs.losses.register("my_dice", my_dice) is my_dice
        True
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None, 2))})
        >>> split = fs.SplitSpec(spec, inputs="x", losses=fs.LossBinding("y", my_dice, "y"))
        >>> fs.SplitSpec.from_json(split.to_json()) == split
        True
    """
    return _register(name, fn)
