"""The methods that read only the losses: static, uncertainty, dwa, rlw, famo.

Each constructor takes the backend's `Ops` first and returns a `Method`; the public
constructors (``funcsplit.weighting``, ``funcsplit.jax.weighting``) pass their backend and
carry the documentation (paper, formula, options). Every update is routing-aware: absent
tasks get weight 0, their state entries stay as they were, and normalisations run over the
present tasks only.
"""

from __future__ import annotations

from typing import Any

from funcsplit._src.errors import SpecError
from funcsplit.weighting._method import Method
from funcsplit.weighting._method import Ops
from funcsplit.weighting._method import check_num_tasks
from funcsplit.weighting._method import check_option
from funcsplit.weighting._method import keep
from funcsplit.weighting._method import present_mask


def _static_weights(weights: Any) -> tuple[float, ...] | None:
    if weights is None:
        return None
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        values = ()
    if not values or any(not (v == v and abs(v) != float("inf")) for v in values):
        raise SpecError(
            f"fs.weighting.static(): weights expected a non-empty sequence of finite numbers, "
            f"one per task, found {weights!r}; fix: pass weights=[w_1, ..., w_T] or None (all 1)"
        )
    return values


def static(ops: Ops, *, weights: Any = None) -> Method:
    values = _static_weights(weights)

    def init(num_tasks):
        num_tasks = check_num_tasks("static", num_tasks)
        if values is not None and len(values) != num_tasks:
            raise SpecError(
                f"fs.weighting.static(): weights has {len(values)} entries, expected one per "
                f"task ({num_tasks}); fix: give weights=[...] with {num_tasks} numbers"
            )
        return {}

    def update(losses, gram, state, present=None):
        losses = ops.asarray(losses)
        num_tasks = losses.shape[0]
        mask = present_mask(ops, present, num_tasks)
        weights = ops.ones((num_tasks,)) if values is None else ops.asarray(list(values))
        return weights * mask, state

    return Method("static", False, init, update)


def uncertainty(ops: Ops, *, learning_rate: float = 0.05) -> Method:
    learning_rate = check_option("uncertainty", "learning_rate", learning_rate, low=0, strict=True)

    def init(num_tasks):
        return {"log_variance": ops.zeros((check_num_tasks("uncertainty", num_tasks),))}

    def update(losses, gram, state, present=None):
        losses = ops.stop_gradient(ops.asarray(losses))
        log_variance = state["log_variance"]
        mask = present_mask(ops, present, losses.shape[0])
        precision = ops.exp(-log_variance)
        alpha = 0.5 * precision * mask
        # d/ds [exp(-s) L / 2 + s / 2] = (1 - exp(-s) L) / 2
        stepped = log_variance - learning_rate * 0.5 * (1.0 - precision * losses)
        return alpha, {"log_variance": keep(ops, mask, stepped, log_variance)}

    return Method("uncertainty", False, init, update)
