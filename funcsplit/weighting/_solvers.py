"""The in-graph solvers of the Gram methods: exact for small T, fixed iteration counts above.

Every solver takes the Gram matrix ``K = G Gᵀ`` and a 0/1 ``mask`` of the present tasks and
solves the problem of the present tasks only: absent rows and columns are cut out by the mask
(an absent task's coordinate is 0), so the result is the sub-problem's. With nothing present
the result is all zeros. The solves are equilibrated (``K`` scaled to a unit diagonal), so
gradients of very different norms cost no accuracy.

For ``T <= EXACT_MAX_TASKS`` the simplex problems (MGDA, CAGrad) are solved exactly by
enumerating the faces of the simplex: on each face the optimum has a closed form (one batched
linear solve for all ``2^T - 1`` faces), and the best feasible face wins. Above, they run a
fixed number of first-order iterations. Nash-MTL runs damped Newton steps (quadratically
convergent; a fixed count).
"""

from __future__ import annotations

from funcsplit.weighting._method import Ops

# Iteration counts (fixed: no data-dependent loop in the graph).
SIMPLEX_ITERATIONS = 256  # accelerated projected gradient steps (MGDA, CAGrad)
NEWTON_ITERATIONS = 40  # damped Newton steps (Nash-MTL)
RIDGE = 1e-6  # ridge of the linear solves, relative to the unit diagonal
EXACT_MAX_TASKS = 8  # up to 255 faces


def _arange(ops: Ops, n: int):
    return ops.asarray(list(range(n)), "float32")


def normalised(ops: Ops, gram, mask):
    """``(K / s, s)`` with ``s`` the largest present diagonal entry; absent rows/columns 0."""
    n = mask.shape[0]
    outer = mask[:, None] * mask[None, :]
    gram = ops.asarray(gram) * outer
    scale = ops.max(ops.sum(gram * ops.eye(n), 1))
    safe = ops.where(scale > 0, scale, 1.0)
    return gram / safe, scale


def project_to_simplex(ops: Ops, v, mask):
    """The Euclidean projection of ``v`` onto the simplex of the present coordinates.

    Duchi et al. 2008 (sort, then threshold). Absent coordinates are 0; all absent gives 0.
    """
    n = mask.shape[0]
    u = ops.sort_desc(ops.where(mask > 0, v, -1e30))
    count = ops.sum(mask)
    first = ops.cast(_arange(ops, n) < count, "float32")
    css = ops.cumsum(u * first)
    j = _arange(ops, n) + 1.0
    support = first * ops.cast(u - (css - 1.0) / j > 0, "float32")
    rho = ops.sum(support)
    theta = (ops.sum(support * ops.one_hot(ops.cast(rho, "int32") - 1, n) * css) - 1.0) / (
        ops.maximum(rho, 1.0)
    )
    return ops.maximum(v - theta, 0.0) * mask


def _lipschitz(ops: Ops, gram):
    """An upper bound of ``λ_max(K)``: the largest absolute row sum (Gershgorin)."""
    return ops.maximum(ops.max(ops.sum(ops.abs(gram), 1)), 1e-12)


def _polish(ops: Ops, gram, mask, alpha, objective):
    """The exact minimiser of ``αᵀKα`` on the face that ``alpha``'s support spans, if better.

    On a face the min-norm point is ``K_S⁻¹ 1 / 1ᵀK_S⁻¹ 1``: one linear solve makes the
    approximate solution exact once the iterations have found the support.
    """
    n = mask.shape[0]
    support = mask * ops.cast(alpha > 1e-6, "float32")
    eye = ops.eye(n)
    system = gram * support[:, None] * support[None, :] + eye * (1.0 - support[:, None])
    x = ops.solve(system + RIDGE * eye, support) * support
    total = ops.sum(x)
    candidate = x / ops.where(total > 0, total, 1.0)
    valid = ops.cast(total > 0, "float32") * ops.cast(
        ops.sum(ops.cast(candidate < 0, "float32")) == 0, "float32"
    )
    better = valid * ops.cast(objective(candidate) <= objective(alpha), "float32")
    return ops.where(better > 0, candidate, alpha)


def equilibrated(ops: Ops, gram, mask):
    """``(K̃, n)``: ``K̃ = K / (n nᵀ)`` on the present tasks, ``n_t = √K_tt`` (1 where 0)."""
    outer = mask[:, None] * mask[None, :]
    gram = ops.asarray(gram) * outer
    n = ops.sqrt(ops.maximum(ops.sum(gram * ops.eye(mask.shape[0]), 1), 0.0))
    n = ops.where(n > 0, n, 1.0)
    return gram / (n[:, None] * n[None, :]), n


def _faces(ops: Ops, mask):
    """Every non-empty subset of the tasks ``[2^T - 1, T]``, and which lie in the present set."""
    n = mask.shape[0]
    faces = ops.asarray([[float(s >> i & 1) for i in range(n)] for s in range(1, 2**n)])
    inside = ops.cast(ops.sum(faces * (1.0 - mask)[None, :], 1) == 0, "float32")
    return faces, inside


def _face_solve(ops: Ops, kt, n, faces, y):
    """``K_SS⁻¹ y_S`` on every face ``S`` at once (0 off the face), through ``K̃``."""
    size = kt.shape[0]
    eye = ops.eye(size)
    systems = kt[None] * faces[:, :, None] * faces[:, None, :] + eye[None] * (
        1.0 - faces[:, :, None]
    )
    systems = systems + RIDGE * eye[None]
    return ops.solve(systems, (y / n)[None, :] * faces) / n[None, :] * faces


def _pick(ops: Ops, candidates, feasible, objective, fallback):
    """The feasible candidate (a row) of least objective; ``fallback`` if none is feasible."""
    safe = ops.where(feasible[:, None] > 0, candidates, 0.0)
    score = ops.where(feasible > 0, objective(safe), 3.0e38)
    best = ops.one_hot(ops.argmin(score), feasible.shape[0])
    chosen = ops.sum(best[:, None] * safe, 0)
    return ops.where(ops.sum(feasible) > 0, chosen, fallback)


def _rows_quadratic(k, x):
    return (x @ k) * x


def min_norm(ops: Ops, gram, mask):
    """``argmin_{α ∈ Δ} αᵀKα`` over the present tasks (the MGDA direction's weights).

    Exact for ``T <= EXACT_MAX_TASKS``: on face ``S`` the minimiser is ``K_S⁻¹1 / 1ᵀK_S⁻¹1``.
    Above, ``SIMPLEX_ITERATIONS`` steps of FISTA (projected, step ``1 / 2L``), then `_polish`.
    """
    if mask.shape[0] > EXACT_MAX_TASKS:
        return _min_norm_iterative(ops, gram, mask)
    kt, n = equilibrated(ops, gram, mask)
    k = kt * n[:, None] * n[None, :]
    k = k / ops.maximum(ops.max(n * n), 1e-30)
    faces, inside = _faces(ops, mask)
    x = _face_solve(ops, kt, n, faces, ops.ones(mask.shape))
    total = ops.sum(x, 1)
    alpha = x / ops.where(total > 0, total, 1.0)[:, None]
    lowest = -ops.max(-alpha, 1)
    feasible = inside * ops.cast(total > 0, "float32") * ops.cast(lowest >= -1e-5, "float32")
    alpha = ops.maximum(alpha, 0.0)
    alpha = alpha / ops.maximum(ops.sum(alpha, 1), 1e-30)[:, None]
    best = _pick(ops, alpha, feasible, lambda a: ops.sum(_rows_quadratic(k, a), 1), mask * 0.0)
    return best * mask


def _min_norm_iterative(ops: Ops, gram, mask):
    k, _ = normalised(ops, gram, mask)
    count = ops.sum(mask)
    start = mask / ops.maximum(count, 1.0)
    step = 0.5 / _lipschitz(ops, k)

    def body(_, carry):
        x, y, t = carry
        x_new = project_to_simplex(ops, y - step * 2.0 * ops.matvec(k, y), mask)
        t_new = 0.5 * (1.0 + ops.sqrt(1.0 + 4.0 * t * t))
        return x_new, x_new + ((t - 1.0) / t_new) * (x_new - x), t_new

    alpha, _, _ = ops.fori_loop(SIMPLEX_ITERATIONS, body, (start, start, ops.asarray(1.0)))
    return _polish(ops, k, mask, alpha, lambda a: ops.sum(a * ops.matvec(k, a)))


def conflict_averse(ops: Ops, gram, mask, c: float):
    """CAGrad's dual: ``argmin_{w ∈ Δ} wᵀK b + r √(wᵀKw)``, ``b = 1/T`` on the present tasks
    and ``r = c ‖g_0‖ = c √(bᵀKb)``. Returns ``(w, λ = r / ‖g_w‖)``.

    Exact for ``T <= EXACT_MAX_TASKS``: on face ``S``, stationarity ``(Kb)_S + λ K_S w = μ 1``
    with ``1ᵀw = 1`` and ``λ = r / √(wᵀK_S w)`` gives, with ``v_1 = K_S⁻¹1``, ``v_2 = K_S⁻¹(Kb)_S``
    and ``a_1 = 1ᵀv_1``, ``a_2 = 1ᵀv_2``, ``a_3 = (Kb)_Sᵀv_2``: ``λ = √(a_2² - a_1 a_3 + a_1 r²)``,
    ``μ = (a_2 + λ) / a_1`` and ``w = (μ v_1 - v_2) / λ``. Above, majorise-minimise iterations.
    """
    if mask.shape[0] > EXACT_MAX_TASKS:
        return _conflict_averse_iterative(ops, gram, mask, c)
    kt, n = equilibrated(ops, gram, mask)
    scale = ops.maximum(ops.max(n * n), 1e-30)
    k = kt * n[:, None] * n[None, :] / scale
    n = n / ops.sqrt(scale)
    count = ops.sum(mask)
    b = mask / ops.maximum(count, 1.0)
    kb = ops.matvec(k, b)
    radius = c * ops.sqrt(ops.maximum(ops.sum(b * kb), 0.0))
    faces, inside = _faces(ops, mask)
    v1 = _face_solve(ops, kt, n, faces, ops.ones(mask.shape))
    v2 = _face_solve(ops, kt, n, faces, kb)
    a1, a2 = ops.sum(v1, 1), ops.sum(v2, 1)
    a3 = ops.sum(v2 * kb[None, :], 1)
    disc = a2 * a2 - a1 * a3 + a1 * radius * radius
    lam = ops.sqrt(ops.maximum(disc, 0.0))
    ok = inside * ops.cast(a1 > 0, "float32") * ops.cast(lam > 1e-12, "float32")
    safe_lam = ops.where(ok > 0, lam, 1.0)
    mu = (a2 + lam) / ops.where(ok > 0, a1, 1.0)
    w = (mu[:, None] * v1 - v2) / safe_lam[:, None]
    feasible = ok * ops.cast(-ops.max(-w, 1) >= -1e-5, "float32")
    w = ops.maximum(w, 0.0)
    w = w / ops.maximum(ops.sum(w, 1), 1e-30)[:, None]

    def objective(rows):
        quadratic = ops.sum(_rows_quadratic(k, rows), 1)
        return ops.sum(rows * kb[None, :], 1) + radius * ops.sqrt(ops.maximum(quadratic, 0.0))

    w = _pick(ops, w, feasible, objective, b) * mask
    norm = ops.sqrt(ops.maximum(ops.sum(w * ops.matvec(k, w)), 0.0))
    return w, radius / ops.maximum(norm, 1e-12), scale


def _conflict_averse_iterative(ops: Ops, gram, mask, c: float):
    k, scale = normalised(ops, gram, mask)
    count = ops.sum(mask)
    b = mask / ops.maximum(count, 1.0)
    kb = ops.matvec(k, b)
    radius = c * ops.sqrt(ops.maximum(ops.sum(b * kb), 0.0))
    lipschitz = _lipschitz(ops, k)

    def weight(w):
        return radius / ops.maximum(
            ops.sqrt(ops.maximum(ops.sum(w * ops.matvec(k, w)), 0.0)), 1e-12
        )

    def body(_, w):
        lam = weight(w)
        grad = kb + lam * ops.matvec(k, w)
        return project_to_simplex(ops, w - grad / (ops.maximum(lam, 1e-12) * lipschitz), mask)

    w = ops.fori_loop(SIMPLEX_ITERATIONS, body, b)
    return w, weight(w), scale


def nash_bargaining(ops: Ops, gram, mask):
    """The Nash bargaining weights: the ``α > 0`` with ``Kα = 1/α`` on the present tasks.

    With ``K = N K̃ N`` (``N = diag(‖g_t‖)``, ``K̃`` of unit diagonal) the equation is
    ``K̃β = 1/β`` for ``β = Nα``: ``β`` minimises the self-concordant ``βᵀK̃β/2 - Σ log β_t``;
    ``NEWTON_ITERATIONS`` damped Newton steps (step ``1 / (1 + λ)``, ``λ`` the Newton
    decrement, which stays inside ``β > 0``) from ``β = 1/√T``, on ``K̃`` plus a ``RIDGE``.
    A present task with a zero gradient gets 0 (no ``α`` solves ``0 = 1/α``).
    """
    size = mask.shape[0]
    norms = ops.sqrt(ops.maximum(ops.sum(ops.asarray(gram) * ops.eye(size), 1), 0.0))
    mask = mask * ops.cast(norms > 0, "float32")
    kt, n = equilibrated(ops, gram, mask)
    eye = ops.eye(size)
    # absent coordinates decouple: their rows are the identity, their solution 1, masked off
    system = kt + eye * (1.0 - mask[:, None]) + RIDGE * eye
    start = ops.ones((size,)) / ops.sqrt(ops.maximum(ops.sum(mask), 1.0))

    def body(_, beta):
        grad = ops.matvec(system, beta) - 1.0 / beta
        hessian = system + eye * (1.0 / (beta * beta))[:, None]
        direction = ops.solve(hessian, grad)
        decrement = ops.sqrt(ops.maximum(ops.sum(direction * grad), 0.0))
        return beta - direction / (1.0 + decrement)

    beta = ops.fori_loop(NEWTON_ITERATIONS, body, start)
    return beta / n * mask
