"""``fs.jax.weighting``: the same methods in ``jax.numpy``, jittable, equal to TensorFlow's.

Each case of tests/test_weighting.py runs under `jax.jit` beside the TensorFlow method on the
same random losses, Gram matrices and routing, step after step: alpha and the state agree to
rtol 1e-5 (the random methods draw the very same numbers on both backends).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

import test_weighting as cases  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import funcsplit as fs  # noqa: E402


@functools.cache
def jitted(case: str):
    name, options, _, _ = cases.CASES[case]
    method = getattr(fs.jax.weighting, name)(**options)
    return method, jax.jit(method.update)


def test_the_jax_namespace_has_every_constructor():
    assert sorted(fs.jax.weighting.__all__) == sorted(
        n for n in fs.weighting.__all__ if n != "Method"
    )
    assert set(fs.jax.weighting.NAMES) == set(fs.weighting.__all__) - {"Method", "NAMES"}


@pytest.mark.parametrize("case", sorted(cases.CASES))
@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1), num_tasks=st.integers(1, 5))
def test_jax_equals_tensorflow(case, seed, num_tasks):
    num_tasks = cases.FIXED_TASKS.get(case, num_tasks)
    tf_method = cases.method_of(case)
    jax_method, update = jitted(case)
    losses, _, grams, present = cases.random_problem(np.random.default_rng(seed), num_tasks, 3)
    tf_state, jax_state = tf_method.init(num_tasks), jax_method.init(num_tasks)
    for step in range(losses.shape[0]):
        gram = grams[step] if tf_method.needs_gram else None
        tf_alpha, tf_state = tf_method.update(losses[step], gram, tf_state, present=present[step])
        jax_alpha, jax_state = update(losses[step], gram, jax_state, present=present[step])
        rtol = 1e-5 if cases.CASES[case][3] <= 1e-5 else 1e-4
        np.testing.assert_allclose(np.asarray(jax_alpha), np.asarray(tf_alpha), rtol, 1e-6)
        assert sorted(jax_state) == sorted(tf_state)
        for key in tf_state:
            np.testing.assert_allclose(
                np.asarray(jax_state[key]), np.asarray(tf_state[key]), 1e-5, 1e-6, err_msg=key
            )


def test_an_optax_loop_with_a_gram_method():
    """Nash-MTL on two quadratics: the Gram matrix from `jax.jacobian`, the step from optax."""
    jnp = jax.numpy
    targets = jnp.array([[1.0, 0.0], [0.0, 2.0]])

    def losses(params):
        return jnp.sum((params[None, :] - targets) ** 2, axis=1)

    method, tx = fs.jax.weighting.nash_mtl(), optax.adam(0.05)

    @jax.jit
    def step(params, state, opt_state):
        values, jacobian = losses(params), jax.jacobian(losses)(params)
        alpha, state = method.update(values, jacobian @ jacobian.T, state)
        updates, opt_state = tx.update(jacobian.T @ alpha, opt_state)
        return optax.apply_updates(params, updates), state, opt_state

    params = jnp.array([3.0, -3.0])
    state, opt_state = method.init(2), tx.init(params)
    for _ in range(300):
        params, state, opt_state = step(params, state, opt_state)
    # on the segment between the two minima: the Pareto set
    assert 0.0 <= float(params[0]) <= 1.0 and 0.0 <= float(params[1]) <= 2.0
    np.testing.assert_allclose(float(params[0]) / 1.0 + float(params[1]) / 2.0, 1.0, atol=0.05)
