"""`LossResult`: what a compiled loss returns, in every lowering."""

from __future__ import annotations

from typing import Any
from typing import NamedTuple


class LossResult(NamedTuple):
    """What `CompiledSplit.loss` returns.

    Attributes:
        total: scalar, ``Σ_b weight_b · per_loss[b]``.
        per_loss: ``{binding name: scalar}``, each unweighted by the binding's ``weight``.
        counts: ``{binding name: int32 scalar}``, examples routed to each binding in this
            batch (this replica's share under `tf.distribute`).
        weights: ``{binding name: scalar}``, the task weights ``alpha`` a weighted training
            step applied (``fs.keras.train_step(..., weighting=...)``); None otherwise.

    Examples:
        >>> import funcsplit as fs
        >>> fs.LossResult(total=0.0, per_loss={}, counts={}).total
        0.0
    """

    total: Any
    per_loss: dict[str, Any]
    counts: dict[str, Any]
    weights: dict[str, Any] | None = None
