"""Loss weighting and gradient balancing for multi-task training, compiled and routing-aware.

Each constructor returns a `Method`, an optax-style pair of pure functions::

    m = fs.weighting.famo()
    state = m.init(num_tasks)
    alpha, state = m.update(losses, gram, state, present=None)

``losses`` is this step's float32 ``[T]`` vector of per-task losses (each binding's weight
times its loss), ``gram`` the ``[T, T]`` Gram matrix ``G Gᵀ`` of the per-task gradients with
respect to the shared variables (read only when ``m.needs_gram``; else pass ``None``), and
``present`` the bool ``[T]`` vector of the tasks with routed examples in this batch. The
step's direction is ``Σ_t alpha_t ∇L_t``; ``alpha`` carries no gradient. Every update is pure,
traceable and compiles with XLA (``jit_compile=True``): the solvers of the Gram methods run in
the graph with a fixed number of iterations.

Routing: an absent task gets ``alpha_t = 0`` and its state entries stay as they were; the
Gram methods solve over the present tasks only (the result equals the method run on the
present sub-problem); with nothing present ``alpha`` is all zeros, never NaN.

The same constructors over ``jax.numpy`` are ``fs.jax.weighting``: one description of each
method (``_loss_based.py``, ``_gram_based.py``) runs on both backends.

Examples:
    >>> import funcsplit as fs
    >>> m = fs.weighting.uncertainty()
    >>> alpha, state = m.update([1.0, 4.0], None, m.init(2), present=[True, False])
    >>> alpha.numpy().tolist()
    [0.5, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence

from funcsplit.weighting import _loss_based
from funcsplit.weighting._method import Method
from funcsplit.weighting._tf import OPS as _OPS

__all__ = [
    "Method",
    "static",
    "uncertainty",
]


def static(*, weights: Sequence[float] | None = None) -> Method:
    """Fixed task weights: ``alpha_t = w_t`` (1 for every task when ``weights`` is None).

    The plain sum of the losses (or a fixed weighted sum): the baseline every multi-task
    paper compares with. Absent tasks get 0. No state.

    Args:
        weights: one finite number per task, or None for all ones.

    Returns:
        A `Method` named ``"static"`` that does not need the Gram matrix.

    Raises:
        SpecError: ``weights`` is not a sequence of finite numbers, or (at ``init``) its
            length is not the number of tasks.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.static(weights=[1.0, 0.5, 2.0])
        >>> alpha, _ = m.update([3.0, 1.0, 2.0], None, m.init(3), present=[True, True, False])
        >>> alpha.numpy().tolist()
        [1.0, 0.5, 0.0]
    """
    return _loss_based.static(_OPS, weights=weights)


def uncertainty(*, learning_rate: float = 0.05) -> Method:
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

    Each task has a learned log-variance ``s_t = log σ_t²`` and the objective is
    ``Σ_t exp(-s_t) L_t / 2 + s_t / 2`` (the paper's eq. 7, as LibMTL writes it). The step's
    weights are ``alpha_t = exp(-s_t) / 2``; ``s`` takes one gradient step of that objective,
    ``s_t ← s_t - η (1 - exp(-s_t) L_t) / 2``, at the same time as the model (the paper
    trains both jointly). Its fixed point is ``exp(-s_t) = 1 / L_t``: with constant losses
    ``alpha`` converges to ``1 / (2 L_t)``, proportional to ``1 / L_t``. ``s`` starts at 0
    (``σ = 1``). Absent tasks keep their ``s_t``.

    Args:
        learning_rate: ``η``, the step size of the log-variances (the paper learns them with
            the model's optimizer; here they are plain SGD in the method's state).

    Returns:
        A `Method` named ``"uncertainty"``; state ``{"log_variance": [T]}``.

    Raises:
        SpecError: ``learning_rate`` is not a positive number.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.uncertainty(learning_rate=0.5)
        >>> state = m.init(2)
        >>> for _ in range(200):
        ...     alpha, state = m.update([2.0, 8.0], None, state)
        >>> [round(float(a), 4) for a in alpha]    # 1 / (2 L_t)
        [0.25, 0.0625]
    """
    return _loss_based.uncertainty(_OPS, learning_rate=learning_rate)
