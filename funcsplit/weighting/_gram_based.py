"""The methods that read the Gram matrix of the task gradients: gradnorm, pcgrad, mgda, cagrad,
nash_mtl.

A Gram method sees the gradients only through ``K = G Gᵀ``: every direction it builds is a
linear combination ``Σ_t alpha_t g_t``, so it returns the coefficients ``alpha`` and the
trainer forms the direction with one more weighted backward pass. Like the loss-based methods
(``_loss_based.py``) each takes the backend's `Ops` first; the solvers are ``_solvers.py``.
"""

from __future__ import annotations

from funcsplit.weighting._loss_based import _check_seed
from funcsplit.weighting._method import Method
from funcsplit.weighting._method import Ops
from funcsplit.weighting._method import check_num_tasks
from funcsplit.weighting._method import check_option
from funcsplit.weighting._method import keep
from funcsplit.weighting._method import present_mask
from funcsplit.weighting._method import uniform
from funcsplit.weighting._solvers import conflict_averse
from funcsplit.weighting._solvers import min_norm
from funcsplit.weighting._solvers import nash_bargaining


def _diagonal(ops: Ops, gram):
    return ops.sum(gram * ops.eye(gram.shape[0]), 1)


def gradnorm(ops: Ops, *, alpha: float = 1.5, learning_rate: float = 0.025) -> Method:
    strength = check_option("gradnorm", "alpha", alpha, low=0)
    learning_rate = check_option("gradnorm", "learning_rate", learning_rate, low=0, strict=True)

    def init(num_tasks):
        num_tasks = check_num_tasks("gradnorm", num_tasks)
        zeros = ops.zeros((num_tasks,))
        return {"weights": ops.ones((num_tasks,)), "initial": zeros, "has_initial": zeros}

    def update(losses, gram, state, present=None):
        losses = ops.stop_gradient(ops.asarray(losses))
        gram = ops.stop_gradient(ops.asarray(gram))
        mask = present_mask(ops, present, losses.shape[0])
        count = ops.maximum(ops.sum(mask), 1.0)
        first = mask * (1.0 - state["has_initial"])
        initial = keep(ops, first, losses, state["initial"])
        weights = state["weights"]
        norms = ops.sqrt(ops.maximum(_diagonal(ops, gram), 0.0))  # ‖∇L_t‖
        scaled = weights * norms  # G_t = ‖∇(w_t L_t)‖
        mean_norm = ops.sum(scaled * mask) / count
        ratio = losses / ops.where(mask > 0, initial, 1.0)  # L̃_t = L_t / L_t(0)
        inverse_rate = ratio / ops.maximum(ops.sum(ratio * mask) / count, 1e-30)
        target = mean_norm * ops.where(mask > 0, inverse_rate, 1.0) ** strength
        # d/dw_t Σ |G_t - target_t| with the target held constant (the paper's rule)
        stepped = ops.maximum(weights - learning_rate * ops.sign(scaled - target) * norms, 0.0)
        before, after = ops.sum(weights * mask), ops.sum(stepped * mask)
        stepped = stepped * before / ops.where(after > 0, after, 1.0)
        return weights * mask, {
            "weights": keep(ops, mask, stepped, weights),
            "initial": initial,
            "has_initial": keep(ops, mask, ops.ones(mask.shape), state["has_initial"]),
        }

    return Method("gradnorm", True, init, update)


def pcgrad(ops: Ops, *, seed: int = 0) -> Method:
    seed = _check_seed("pcgrad", seed)

    def init(num_tasks):
        check_num_tasks("pcgrad", num_tasks)
        return {"step": ops.zeros((), "int32")}

    def update(losses, gram, state, present=None):
        gram = ops.stop_gradient(ops.asarray(gram))
        n = gram.shape[0]
        mask = present_mask(ops, present, n)
        # task i projects against the tasks j in the order of its row of random keys
        keys = uniform(ops, seed, state["step"], n * n)
        order = ops.argsort(ops.reshape(keys, (n, n)))
        squared = _diagonal(ops, gram)

        def body(index, rows):
            i, j = index // n, order[index // n, index % n]
            row_i = ops.one_hot(i, n)
            row = ops.sum(rows * row_i[:, None], 0)  # the coefficients of g_i^PC
            dot = ops.sum(row * gram[:, j])  # <g_i^PC, g_j>
            norm = ops.sum(squared * ops.one_hot(j, n))
            both = ops.sum(mask * row_i) * ops.sum(mask * ops.one_hot(j, n))
            conflict = both * ops.cast(dot < 0, "float32") * ops.cast(norm > 0, "float32")
            scale = conflict * dot / ops.where(norm > 0, norm, 1.0)
            return rows - scale * row_i[:, None] * ops.one_hot(j, n)[None, :]

        rows = ops.fori_loop(n * n, body, ops.eye(n))
        alpha = ops.sum(rows * mask[:, None], 0) * mask
        return alpha, {"step": state["step"] + 1}

    return Method("pcgrad", True, init, update)


def mgda(ops: Ops) -> Method:
    def init(num_tasks):
        check_num_tasks("mgda", num_tasks)
        return {}

    def update(losses, gram, state, present=None):
        gram = ops.stop_gradient(ops.asarray(gram))
        mask = present_mask(ops, present, gram.shape[0])
        return min_norm(ops, gram, mask), state

    return Method("mgda", True, init, update)


def cagrad(ops: Ops, *, c: float = 0.4) -> Method:
    c = check_option("cagrad", "c", c, low=0)

    def init(num_tasks):
        check_num_tasks("cagrad", num_tasks)
        return {}

    def update(losses, gram, state, present=None):
        gram = ops.stop_gradient(ops.asarray(gram))
        mask = present_mask(ops, present, gram.shape[0])
        w, lam, _ = conflict_averse(ops, gram, mask, c)
        mean = mask / ops.maximum(ops.sum(mask), 1.0)
        return (mean + lam * w) / (1.0 + c * c), state

    return Method("cagrad", True, init, update)


def nash_mtl(ops: Ops) -> Method:
    def init(num_tasks):
        check_num_tasks("nash_mtl", num_tasks)
        return {}

    def update(losses, gram, state, present=None):
        gram = ops.stop_gradient(ops.asarray(gram))
        mask = present_mask(ops, present, gram.shape[0])
        return nash_bargaining(ops, gram, mask), state

    return Method("nash_mtl", True, init, update)
