"""The loss registry's description: one record of facts per name, and the `BuiltinLoss` value.

A registry loss is a `BuiltinLoss` value (a name and its options): backend-neutral, hashable,
comparable by value. What the resolver and the lowerings need to know of a name (its default
options, whether it is batch-level or row-wise, the rank its integer targets must have) lives
in one `LossRecord` per name. The implementations live in the lowerings:
``funcsplit/_src/tf_losses.py`` for TensorFlow, ``funcsplit/jax/_losses.py`` for JAX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import attrs

from funcsplit._src import structure
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import close_matches


class LossRecord(NamedTuple):
    """The facts of one registry loss.

    Attributes:
        defaults: the options and their default values.
        batch_level: returns one scalar for the batch (dice) instead of ``[B]`` values.
        row_wise: each example's value depends on its own row only (bindings may share a call).
        integer_target_rank: the rank the target must have when it must be integer tokens.
        elementwise: the value is a mean over the last axis of an elementwise value, so a
            ``[B]`` prediction is one value per example: it is aligned as ``[B, 1]`` and
            gives ``[B]`` values (Keras's functions would take that mean over the batch).
        prediction_rank: the least rank of a prediction (2 where the last axis holds the
            classes, 3 for ``[B, T, V]`` tokens): a lower rank is a `SpecError`.
        reads_mask: the loss applies a prediction's Keras mask itself (its values are
            already reduced over the masked axes).
    """

    defaults: dict[str, Any]
    batch_level: bool = False
    row_wise: bool = True
    integer_target_rank: int | None = None
    elementwise: bool = False
    prediction_rank: int = 1
    reads_mask: bool = False


RECORDS: dict[str, LossRecord] = {
    "sparse_categorical_crossentropy": LossRecord({"from_logits": False}, prediction_rank=2),
    "categorical_crossentropy": LossRecord(
        {"from_logits": False, "label_smoothing": 0.0}, prediction_rank=2
    ),
    "binary_crossentropy": LossRecord(
        {"from_logits": False, "label_smoothing": 0.0}, elementwise=True
    ),
    "mse": LossRecord({}, elementwise=True),
    "mae": LossRecord({}, elementwise=True),
    "huber": LossRecord({"delta": 1.0}, elementwise=True),
    "dice": LossRecord({"epsilon": 1e-7}, batch_level=True, row_wise=False),
    "sequence_crossentropy": LossRecord(
        {"from_logits": False, "pad_id": 0},
        integer_target_rank=2,
        prediction_rank=3,
        reads_mask=True,
    ),
}

NAMES = tuple(RECORDS)

# How a lowering calls a loss on its tensors: ``call(fn, y_true, y_pred)``. The TensorFlow
# lowering (``funcsplit/_src/tf_losses.py``) installs its own when it is imported, which
# ``import funcsplit`` does; it is what `BuiltinLoss` and `RowWise` objects run when called.
_tensorflow_call: Callable[[Any, Any, Any], Any] | None = None


def install_tensorflow_call(call: Callable[[Any, Any, Any], Any]) -> None:
    """Sets the function that calling a `BuiltinLoss` or `RowWise` runs (the TF lowering's)."""
    global _tensorflow_call
    _tensorflow_call = call


def _call(fn: Any, y_true: Any, y_pred: Any) -> Any:
    if _tensorflow_call is None:
        raise RuntimeError("the TensorFlow lowering is not loaded: import funcsplit first")
    return _tensorflow_call(fn, y_true, y_pred)


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
    def record(self) -> LossRecord:
        """The registry's facts about this loss."""
        return RECORDS[self.name]

    @property
    def batch_level(self) -> bool:
        """Whether the loss returns one scalar for the batch (dice) instead of ``[B]``."""
        return self.record.batch_level

    @property
    def row_wise(self) -> bool:
        """Whether each example's value depends on that example's row only."""
        return self.record.row_wise

    @property
    def elementwise(self) -> bool:
        """Whether a ``[B]`` prediction is one value per example (aligned as ``[B, 1]``)."""
        return self.record.elementwise

    @property
    def integer_target_rank(self) -> int | None:
        """The rank the target must have when it must be integer tokens, else None."""
        return self.record.integer_target_rank

    def option(self, key: str) -> Any:
        """The value of one option (its default when not given)."""
        return dict(self.options).get(key, self.record.defaults.get(key))

    def kwargs(self) -> dict[str, Any]:
        """Every option with its value (defaults filled in), for an implementation."""
        return {**self.record.defaults, **dict(self.options)}

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        return _call(self, y_true, y_pred)

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options)
        return f"{self.name}({opts})" if opts else self.name


def make(name: str, **options: Any) -> BuiltinLoss:
    """Builds a registry loss, checking the option names and types."""
    defaults = RECORDS[name].defaults
    options = {key: structure.python_scalar(value) for key, value in options.items()}
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
    if name not in RECORDS:
        raise SpecError.single(
            where,
            path,
            "a registry loss name: " + ", ".join(NAMES),
            repr(name),
            "use a registry name, a funcsplit.losses constructor or a callable",
            close_matches(name, NAMES),
        )
    return BuiltinLoss(name)


# User callables registered by name (`funcsplit.losses.register`): what fills the named holes
# of a loaded split (``{"callable": "my_dice"}``) when the caller does not pass them.
_USER: dict[str, Any] = {}


def register(name: str, fn: Any) -> Any:
    """Registers a user loss under ``name`` for loading saved splits; returns ``fn``.

    Raises:
        SpecError: for an empty name, a registry loss name, or a ``fn`` that is not callable.
    """
    if not isinstance(name, str) or not name.strip():
        raise SpecError.single("funcsplit.losses.register", None, "a non-empty name", repr(name))
    if name in RECORDS:
        raise SpecError.single(
            "funcsplit.losses.register",
            None,
            "a name that is not a registry loss",
            repr(name),
            "pick another name: registry names always mean the built-in losses",
        )
    if isinstance(fn, (str, BuiltinLoss, RowWise)) or not callable(fn):
        raise SpecError.single(
            "funcsplit.losses.register",
            None,
            "a user callable (y_true, y_pred) -> values, or a Keras Loss",
            repr(fn),
            "register the function itself; row_wise(fn) is saved as row_wise of the hole",
        )
    _USER[name] = fn
    return fn


def registered(name: str) -> Any | None:
    """The callable registered under ``name``, or None."""
    return _USER.get(name)


def registered_name(fn: Any) -> str | None:
    """The name ``fn`` (this very object) is registered under, or None."""
    return next((name for name, known in _USER.items() if known is fn), None)


def as_loss(fn: Any) -> Any:
    """Turns a registry name into its `BuiltinLoss`; returns other callables unchanged."""
    return get(fn) if isinstance(fn, str) else fn


@attrs.frozen
class RowWise:
    """A user loss declared row-wise: example ``i``'s value depends on row ``i`` only.

    Built by `funcsplit.losses.row_wise`. Called, it calls ``fn`` as a binding would (a Keras
    ``Loss`` unreduced). The declaration lets bindings of the same ``RowWise`` value share one
    loss call (see ``funcsplit/_src/tf_grouped.py``); without it a callable always sees its
    binding's whole batch.
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
        return _call(self.fn, y_true, y_pred)


def is_row_wise(fn: Any) -> bool:
    """Whether a binding's loss is row-wise: a row-wise registry loss or a `RowWise` value."""
    return isinstance(fn, RowWise) or (isinstance(fn, BuiltinLoss) and fn.row_wise)
