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

from funcsplit.weighting import _gram_based
from funcsplit.weighting import _loss_based
from funcsplit.weighting._method import NAMES
from funcsplit.weighting._method import Method
from funcsplit.weighting._tf import OPS as _OPS

__all__ = [
    "NAMES",
    "Method",
    "cagrad",
    "dwa",
    "famo",
    "gradnorm",
    "mgda",
    "nash_mtl",
    "pcgrad",
    "rlw",
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


def dwa(*, temperature: float = 2.0) -> Method:
    """Dynamic Weight Average (Liu, Johns and Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019).

    ``alpha_t = T · exp(r_t / τ) / Σ_i exp(r_i / τ)`` with ``r_t = L_t(k-1) / L_t(k-2)``, the
    rate at which task ``t``'s loss fell over the last two updates (``r_t = 1`` until a task has
    two past losses, as the paper's first two epochs). The paper averages the losses per epoch;
    here each update is one step of the history (call ``update`` with epoch means to follow the
    paper). With routing, ``T`` and the softmax run over the present tasks, and only present
    tasks record their loss.

    Args:
        temperature: ``τ``; larger is smoother (2 in the paper).

    Returns:
        A `Method` named ``"dwa"``; state ``{"previous", "before", "seen"}``, each ``[T]``.

    Raises:
        SpecError: ``temperature`` is not a positive number.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.dwa()
        >>> state = m.init(2)
        >>> for losses in ([1.0, 1.0], [0.5, 1.0], [0.5, 1.0]):
        ...     alpha, state = m.update(losses, None, state)
        >>> [round(float(a), 3) for a in alpha]    # task 0 fell faster: less weight
        [0.876, 1.124]
    """
    return _loss_based.dwa(_OPS, temperature=temperature)


def rlw(*, seed: int = 0) -> Method:
    """Random Loss Weighting (Lin et al., "Reasonable Effectiveness of Random Weighting",
    TMLR 2022).

    Each step draws ``ε ~ N(0, I_T)`` and uses ``alpha = softmax(ε)`` (the weights sum to 1).
    The draws come from a counter-based hash of ``(seed, step)`` in the state, so they are
    reproducible, the same under XLA, and the same in ``fs.jax.weighting``. With routing the
    softmax runs over the present tasks.

    Args:
        seed: an int in ``[0, 2**32)``.

    Returns:
        A `Method` named ``"rlw"``; state ``{"step": int32 scalar}``.

    Raises:
        SpecError: ``seed`` is not such an int.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.rlw(seed=0)
        >>> alpha, state = m.update([1.0, 2.0, 3.0], None, m.init(3))
        >>> round(float(sum(alpha)), 5), int(state["step"])
        (1.0, 1)
    """
    return _loss_based.rlw(_OPS, seed=seed)


def famo(
    *,
    gamma: float = 0.01,
    learning_rate: float = 0.025,
    min_losses: Sequence[float] | None = None,
) -> Method:
    """Fast Adaptive Multitask Optimization (Liu, Liu, Jiang, Stone and Liu, NeurIPS 2023).

    Task logits ``ξ`` give ``z = softmax(ξ)``; the step descends ``Σ_t z_t log(L_t - b_t)``,
    i.e. ``alpha_t = (z_t / D_t) / Σ_i (z_i / D_i)`` with ``D_t = L_t - b_t + 1e-8`` (the
    weights sum to 1). Before computing them, ``ξ`` takes one Adam step (learning rate ``η``,
    L2 decay ``γ``, as the official code) on the gradient ``Jᵀδ``, ``J`` the softmax's
    Jacobian and ``δ_t = log D_t(prev) - log D_t(now)`` how much each log-loss fell since the
    task's previous update. The official trainers recompute the loss on the same batch after
    the step; here ``δ`` compares with the previous batch (no extra forward pass). With routing
    the softmax runs over the present tasks and only tasks present now and before step.

    Args:
        gamma: ``γ``, the logits' decay (0.01 in the official code).
        learning_rate: ``η``, the logits' Adam learning rate (0.025).
        min_losses: ``b``, a lower bound of each task's loss (0 when None); the paper's toy,
            whose losses are negative, sets one.

    Returns:
        A `Method` named ``"famo"``; state ``{"logits", "mu", "nu", "count", "previous",
        "has_previous"}``, each ``[T]``.

    Raises:
        SpecError: an option is out of range, or ``min_losses`` has not one entry per task.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.famo()
        >>> alpha, state = m.update([1.0, 4.0], None, m.init(2))
        >>> [round(float(a), 3) for a in alpha]    # z = (1/2, 1/2): alpha ∝ 1 / L
        [0.8, 0.2]
    """
    return _loss_based.famo(_OPS, gamma=gamma, learning_rate=learning_rate, min_losses=min_losses)


def gradnorm(*, alpha: float = 1.5, learning_rate: float = 0.025) -> Method:
    """GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018).

    Weights ``w`` (start 1) give ``alpha = w``. With ``n_t = ‖∇L_t‖ = √K_tt`` (the gradient
    w.r.t. the shared variables), ``G_t = w_t n_t``, ``Ḡ`` their mean, ``L̃_t = L_t / L_t(0)``
    and ``r_t = L̃_t / mean(L̃)``, ``w`` takes one gradient step of
    ``L_grad = Σ_t |G_t - Ḡ r_t^a|`` with the target held constant (the paper's rule):
    ``w_t ← w_t - η sign(G_t - Ḡ r_t^a) n_t``, clipped at 0, then rescaled so that ``Σ w``
    is unchanged (``T``, as the paper renormalises). ``L_t(0)`` is the task's first loss.
    With routing the means run over the present tasks, absent weights stay.

    Args:
        alpha: ``a``, the strength of the pull towards a common training rate (1.5).
        learning_rate: ``η``, the weights' step size (the paper uses the model's optimizer).

    Returns:
        A `Method` named ``"gradnorm"`` that needs the Gram matrix (its diagonal); state
        ``{"weights", "initial", "has_initial"}``, each ``[T]``.

    Raises:
        SpecError: an option is out of range.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.gradnorm(learning_rate=0.1)
        >>> state = m.init(2)
        >>> alpha, state = m.update([1.0, 1.0], [[4.0, 0.0], [0.0, 1.0]], state)
        >>> alpha.numpy().tolist(), [round(float(w), 2) for w in state["weights"]]
        ([1.0, 1.0], [0.84, 1.16])
    """
    return _gram_based.gradnorm(_OPS, alpha=alpha, learning_rate=learning_rate)


def pcgrad(*, seed: int = 0) -> Method:
    """Projecting Conflicting Gradients (Yu et al., "Gradient Surgery for Multi-Task
    Learning", NeurIPS 2020), as a linear combination read from the Gram matrix.

    For each task ``i``, for ``j`` in a random order of the tasks (drawn per ``i`` and step):
    if ``⟨g_i^PC, g_j⟩ < 0``, ``g_i^PC ← g_i^PC - ⟨g_i^PC, g_j⟩ / ‖g_j‖² g_j``; the direction
    is ``Σ_i g_i^PC``. Every ``g_i^PC`` is a combination ``Σ_j C_ij g_j`` whose inner products
    are ``(C K)_ij``, so the ``T²`` projections run on ``C`` alone and ``alpha = Σ_i C_i``.
    The order comes from a counter-based hash of ``(seed, step)`` (the same in JAX). With
    routing only present tasks project and are projected on.

    Args:
        seed: an int in ``[0, 2**32)``.

    Returns:
        A `Method` named ``"pcgrad"`` that needs the Gram matrix; state ``{"step"}``.

    Raises:
        SpecError: ``seed`` is not such an int.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.pcgrad()
        >>> gram = [[1.0, -0.5], [-0.5, 1.0]]   # g_1 = (1, 0), g_2 = (-1/2, √3/2)
        >>> alpha, _ = m.update([1.0, 1.0], gram, m.init(2))
        >>> [round(float(a), 3) for a in alpha]   # g_i + g_j / 2 each
        [1.5, 1.5]
    """
    return _gram_based.pcgrad(_OPS, seed=seed)


def mgda() -> Method:
    """Multiple-gradient descent (Désidéri 2012), as MGDA-UB (Sener and Koltun, "Multi-Task
    Learning as Multi-Objective Optimization", NeurIPS 2018): the min-norm point.

    ``alpha = argmin_{α ∈ Δ} ‖Σ_t α_t g_t‖² = argmin αᵀKα`` over the simplex (the weights sum
    to 1; the direction is the min-norm element of the gradients' convex hull). Solved in the
    graph, exactly for up to 8 tasks: on each face ``S`` of the simplex the minimiser is
    ``K_S⁻¹1 / 1ᵀK_S⁻¹1`` (one batched, equilibrated solve for all ``2^T - 1`` faces) and the
    best feasible face wins. Above 8 tasks: 256 steps of accelerated projected gradient
    (FISTA), then one exact solve on the support found. With routing the simplex spans the
    present tasks.

    Returns:
        A `Method` named ``"mgda"`` that needs the Gram matrix; no state.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.mgda()
        >>> alpha, _ = m.update([1.0, 1.0], [[4.0, 0.0], [0.0, 1.0]], m.init(2))
        >>> [round(float(a), 4) for a in alpha]   # ∝ 1 / ‖g_t‖² for orthogonal gradients
        [0.2, 0.8]
    """
    return _gram_based.mgda(_OPS)


def cagrad(*, c: float = 0.4) -> Method:
    """Conflict-Averse Gradient descent (Liu, Liu, Jin, Stone and Liu, NeurIPS 2021).

    With ``g_0`` the mean gradient and ``g_w = Σ_t w_t g_t``, solve the dual
    ``w* = argmin_{w ∈ Δ} g_wᵀg_0 + c ‖g_0‖ ‖g_w‖``; the direction is
    ``(g_0 + c ‖g_0‖ / ‖g_w*‖ · g_w*) / (1 + c²)`` (the official code's default rescaling),
    so ``alpha = (1/T + λ w*) / (1 + c²)`` with ``λ = c ‖g_0‖ / ‖g_w*‖``. ``c = 0`` is the
    plain mean. Solved in the graph, exactly for up to 8 tasks: on each face of the simplex
    the stationarity conditions have a closed form (two batched solves for all faces) and the
    best feasible face wins. Above 8 tasks: 256 majorise-minimise steps (a projected gradient
    step on ``λ‖g_w‖²/2 + r²/(2λ)``, the quadratic bound of ``r‖g_w‖`` tight at the current
    ``λ``). The official toy script adds ``1e-4`` inside both norms; this is the formula
    without it. With routing ``T`` and the simplex span the present tasks.

    Args:
        c: the radius of the ball around ``g_0``, relative to ``‖g_0‖`` (0.4 in the paper's
            multi-task experiments).

    Returns:
        A `Method` named ``"cagrad"`` that needs the Gram matrix; no state.

    Raises:
        SpecError: ``c`` is not a number >= 0.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.cagrad(c=0.0)
        >>> alpha, _ = m.update([1.0, 1.0], [[4.0, 0.0], [0.0, 1.0]], m.init(2))
        >>> [round(float(a), 4) for a in alpha]   # c = 0: the mean gradient
        [0.5, 0.5]
    """
    return _gram_based.cagrad(_OPS, c=c)


def nash_mtl() -> Method:
    """Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).

    The Nash bargaining solution: ``alpha > 0`` with ``Kα = 1/α``, i.e. ``α_t ⟨g_t, d⟩ = 1``
    for ``d = Σ_t α_t g_t`` (so ``‖d‖² = T``). It is the minimiser of the self-concordant
    ``αᵀKα/2 - Σ_t log α_t``; solved in the graph by 40 damped Newton steps (step
    ``1 / (1 + Newton decrement)``, which keeps ``α > 0``) on ``K`` scaled by its largest
    diagonal entry plus a ridge of 1e-6 (it keeps ``α`` finite when the gradients are
    linearly dependent), where the official code runs ≤ 20 convex programs (cvxpy) on the
    host. With routing the system is the present tasks'.

    Returns:
        A `Method` named ``"nash_mtl"`` that needs the Gram matrix; no state.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.nash_mtl()
        >>> alpha, _ = m.update([1.0, 1.0], [[4.0, 0.0], [0.0, 1.0]], m.init(2))
        >>> [round(float(a), 4) for a in alpha]   # orthogonal: α_t = 1 / ‖g_t‖
        [0.5, 1.0]
    """
    return _gram_based.nash_mtl(_OPS)
