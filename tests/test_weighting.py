"""The weighting methods (`funcsplit.weighting`) against NumPy references of their papers.

Every method runs eagerly, under `tf.function` and under XLA (``jit_compile=True``) and equals
its reference (tests/weighting_reference.py) step after step on random losses, gradients and
routing. The Gram methods get ``K = G Gᵀ`` and are held against the papers' algorithms on the
gradient vectors ``G`` themselves: their direction ``Gᵀ alpha`` equals the reference's. Then
the routing contract: absent tasks get 0 and keep their state, the result equals the method
on the present sub-problem, and nothing present gives zeros, never NaN.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf
import weighting_reference as ref
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import funcsplit as fs

# case -> (constructor, options, reference, tolerance); Gram methods compare directions.
CASES = {
    "static": ("static", {}, ref.static(), 1e-5),
    "static-weights": ("static", {"weights": [2.0, 0.5, 1.0]}, ref.static([2.0, 0.5, 1.0]), 1e-5),
    "uncertainty": ("uncertainty", {"learning_rate": 0.3}, ref.uncertainty(0.3), 1e-5),
    "dwa": ("dwa", {}, ref.dwa(), 1e-5),
    "dwa-cold": ("dwa", {"temperature": 0.5}, ref.dwa(0.5), 1e-5),
    "rlw": ("rlw", {"seed": 7}, ref.rlw(7), 1e-5),
    "famo": ("famo", {}, ref.famo(), 1e-5),
    "famo-fast": (
        "famo",
        {"gamma": 0.0, "learning_rate": 0.5, "min_losses": [0.01] * 3},
        ref.famo(0.0, 0.5, [0.01] * 3),
        1e-5,
    ),
    "gradnorm": ("gradnorm", {"learning_rate": 0.2}, ref.gradnorm(1.5, 0.2), 1e-5),
    "pcgrad": ("pcgrad", {"seed": 3}, ref.pcgrad(3), 1e-5),
    "mgda": ("mgda", {}, ref.mgda(), 1e-3),
    "cagrad": ("cagrad", {}, ref.cagrad(), 1e-4),
    "cagrad-wide": ("cagrad", {"c": 0.9}, ref.cagrad(0.9), 1e-4),
    "nash_mtl": ("nash_mtl", {}, ref.nash_mtl(), 1e-3),
}
DIRECTIONS = {"pcgrad", "mgda", "cagrad", "nash_mtl"}  # references return Σ alpha_t g_t
FIXED_TASKS = {"static-weights": 3, "famo-fast": 3}
RANDOM = {"rlw", "pcgrad"}  # draws keyed by task index: no sub-problem identity
VARIANTS = ("eager", "function", "xla")
GRAD_DIM = 6


def method_of(case: str) -> fs.weighting.Method:
    name, options, _, _ = CASES[case]
    return getattr(fs.weighting, name)(**options)


@functools.cache
def update_fn(case: str, variant: str):
    """The method's update, eager or traced (one trace per number of tasks)."""
    update = method_of(case).update
    if variant == "eager":
        return update
    return tf.function(update, jit_compile=variant == "xla")


def random_problem(rng: np.random.Generator, num_tasks: int, steps: int):
    """Positive losses, gradients of mixed norms (and their Gram matrices), random routing."""
    losses = rng.uniform(0.05, 3.0, (steps, num_tasks)).astype(np.float32)
    grads = rng.normal(size=(steps, num_tasks, GRAD_DIM))
    grads *= rng.uniform(0.3, 3.0, (steps, num_tasks, 1))
    grads = grads.astype(np.float32)
    grams = np.einsum("sik,sjk->sij", grads, grads).astype(np.float32)
    present = rng.uniform(size=(steps, num_tasks)) < 0.75
    return losses, grads, grams, present


def as_numpy(state):
    return {k: np.asarray(v) for k, v in state.items()}


def assert_step_equal(case, alpha, state, grads, expected, expected_state):
    tolerance = CASES[case][3]
    if case.split("-")[0] in DIRECTIONS:
        direction = grads.astype(np.float64).T @ np.asarray(alpha, np.float64)
        error = np.linalg.norm(direction - expected)
        assert error <= tolerance * (np.linalg.norm(expected) + 1e-3), (direction, expected)
    else:
        np.testing.assert_allclose(alpha, expected, rtol=tolerance, atol=1e-6)
    for key, value in expected_state.items():
        np.testing.assert_allclose(state[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=12)
@given(seed=st.integers(0, 2**31 - 1), num_tasks=st.integers(1, 5))
def test_each_method_equals_its_reference(case, variant, seed, num_tasks):
    num_tasks = FIXED_TASKS.get(case, num_tasks)
    method, reference = method_of(case), CASES[case][2]
    losses, grads, grams, present = random_problem(np.random.default_rng(seed), num_tasks, 3)
    state, expected_state = method.init(num_tasks), as_numpy(method.init(num_tasks))
    for step in range(losses.shape[0]):
        gram = grams[step] if method.needs_gram else None
        alpha, state = update_fn(case, variant)(losses[step], gram, state, present=present[step])
        expected, expected_state = reference(
            losses[step], grads[step], expected_state, present[step]
        )
        assert_step_equal(case, alpha, as_numpy(state), grads[step], expected, expected_state)


def per_task(value, num_tasks):
    return np.ndim(value) >= 1 and np.shape(value)[0] == num_tasks


@pytest.mark.parametrize("case", sorted(CASES))
@given(seed=st.integers(0, 2**31 - 1), num_tasks=st.integers(2, 5))
def test_absent_tasks_get_zero_keep_their_state_and_match_the_sub_problem(case, seed, num_tasks):
    num_tasks = FIXED_TASKS.get(case, num_tasks)
    method = method_of(case)
    rng = np.random.default_rng(seed)
    losses, _, grams, _ = random_problem(rng, num_tasks, steps=3)
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
    if case in FIXED_TASKS or case in RANDOM:
        return  # the references above hold their routed behaviour
    keep = np.flatnonzero(present)
    sub_state = {k: tf.gather(v, keep) if per_task(v, num_tasks) else v for k, v in state.items()}
    sub_gram = grams[2][np.ix_(keep, keep)] if method.needs_gram else None
    sub_alpha, sub_new = method.update(losses[2][keep], sub_gram, sub_state)
    np.testing.assert_allclose(alpha[keep], sub_alpha, rtol=1e-4, atol=1e-6)
    for key, value in sub_new.items():
        full = np.asarray(new_state[key])
        np.testing.assert_allclose(full[keep] if per_task(full, num_tasks) else full, value, 1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_nothing_present_gives_zeros_and_no_nan(case, variant):
    num_tasks = FIXED_TASKS.get(case, 3)
    method = method_of(case)
    losses, _, grams, _ = random_problem(np.random.default_rng(0), num_tasks, steps=1)
    state = method.init(num_tasks)
    gram = grams[0] if method.needs_gram else None
    absent = [False] * num_tasks
    alpha, new_state = update_fn(case, variant)(losses[0], gram, state, present=absent)
    np.testing.assert_array_equal(np.asarray(alpha), np.zeros(num_tasks))
    for key, value in new_state.items():
        assert np.all(np.isfinite(np.asarray(value))), key
        if per_task(value, num_tasks):
            np.testing.assert_array_equal(np.asarray(value), np.asarray(state[key]))


@pytest.mark.parametrize("name", ["mgda", "cagrad"])
def test_more_tasks_than_the_exact_solver_takes_run_the_iterations(name):
    """T = 10 > EXACT_MAX_TASKS: the first-order solver, close to the exact reference."""
    method = getattr(fs.weighting, name)()
    rng = np.random.default_rng(5)
    grads = (rng.normal(size=(10, 16)) * rng.uniform(0.5, 2.0, (10, 1))).astype(np.float32)
    alpha, _ = tf.function(method.update, jit_compile=True)(
        np.ones(10, np.float32), grads @ grads.T, method.init(10)
    )
    expected, _ = getattr(ref, name)()(np.ones(10), grads, {}, None)
    direction = grads.astype(np.float64).T @ np.asarray(alpha, np.float64)
    assert np.linalg.norm(direction - expected) <= 1e-2 * np.linalg.norm(expected)


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


def test_nash_mtl_solves_the_bargaining_equation():
    """alpha_t <g_t, d> = 1 for every task (the paper's eq. 6), so ‖d‖² = T."""
    rng = np.random.default_rng(11)
    grads = (rng.normal(size=(4, 9)) * [[0.1], [1.0], [10.0], [3.0]]).astype(np.float32)
    gram = grads @ grads.T
    alpha, _ = fs.weighting.nash_mtl().update(None, gram, {})
    alpha = np.asarray(alpha, np.float64)
    np.testing.assert_allclose(alpha * (gram @ alpha), np.ones(4), rtol=1e-3)


def test_rlw_and_pcgrad_draw_anew_each_step_and_repeat_with_the_seed():
    method = fs.weighting.rlw(seed=1)
    state = method.init(3)
    first, state = method.update([1.0, 1.0, 1.0], None, state)
    second, _ = method.update([1.0, 1.0, 1.0], None, state)
    again, _ = fs.weighting.rlw(seed=1).update([1.0, 1.0, 1.0], None, method.init(3))
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: fs.weighting.static(weights="ab"), "weights expected a non-empty sequence"),
        (lambda: fs.weighting.static(weights=[1.0, float("nan")]), "finite numbers"),
        (lambda: fs.weighting.static(weights=[1.0, 2.0]).init(3), "has 2 entries"),
        (lambda: fs.weighting.uncertainty(learning_rate=0).init(2), "learning_rate expected"),
        (lambda: fs.weighting.uncertainty().init(0), "num_tasks, a positive int"),
        (lambda: fs.weighting.dwa(temperature=-1.0), "temperature expected"),
        (lambda: fs.weighting.rlw(seed=-1), "seed expected"),
        (lambda: fs.weighting.famo(gamma=-0.1), "gamma expected"),
        (lambda: fs.weighting.famo(min_losses=[0.0]).init(2), "min_losses has 1 entries"),
        (lambda: fs.weighting.famo(min_losses="ab"), "min_losses expected a non-empty"),
        (lambda: fs.weighting.gradnorm(alpha="x"), "alpha expected"),
        (lambda: fs.weighting.pcgrad(seed=1.5), "seed expected"),
        (lambda: fs.weighting.cagrad(c=-1), "c expected"),
        (lambda: fs.weighting.mgda().init(2.0), "num_tasks, a positive int"),
    ],
    ids=[
        "static-weights-not-numbers",
        "static-weights-nan",
        "static-weights-length",
        "uncertainty-learning-rate",
        "uncertainty-num-tasks",
        "dwa-temperature",
        "rlw-seed",
        "famo-gamma",
        "famo-min-losses",
        "famo-min-losses-not-numbers",
        "gradnorm-alpha",
        "pcgrad-seed",
        "cagrad-c",
        "mgda-num-tasks",
    ],
)
def test_bad_options_are_spec_errors(make, message):
    with pytest.raises(fs.SpecError, match=message):
        make()
