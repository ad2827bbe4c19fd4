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
