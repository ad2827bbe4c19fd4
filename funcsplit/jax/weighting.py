"""The weighting methods of `funcsplit.weighting` over ``jax.numpy``: same formulas, jittable.

Each constructor returns a `funcsplit.weighting.Method` whose ``init`` and ``update`` take and
return JAX arrays (the state is a dict: a pytree), pure and jittable, equal to the TensorFlow
methods on the same inputs (the formulas are written once, against an array-ops namespace;
random methods draw from the same counter-based hash). The documentation of each method
(paper, formula, options) is on its TensorFlow twin.

Examples:
    >>> import jax
    >>> import funcsplit as fs
    >>> m = fs.jax.weighting.mgda()
    >>> update = jax.jit(m.update)
    >>> alpha, _ = update(jax.numpy.ones(2), jax.numpy.array([[4.0, 0.0], [0.0, 1.0]]), {})
    >>> [round(float(a), 4) for a in alpha]
    [0.2, 0.8]

    An optax loop: the weights scale the per-task losses (held constant, as ``alpha`` is).

    >>> import optax
    >>> params = jax.numpy.array([1.0, -2.0])
    >>> def losses(p):
    ...     return jax.numpy.stack([(p[0] - 3.0) ** 2, (p[1] + 1.0) ** 2])
    >>> method, tx = fs.jax.weighting.famo(), optax.sgd(0.1)
    >>> state, opt_state = method.init(2), tx.init(params)
    >>> @jax.jit
    ... def step(params, state, opt_state):
    ...     alpha, state = method.update(losses(params), None, state)
    ...     grads = jax.grad(lambda p: jax.numpy.sum(alpha * losses(p)))(params)
    ...     updates, opt_state = tx.update(grads, opt_state)
    ...     return optax.apply_updates(params, updates), state, opt_state
    >>> for _ in range(100):
    ...     params, state, opt_state = step(params, state, opt_state)
    >>> bool(jax.numpy.all(losses(params) < losses(jax.numpy.array([1.0, -2.0]))))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from funcsplit.weighting import _gram_based
from funcsplit.weighting import _loss_based
from funcsplit.weighting._method import NAMES
from funcsplit.weighting._method import Method
from funcsplit.weighting._method import Ops

__all__ = [
    "NAMES",
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


def _uint32(x):
    if isinstance(x, int):
        return jnp.asarray(x, dtype=jnp.uint32)
    return jnp.asarray(x).astype(jnp.uint32)


def _fori_loop(n, body, init):
    return jax.lax.fori_loop(0, n, body, init)


OPS = Ops(
    asarray=lambda x, dtype="float32": jnp.asarray(x, dtype=dtype),
    zeros=lambda shape, dtype="float32": jnp.zeros(shape, dtype),
    ones=lambda shape, dtype="float32": jnp.ones(shape, dtype),
    eye=lambda n: jnp.eye(n, dtype=jnp.float32),
    where=jnp.where,
    exp=jnp.exp,
    cos=jnp.cos,
    log=jnp.log,
    sqrt=jnp.sqrt,
    abs=jnp.abs,
    sign=jnp.sign,
    maximum=jnp.maximum,
    minimum=jnp.minimum,
    sum=lambda x, axis=None: jnp.sum(x, axis=axis),
    max=lambda x, axis=None: jnp.max(x, axis=axis),
    cumsum=lambda x: jnp.cumsum(x, axis=-1),
    sort_desc=lambda x: jnp.flip(jnp.sort(x, axis=-1), axis=-1),
    argsort=lambda x: jnp.argsort(x, axis=-1, stable=True),
    argmin=lambda x: jnp.argmin(x).astype(jnp.int32),
    one_hot=lambda index, n: jax.nn.one_hot(index, n, dtype=jnp.float32),
    reshape=jnp.reshape,
    matvec=lambda a, x: jnp.einsum("...ij,...j->...i", a, x),
    solve=lambda a, b: jnp.linalg.solve(a, b[..., None])[..., 0],
    cast=lambda x, dtype: jnp.asarray(x).astype(dtype),
    stop_gradient=jax.lax.stop_gradient,
    fori_loop=_fori_loop,
    uint32=_uint32,
    bitwise_xor=jnp.bitwise_xor,
    right_shift=lambda x, n: jnp.right_shift(x, jnp.uint32(n)),
)


def static(*, weights: Sequence[float] | None = None) -> Method:
    """`funcsplit.weighting.static` in JAX.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.static(weights=[2.0, 1.0])
        >>> m.update([1.0, 1.0], None, m.init(2), present=[False, True])[0].tolist()
        [0.0, 1.0]
    """
    return _loss_based.static(OPS, weights=weights)


def uncertainty(*, learning_rate: float = 0.05) -> Method:
    """`funcsplit.weighting.uncertainty` in JAX.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.uncertainty()
        >>> m.update([1.0, 4.0], None, m.init(2))[0].tolist()
        [0.5, 0.5]
    """
    return _loss_based.uncertainty(OPS, learning_rate=learning_rate)


def dwa(*, temperature: float = 2.0) -> Method:
    """`funcsplit.weighting.dwa` in JAX.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.dwa()
        >>> m.update([1.0, 4.0], None, m.init(2))[0].tolist()
        [1.0, 1.0]
    """
    return _loss_based.dwa(OPS, temperature=temperature)


def rlw(*, seed: int = 0) -> Method:
    """`funcsplit.weighting.rlw` in JAX (the same draws as TensorFlow's).

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.rlw()
        >>> round(float(m.update([1.0, 4.0], None, m.init(2))[0].sum()), 5)
        1.0
    """
    return _loss_based.rlw(OPS, seed=seed)


def famo(
    *,
    gamma: float = 0.01,
    learning_rate: float = 0.025,
    min_losses: Sequence[float] | None = None,
) -> Method:
    """`funcsplit.weighting.famo` in JAX.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.famo()
        >>> [round(float(a), 3) for a in m.update([1.0, 4.0], None, m.init(2))[0]]
        [0.8, 0.2]
    """
    return _loss_based.famo(OPS, gamma=gamma, learning_rate=learning_rate, min_losses=min_losses)


def gradnorm(*, alpha: float = 1.5, learning_rate: float = 0.025) -> Method:
    """`funcsplit.weighting.gradnorm` in JAX.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.gradnorm()
        >>> m.update([1.0, 1.0], [[4.0, 0.0], [0.0, 1.0]], m.init(2))[0].tolist()
        [1.0, 1.0]
    """
    return _gram_based.gradnorm(OPS, alpha=alpha, learning_rate=learning_rate)


def pcgrad(*, seed: int = 0) -> Method:
    """`funcsplit.weighting.pcgrad` in JAX (the same orders as TensorFlow's).

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.pcgrad()
        >>> m.update([1.0, 1.0], [[1.0, -0.5], [-0.5, 1.0]], m.init(2))[0].tolist()
        [1.5, 1.5]
    """
    return _gram_based.pcgrad(OPS, seed=seed)


def mgda() -> Method:
    """`funcsplit.weighting.mgda` in JAX.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.mgda()
        >>> [round(float(a), 4) for a in m.update(None, [[4.0, 0.0], [0.0, 1.0]], {})[0]]
        [0.2, 0.8]
    """
    return _gram_based.mgda(OPS)


def cagrad(*, c: float = 0.4) -> Method:
    """`funcsplit.weighting.cagrad` in JAX.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.cagrad(c=0.0)
        >>> [round(float(a), 4) for a in m.update(None, [[4.0, 0.0], [0.0, 1.0]], {})[0]]
        [0.5, 0.5]
    """
    return _gram_based.cagrad(OPS, c=c)


def nash_mtl() -> Method:
    """`funcsplit.weighting.nash_mtl` in JAX.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.jax.weighting.nash_mtl()
        >>> [round(float(a), 4) for a in m.update(None, [[4.0, 0.0], [0.0, 1.0]], {})[0]]
        [0.5, 1.0]
    """
    return _gram_based.nash_mtl(OPS)
