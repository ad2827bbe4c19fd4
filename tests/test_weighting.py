"""The weighting methods (`funcsplit.weighting`) against NumPy references of their papers.

Every method runs eagerly, under `tf.function` and under XLA (``jit_compile=True``) and equals
its reference (tests/weighting_reference.py) step after step on random losses, Gram matrices
and routing; then the routing contract: absent tasks get 0 and keep their state, the result
equals the method on the present sub-problem, and nothing present gives zeros, never NaN.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf
import weighting_reference as ref
from hypothesis import given
from hypothesis import strategies as st

import funcsplit as fs

# name -> (options, reference); options are passed to both constructors.
CASES = {
    "static": ({}, ref.static()),
    "static-weights": ({"weights": [2.0, 0.5, 1.0]}, ref.static([2.0, 0.5, 1.0])),
    "uncertainty": ({"learning_rate": 0.3}, ref.uncertainty(0.3)),
}
FIXED_TASKS = {"static-weights": 3}
VARIANTS = ("eager", "function", "xla")


def method_of(case: str) -> fs.weighting.Method:
    options, _ = CASES[case]
    return getattr(fs.weighting, case.split("-")[0])(**options)


@functools.cache
def update_fn(case: str, variant: str):
    """The method's update, eager or traced once per case (shapes repeat across examples)."""
    update = method_of(case).update
    if variant == "eager":
        return update
    return tf.function(update, jit_compile=variant == "xla")


def random_problem(rng: np.random.Generator, num_tasks: int, steps: int):
    """Positive losses, PSD Gram matrices of random gradients, random routing."""
    losses = rng.uniform(0.05, 3.0, (steps, num_tasks)).astype(np.float32)
    grads = rng.normal(size=(steps, num_tasks, 6)).astype(np.float32)
    grams = np.einsum("sik,sjk->sij", grads, grads).astype(np.float32)
    present = rng.uniform(size=(steps, num_tasks)) < 0.75
    return losses, grams, present


def run(update, method, losses, grams, present, *, to_numpy):
    state = method.init(losses.shape[1])
    alphas, states = [], []
    for step in range(losses.shape[0]):
        gram = grams[step] if method.needs_gram else None
        alpha, state = update(losses[step], gram, state, present=present[step])
        alphas.append(np.asarray(alpha))
        states.append({k: np.asarray(v) for k, v in state.items()})
        if not to_numpy:
            continue
        state = {k: np.asarray(v) for k, v in state.items()}
    return np.stack(alphas), states


def numpy_state(method, num_tasks):
    return {k: np.asarray(v) for k, v in method.init(num_tasks).items()}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", sorted(CASES))
@given(seed=st.integers(0, 2**31 - 1), num_tasks=st.integers(1, 5))
def test_each_method_equals_its_reference(case, variant, seed, num_tasks):
    num_tasks = FIXED_TASKS.get(case, num_tasks)
    method, reference = method_of(case), CASES[case][1]
    rng = np.random.default_rng(seed)
    losses, grams, present = random_problem(rng, num_tasks, steps=4)
    alphas, states = run(update_fn(case, variant), method, losses, grams, present, to_numpy=False)
    state = numpy_state(method, num_tasks)
    for step in range(losses.shape[0]):
        gram = grams[step] if method.needs_gram else None
        alpha, state = reference(losses[step], gram, state, present[step])
        np.testing.assert_allclose(alphas[step], alpha, rtol=1e-5, atol=1e-6)
        for key, value in state.items():
            np.testing.assert_allclose(states[step][key], value, rtol=1e-5, atol=1e-6)


def per_task(value, num_tasks):
    return np.ndim(value) >= 1 and np.shape(value)[0] == num_tasks


@pytest.mark.parametrize("case", sorted(CASES))
@given(seed=st.integers(0, 2**31 - 1), num_tasks=st.integers(2, 5))
def test_absent_tasks_get_zero_keep_their_state_and_match_the_sub_problem(case, seed, num_tasks):
    num_tasks = FIXED_TASKS.get(case, num_tasks)
    method = method_of(case)
    rng = np.random.default_rng(seed)
    losses, grams, _ = random_problem(rng, num_tasks, steps=3)
    state = method.init(num_tasks)
    for step in range(2):  # a state that is not the initial one
        _, state = method.update(losses[step], grams[step], state)
    present = rng.uniform(size=num_tasks) < 0.6
    present[rng.integers(num_tasks)] = True
    gram = grams[2] if method.needs_gram else None
    alpha, new_state = method.update(losses[2], gram, state, present=present)
    alpha = np.asarray(alpha)
    assert np.all(alpha[~present] == 0)
    for key, value in state.items():
        if per_task(value, num_tasks):
            np.testing.assert_array_equal(np.asarray(new_state[key])[~present], value[~present])
    if case in FIXED_TASKS:
        return
    keep = np.flatnonzero(present)
    sub_state = {k: tf.gather(v, keep) if per_task(v, num_tasks) else v for k, v in state.items()}
    sub_gram = grams[2][np.ix_(keep, keep)] if method.needs_gram else None
    sub_alpha, sub_new = method.update(losses[2][keep], sub_gram, sub_state)
    np.testing.assert_allclose(alpha[keep], sub_alpha, rtol=1e-5, atol=1e-6)
    for key, value in sub_new.items():
        full = np.asarray(new_state[key])
        np.testing.assert_allclose(full[keep] if per_task(full, num_tasks) else full, value, 1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_nothing_present_gives_zeros_and_no_nan(case, variant):
    num_tasks = FIXED_TASKS.get(case, 3)
    method = method_of(case)
    rng = np.random.default_rng(0)
    losses, grams, _ = random_problem(rng, num_tasks, steps=1)
    state = method.init(num_tasks)
    gram = grams[0] if method.needs_gram else None
    alpha, new_state = update_fn(case, variant)(losses[0], gram, state, present=[False] * num_tasks)
    np.testing.assert_array_equal(np.asarray(alpha), np.zeros(num_tasks))
    for key, value in new_state.items():
        assert np.all(np.isfinite(np.asarray(value))), key
        np.testing.assert_array_equal(np.asarray(value), np.asarray(state[key]))


def test_uncertainty_converges_to_inverse_losses():
    method = fs.weighting.uncertainty(learning_rate=0.5)
    state = method.init(3)
    losses = np.array([0.5, 2.0, 8.0], np.float32)
    step = tf.function(method.update, jit_compile=True)
    for _ in range(300):
        alpha, state = step(losses, None, state)
    alpha = np.asarray(alpha)
    np.testing.assert_allclose(alpha, 1.0 / (2.0 * losses), rtol=1e-4)
    np.testing.assert_allclose(alpha / alpha.sum(), (1 / losses) / (1 / losses).sum(), rtol=1e-4)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: fs.weighting.static(weights="ab"), "weights expected a non-empty sequence"),
        (lambda: fs.weighting.static(weights=[1.0, float("nan")]), "finite numbers"),
        (lambda: fs.weighting.static(weights=[1.0, 2.0]).init(3), "has 2 entries"),
        (lambda: fs.weighting.uncertainty(learning_rate=0).init(2), "learning_rate expected"),
        (lambda: fs.weighting.uncertainty().init(0), "num_tasks, a positive int"),
    ],
    ids=["weights-not-numbers", "weights-nan", "weights-length", "learning-rate", "num-tasks"],
)
def test_bad_options_are_spec_errors(make, message):
    with pytest.raises(fs.SpecError, match=message):
        make()
