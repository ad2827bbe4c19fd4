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
from funcsplit.weighting._method import masked_softmax
from funcsplit.weighting._method import present_mask
from funcsplit.weighting._method import uniform


def _numbers(name: str, option: str, values: Any) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers = ()
    if not numbers or any(not (v == v and abs(v) != float("inf")) for v in numbers):
        raise SpecError(
            f"fs.weighting.{name}(): {option} expected a non-empty sequence of finite numbers, "
            f"one per task, found {values!r}; fix: pass {option}=[v_1, ..., v_T] or None"
        )
    return numbers


def static(ops: Ops, *, weights: Any = None) -> Method:
    values = None if weights is None else _numbers("static", "weights", weights)

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


def dwa(ops: Ops, *, temperature: float = 2.0) -> Method:
    temperature = check_option("dwa", "temperature", temperature, low=0, strict=True)

    def init(num_tasks):
        num_tasks = check_num_tasks("dwa", num_tasks)
        zeros = ops.zeros((num_tasks,))
        return {"previous": zeros, "before": zeros, "seen": zeros}

    def update(losses, gram, state, present=None):
        losses = ops.stop_gradient(ops.asarray(losses))
        mask = present_mask(ops, present, losses.shape[0])
        previous, before, seen = state["previous"], state["before"], state["seen"]
        history = seen >= 2
        ratio = ops.where(history, previous / ops.where(history, before, 1.0), 1.0)
        alpha = ops.sum(mask) * masked_softmax(ops, ratio / temperature, mask)
        return alpha, {
            "previous": keep(ops, mask, losses, previous),
            "before": keep(ops, mask, previous, before),
            "seen": keep(ops, mask, ops.minimum(seen + 1.0, 2.0), seen),
        }

    return Method("dwa", False, init, update)


def _check_seed(name: str, seed: Any) -> int:
    if isinstance(seed, bool) or not hasattr(seed, "__index__") or not 0 <= seed < 2**32:
        raise SpecError(
            f"fs.weighting.{name}(): seed expected an int in [0, 2**32), found {seed!r}; "
            f"fix: pass seed=0 (or any such int)"
        )
    return int(seed)


def standard_normal(ops: Ops, seed: int, counter, num: int):
    """``num`` standard normal draws (Box-Muller over `uniform`), the same on both backends."""
    u = uniform(ops, seed, counter, 2 * num)
    radius = ops.sqrt(-2.0 * ops.log(1.0 - u[:num]))
    return radius * ops.cos(6.283185307179586 * u[num:])


def rlw(ops: Ops, *, seed: int = 0) -> Method:
    seed = _check_seed("rlw", seed)

    def init(num_tasks):
        check_num_tasks("rlw", num_tasks)
        return {"step": ops.zeros((), "int32")}

    def update(losses, gram, state, present=None):
        losses = ops.asarray(losses)
        num_tasks = losses.shape[0]
        mask = present_mask(ops, present, num_tasks)
        draws = standard_normal(ops, seed, state["step"], num_tasks)
        return masked_softmax(ops, draws, mask), {"step": state["step"] + 1}

    return Method("rlw", False, init, update)


def famo(
    ops: Ops,
    *,
    gamma: float = 0.01,
    learning_rate: float = 0.025,
    min_losses: Any = None,
) -> Method:
    gamma = check_option("famo", "gamma", gamma, low=0)
    learning_rate = check_option("famo", "learning_rate", learning_rate, low=0, strict=True)
    bounds = None if min_losses is None else _numbers("famo", "min_losses", min_losses)
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def init(num_tasks):
        num_tasks = check_num_tasks("famo", num_tasks)
        if bounds is not None and len(bounds) != num_tasks:
            raise SpecError(
                f"fs.weighting.famo(): min_losses has {len(bounds)} entries, expected one per "
                f"task ({num_tasks}); fix: give min_losses=[...] with {num_tasks} numbers"
            )
        zeros = ops.zeros((num_tasks,))
        return {
            "logits": zeros,
            "mu": zeros,
            "nu": zeros,
            "count": zeros,
            "previous": zeros,
            "has_previous": zeros,
        }

    def update(losses, gram, state, present=None):
        losses = ops.stop_gradient(ops.asarray(losses))
        num_tasks = losses.shape[0]
        mask = present_mask(ops, present, num_tasks)
        low = ops.zeros((num_tasks,)) if bounds is None else ops.asarray(list(bounds))
        log_gap = ops.log(ops.maximum(losses - low, 0.0) + 1e-8)
        logits = state["logits"]
        # the logits' step: delta = log L_prev - log L_now, through the softmax's Jacobian
        stepping = mask * state["has_previous"]
        delta = ops.where(stepping > 0, state["previous"] - log_gap, 0.0)
        z = masked_softmax(ops, logits, mask)
        grad = z * (delta - ops.sum(z * delta)) + gamma * logits
        count = state["count"] + 1.0
        mu = beta1 * state["mu"] + (1.0 - beta1) * grad
        nu = beta2 * state["nu"] + (1.0 - beta2) * grad * grad
        mu_hat = mu / (1.0 - beta1**count)
        nu_hat = nu / (1.0 - beta2**count)
        stepped = logits - learning_rate * mu_hat / (ops.sqrt(nu_hat) + eps)
        logits_new = keep(ops, stepping, stepped, logits)
        # this step's weights: alpha_t = (z_t / D_t) / sum_i (z_i / D_i)
        ratio = masked_softmax(ops, logits_new, mask) / ops.exp(log_gap)
        alpha = ratio / ops.maximum(ops.sum(ratio), 1e-30)
        return alpha, {
            "logits": logits_new,
            "mu": keep(ops, stepping, mu, state["mu"]),
            "nu": keep(ops, stepping, nu, state["nu"]),
            "count": keep(ops, stepping, count, state["count"]),
            "previous": keep(ops, mask, log_gap, state["previous"]),
            "has_previous": keep(ops, mask, ops.ones((num_tasks,)), state["has_previous"]),
        }

    return Method("famo", False, init, update)
