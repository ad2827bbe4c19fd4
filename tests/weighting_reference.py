"""NumPy references of the weighting methods, written from the papers' formulas.

Each reference is a plain loop over one task list, with none of the library's helpers: a
function ``ref(losses, gram, state, present) -> (alpha, state)`` on NumPy arrays, with the same
state dict as the method (so a test can run both side by side). Routing follows the contract:
the reference solves the present sub-problem and writes the result back by index.
"""

from __future__ import annotations

import numpy as np


def _present(present, num_tasks):
    return np.ones(num_tasks, bool) if present is None else np.asarray(present, bool)


def static(weights=None):
    def ref(losses, gram, state, present=None):
        t = len(losses)
        w = np.ones(t) if weights is None else np.asarray(weights, float)
        return np.where(_present(present, t), w, 0.0), state

    return ref


def uncertainty(learning_rate=0.05):
    # Kendall et al. 2018, eq. 7 with s = log sigma^2: sum_t exp(-s_t) L_t / 2 + s_t / 2
    def ref(losses, gram, state, present=None):
        s = np.array(state["log_variance"], float)
        p = _present(present, len(losses))
        alpha = np.zeros(len(losses))
        for t in np.flatnonzero(p):
            alpha[t] = 1.0 / (2.0 * np.exp(s[t]))
            s[t] = s[t] - learning_rate * (0.5 - 0.5 * np.exp(-s[t]) * losses[t])
        return alpha, {"log_variance": s}

    return ref


def dwa(temperature=2.0):
    # Liu et al. 2019, eq. 1: w_t = T exp(r_t / tau) / sum_i exp(r_i / tau), r = L(k-1) / L(k-2)
    def ref(losses, grads, state, present=None):
        prev, before, seen = (np.array(state[k], float) for k in ("previous", "before", "seen"))
        p = _present(present, len(losses))
        idx = np.flatnonzero(p)
        r = np.array([prev[t] / before[t] if seen[t] >= 2 else 1.0 for t in idx])
        alpha = np.zeros(len(losses))
        if len(idx):
            e = np.exp(r / temperature)
            alpha[idx] = len(idx) * e / e.sum()
        for t in idx:
            before[t], prev[t], seen[t] = prev[t], losses[t], min(seen[t] + 1, 2)
        return alpha, {"previous": prev, "before": before, "seen": seen}

    return ref


def lowbias32_uniform(seed, counter, num):
    """The counter-based uniform draws, written with Python ints (mod 2**32)."""
    out = []
    for i in range(num):
        x = (i * 0x9E3779B9 + counter * 0x85EBCA6B + seed) % 2**32
        x = ((x ^ (x >> 16)) * 0x7FEB352D) % 2**32
        x = ((x ^ (x >> 15)) * 0x846CA68B) % 2**32
        x = x ^ (x >> 16)
        out.append((x >> 8) / 2**24)
    return np.array(out)


def rlw(seed=0):
    # Lin et al. 2022: lambda = softmax(eps), eps ~ N(0, I) (Box-Muller over the uniform draws)
    def ref(losses, grads, state, present=None):
        t = len(losses)
        step = int(state["step"])
        u = lowbias32_uniform(seed, step, 2 * t)
        eps = np.sqrt(-2 * np.log(1 - u[:t])) * np.cos(2 * np.pi * u[t:])
        p = _present(present, t)
        alpha = np.zeros(t)
        if p.any():
            e = np.exp(eps[p] - eps[p].max())
            alpha[p] = e / e.sum()
        return alpha, {"step": step + 1}

    return ref


def famo(gamma=0.01, learning_rate=0.025, min_losses=None):
    # Liu et al. 2023 (official code): Adam(lr, weight_decay=gamma) on the logits with the
    # gradient J_softmax^T delta, then alpha_t = (z_t / D_t) / sum_i z_i / D_i
    b1, b2, eps = 0.9, 0.999, 1e-8

    def ref(losses, grads, state, present=None):
        s = {k: np.array(v, float) for k, v in state.items()}
        t = len(losses)
        low = np.zeros(t) if min_losses is None else np.asarray(min_losses, float)
        p = np.flatnonzero(_present(present, t))
        d = np.maximum(np.asarray(losses, float) - low, 0) + 1e-8
        w = s["logits"][p]
        z = np.exp(w - w.max()) / np.exp(w - w.max()).sum() if len(p) else w
        stepping = [i for i, task in enumerate(p) if s["has_previous"][task]]
        delta = np.zeros(len(p))
        for i in stepping:
            delta[i] = s["previous"][p[i]] - np.log(d[p[i]])
        jacobian = np.diag(z) - np.outer(z, z)
        grad = jacobian.T @ delta + gamma * w
        for i in stepping:
            task = p[i]
            s["count"][task] += 1
            s["mu"][task] = b1 * s["mu"][task] + (1 - b1) * grad[i]
            s["nu"][task] = b2 * s["nu"][task] + (1 - b2) * grad[i] ** 2
            m_hat = s["mu"][task] / (1 - b1 ** s["count"][task])
            v_hat = s["nu"][task] / (1 - b2 ** s["count"][task])
            s["logits"][task] -= learning_rate * m_hat / (np.sqrt(v_hat) + eps)
        alpha = np.zeros(t)
        if len(p):
            w = s["logits"][p]
            z = np.exp(w - w.max()) / np.exp(w - w.max()).sum()
            alpha[p] = (z / d[p]) / (z / d[p]).sum()
        for task in p:
            s["previous"][task], s["has_previous"][task] = np.log(d[task]), 1.0
        return alpha, s

    return ref


def gradnorm(alpha=1.5, learning_rate=0.025):
    # Chen et al. 2018: L_grad = sum_t |w_t |g_t| - mean(w |g|) r_t^alpha|, target constant
    def ref(losses, grads, state, present=None):
        s = {k: np.array(v, float) for k, v in state.items()}
        p = np.flatnonzero(_present(present, len(losses)))
        for t in p:
            if not s["has_initial"][t]:
                s["initial"][t], s["has_initial"][t] = losses[t], 1.0
        out = np.zeros(len(losses))
        if not len(p):
            return out, s
        w = s["weights"][p].copy()
        out[p] = w
        norms = np.linalg.norm(np.asarray(grads, float)[p], axis=1)
        g = w * norms
        rate = np.asarray(losses, float)[p] / s["initial"][p]
        r = rate / rate.mean()
        target = g.mean() * r**alpha
        new = np.maximum(w - learning_rate * np.sign(g - target) * norms, 0)
        if new.sum() > 0:
            new = new * w.sum() / new.sum()
        s["weights"][p] = new
        return out, s

    return ref


def pcgrad(seed=0):
    # Yu et al. 2020, Algorithm 1, on the gradient vectors themselves; task i visits the tasks
    # in the order of its row of the counter-based keys (present tasks only)
    def ref(losses, grads, state, present=None):
        g = np.asarray(grads, float)
        t = len(g)
        step = int(state["step"])
        keys = lowbias32_uniform(seed, step, t * t).reshape(t, t)
        p = _present(present, t)
        total = np.zeros(g.shape[1])
        for i in np.flatnonzero(p):
            g_pc = g[i].copy()
            for j in np.argsort(keys[i], kind="stable"):
                if not p[j]:
                    continue
                dot = g_pc @ g[j]
                if dot < 0 and g[j] @ g[j] > 0:
                    g_pc = g_pc - dot / (g[j] @ g[j]) * g[j]
            total += g_pc
        return total, {"step": step + 1}

    return ref


def _subsets(n):
    for mask in range(1, 2**n):
        yield [i for i in range(n) if mask >> i & 1]


def min_norm_exact(k):
    """argmin over the simplex of a^T K a, by enumerating the supports (exact, small T).

    On a support S the minimiser solves the KKT system [[2 K_S, 1], [1^T, 0]] (least squares,
    so a singular K_S works too); the best feasible support wins.
    """
    best, best_value = None, np.inf
    for s in _subsets(len(k)):
        m = len(s)
        kkt = np.zeros((m + 1, m + 1))
        kkt[:m, :m] = 2 * k[np.ix_(s, s)]
        kkt[:m, m] = kkt[m, :m] = 1
        x = np.linalg.lstsq(kkt, np.r_[np.zeros(m), 1.0], rcond=None)[0][:m]
        if np.any(x < -1e-9):
            continue
        a = np.zeros(len(k))
        a[s] = x
        value = a @ k @ a
        if value < best_value - 1e-15:
            best, best_value = a, value
    return best


def mgda():
    # Sener and Koltun 2018: the min-norm point of the convex hull of the gradients
    def ref(losses, grads, state, present=None):
        g = np.asarray(grads, float)
        p = np.flatnonzero(_present(present, len(g)))
        alpha = np.zeros(len(g))
        if len(p):
            alpha[p] = min_norm_exact(g[p] @ g[p].T)
        return g.T @ alpha, state

    return ref


def cagrad(c=0.4):
    # Liu et al. 2021, official code: SLSQP on the dual, then (g0 + lambda g_w) / (1 + c^2)
    from scipy.optimize import minimize

    def ref(losses, grads, state, present=None):
        g = np.asarray(grads, float)
        p = np.flatnonzero(_present(present, len(g)))
        if not len(p):
            return np.zeros(g.shape[1]), state
        gp = g[p]
        n = len(p)
        k = gp @ gp.T
        b = np.ones(n) / n
        r = c * np.sqrt(b @ k @ b)

        def objective(w):
            return w @ k @ b + r * np.sqrt(w @ k @ w + 1e-16)

        best = minimize(
            objective,
            b,
            bounds=[(0, 1)] * n,
            constraints={"type": "eq", "fun": lambda w: 1 - w.sum()},
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 1000},
        ).x
        gw = gp.T @ best
        g0 = gp.mean(0)
        lam = r / max(np.linalg.norm(gw), 1e-12)
        return (g0 + lam * gw) / (1 + c * c), state

    return ref


def nash_mtl():
    # Navon et al. 2022: alpha > 0 with G G^T alpha = 1 / alpha (scipy's root finder)
    from scipy.optimize import fsolve

    def ref(losses, grads, state, present=None):
        g = np.asarray(grads, float)
        p = np.flatnonzero(_present(present, len(g)))
        if not len(p):
            return np.zeros(g.shape[1]), state
        k = g[p] @ g[p].T
        a = fsolve(lambda a: k @ a - 1 / a, np.ones(len(p)) / np.sqrt(np.trace(k)), xtol=1e-13)
        alpha = np.zeros(len(g))
        alpha[p] = a
        return g.T @ alpha, state

    return ref
