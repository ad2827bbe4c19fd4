"""funcsplit.jax: the same SplitSpec lowered to JAX equals the TensorFlow lowering.

Parity: for every registry loss (with its options), routes (poisoned routed-away targets
included), sample weights, class weights, empty routes and both reductions, the JAX per-loss
values, totals, counts and gradients equal TensorFlow's (rtol 1e-5); eagerly and under jit.
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

import tensorflow as tf  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import funcsplit as fs  # noqa: E402
import funcsplit.jax as fsj  # noqa: E402
from funcsplit._src.losses import NAMES  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


# --- cases: one per registry loss configuration -------------------------------------------------
# Each case: the loss, a target maker, a prediction maker, and how to poison a routed-away target.

Case = collections.namedtuple(
    "Case", "loss target prediction poison batch_level", defaults=(False,)
)


def _probs(rng, shape):
    logits = rng.normal(size=shape)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _normal(rng, shape):
    return rng.normal(size=shape).astype(np.float32)


def _sigmoid(rng, shape):
    return (1.0 / (1.0 + np.exp(-rng.normal(size=shape) * 3))).astype(np.float32)


def _labels(classes, shape_tail=(), dtype=np.int32):
    return lambda rng, b: rng.integers(0, classes, size=(b, *shape_tail)).astype(dtype)


def _one_hot(classes):
    return lambda rng, b: np.eye(classes, dtype=np.float32)[rng.integers(0, classes, size=b)]


def _float(*tail):
    return lambda rng, b: _normal(rng, (b, *tail)) * 2


def _nan(v):
    return np.nan


CASES = {
    "scce": Case(
        fs.losses.sparse_categorical_crossentropy(),
        _labels(5),
        lambda rng, b: _probs(rng, (b, 5)),
        lambda v: -1,
    ),
    "scce_column_int64": Case(
        "sparse_categorical_crossentropy",
        _labels(5, (1,), np.int64),
        lambda rng, b: _probs(rng, (b, 5)),
        lambda v: -1,
    ),
    "scce_logits": Case(
        fs.losses.sparse_categorical_crossentropy(from_logits=True),
        _labels(4),
        lambda rng, b: _normal(rng, (b, 4)) * 4,
        lambda v: -1,
    ),
    "cce_smoothing": Case(
        fs.losses.categorical_crossentropy(label_smoothing=0.1),
        _one_hot(4),
        lambda rng, b: _probs(rng, (b, 4)) * 1.7,  # unnormalised: Keras renormalises
        _nan,
    ),
    "cce_logits": Case(
        fs.losses.categorical_crossentropy(from_logits=True),
        _one_hot(3),
        lambda rng, b: _normal(rng, (b, 3)) * 3,
        _nan,
    ),
    "bce": Case(
        "binary_crossentropy",
        _labels(2, (3,)),
        lambda rng, b: _sigmoid(rng, (b, 3)),
        lambda v: -7,
    ),
    "bce_bool_logits_smoothing": Case(
        fs.losses.binary_crossentropy(from_logits=True, label_smoothing=0.2),
        _labels(2, (3,), np.bool_),
        lambda rng, b: _normal(rng, (b, 3)) * 3,
        None,
    ),
    "bce_vector_target_column_pred": Case(
        "binary_crossentropy",
        lambda rng, b: rng.random(b).astype(np.float32),
        lambda rng, b: _sigmoid(rng, (b, 1)),
        _nan,
    ),
    "mse": Case("mse", _float(3), lambda rng, b: _normal(rng, (b, 3)), _nan),
    "mse_vector_target_column_pred": Case(
        "mse", _float(), lambda rng, b: _normal(rng, (b, 1)), _nan
    ),
    "mae_rank3": Case("mae", _float(2, 3), lambda rng, b: _normal(rng, (b, 2, 3)), _nan),
    "huber": Case("huber", _float(4), lambda rng, b: _normal(rng, (b, 4)), _nan),
    "huber_delta": Case(
        fs.losses.huber(delta=0.5), _float(4), lambda rng, b: _normal(rng, (b, 4)), _nan
    ),
    "dice": Case(
        "dice",
        _labels(2, (5, 5, 1)),
        lambda rng, b: _sigmoid(rng, (b, 5, 5, 1)),
        lambda v: 9,
        True,
    ),
    "dice_epsilon": Case(
        fs.losses.dice(epsilon=1.0),
        lambda rng, b: rng.random((b, 4, 4)).astype(np.float32),
        lambda rng, b: _sigmoid(rng, (b, 4, 4)),
        _nan,
        True,
    ),
    "sequence": Case(
        "sequence_crossentropy",
        lambda rng, b: np.where(rng.random((b, 7)) < 0.3, 0, rng.integers(1, 11, (b, 7))),
        lambda rng, b: _probs(rng, (b, 7, 11)),
        lambda v: -1,
    ),
    "sequence_logits_no_pad": Case(
        fs.losses.sequence_crossentropy(from_logits=True, pad_id=None),
        _labels(9, (6,)),
        lambda rng, b: _normal(rng, (b, 6, 9)) * 2,
        lambda v: -1,
    ),
    "sequence_pad_3": Case(
        fs.losses.sequence_crossentropy(from_logits=True, pad_id=3),
        lambda rng, b: np.where(rng.random((b, 5)) < 0.4, 3, rng.integers(0, 8, (b, 5))),
        lambda rng, b: _normal(rng, (b, 5, 8)),
        lambda v: -1,
    ),
}


def test_cases_cover_every_registry_loss():
    covered = {
        fs.losses.BuiltinLoss(c.loss).name if isinstance(c.loss, str) else c.loss.name
        for c in CASES.values()
    }
    assert covered == set(NAMES)


def _bindings(case: Case) -> tuple[fs.LossBinding, ...]:
    """Every routing / weighting variant of one loss, as bindings over the same element.

    ``t_poisoned`` holds a poison (``-1`` label, NaN, …) in the examples with ``task == 0``,
    which every binding on it routes away; ``never`` routes nothing (an empty route).
    """
    fn, p, poisoned = case.loss, "p", "t_poisoned"
    bindings = [
        fs.LossBinding("plain", fn, target="t", output=p),
        fs.LossBinding(
            "routed",
            fn,
            target=poisoned,
            output=p,
            weight=0.5,
            route=fs.route("task", one_of=(1, 2)),
        ),
        fs.LossBinding("empty", fn, target=poisoned, output=p, weight=3.0, route=fs.route("never")),
    ]
    if case.batch_level:
        return (
            *bindings,
            fs.LossBinding(
                "routed_equals", fn, target=poisoned, output=p, route=fs.route("task", equals=2)
            ),
        )
    return (
        *bindings,
        fs.LossBinding(
            "weighted",
            fn,
            target="t",
            output=p,
            sample_weight="w",
            class_weight={0: 2.0, 1: 0.5, 3: 4.0},
        ),
        fs.LossBinding(
            "routed_weighted",
            fn,
            target=poisoned,
            output=p,
            sample_weight="w_column",
            route=fs.route("task", not_equal=0),
        ),
        fs.LossBinding(
            "routed_sum_over_batch",
            fn,
            target=poisoned,
            output=p,
            weight=2.0,
            route=fs.route("task", equals=2),
            reduction="sum_over_batch_size",
        ),
        fs.LossBinding(
            "empty_weighted",
            fn,
            target=poisoned,
            output=p,
            sample_weight="w",
            class_weight={1: 3.0},
            route=fs.route("never"),
        ),
    )


def _element(case: Case, rng: np.random.Generator, batch: int) -> dict:
    target = np.asarray(case.target(rng, batch))
    task = rng.integers(0, 3, size=batch).astype(np.int32)
    poisoned = target.copy()
    if case.poison is not None:
        poisoned[task == 0] = case.poison(poisoned)
    return {
        "t": target,
        "t_poisoned": poisoned,
        "task": task,
        "never": np.zeros(batch, bool),
        "w": rng.uniform(0.1, 2.0, size=batch).astype(np.float32),
        "w_column": rng.uniform(0.0, 1.0, size=(batch, 1)).astype(np.float32),
    }


def _spec(case: Case, element: dict) -> fs.SplitSpec:
    leaves = {k: fs.Leaf(tf.as_dtype(v.dtype), (None, *v.shape[1:])) for k, v in element.items()}
    drop = ("w", "w_column") if case.batch_level else ()
    return fs.SplitSpec(
        fs.ElementSpec.from_structure(leaves), inputs="t", losses=_bindings(case), drop=drop
    )


@functools.cache
def _compiled(name: str):
    case = CASES[name]
    split = _spec(case, _element(case, np.random.default_rng(0), 2))
    return fs.compile(split), fsj.compile(split)


BATCH = 6  # one shape per case: each JAX case compiles once, every example reuses it


def _tf_result(compiled, element, predictions):
    """TensorFlow's result and gradient, eagerly (the traced function is tested elsewhere)."""
    element = tf.nest.map_structure(tf.constant, element)
    _, targets, weights = compiled.split.python_function(element)
    p = tf.constant(predictions["p"])
    with tf.GradientTape() as tape:
        tape.watch(p)
        result = compiled.loss.python_function(targets, {"p": p}, weights)
    return result, tape.gradient(result.total, p)


def _jax_value_and_grad(compiled):
    def total(p, element):
        _, targets, weights = compiled.split(element)
        result = compiled.loss(targets, {"p": p}, weights)
        return result.total, result

    return jax.value_and_grad(total, has_aux=True)


@functools.cache
def _jitted(name: str):
    return jax.jit(_jax_value_and_grad(_compiled(name)[1]))


def _jax_result(fn, element, predictions):
    (_, result), grad = fn(jnp.asarray(predictions["p"]), element)
    return result, grad


def _assert_same(tf_pair, jax_pair):
    (tf_result, tf_grad), (jax_result, jax_grad) = tf_pair, jax_pair
    assert set(jax_result.per_loss) == set(tf_result.per_loss)
    for name, value in tf_result.per_loss.items():
        np.testing.assert_allclose(
            np.asarray(jax_result.per_loss[name]),
            value.numpy(),
            rtol=RTOL,
            atol=ATOL,
            err_msg=name,
        )
        assert int(jax_result.counts[name]) == int(tf_result.counts[name]), name
        assert jax_result.per_loss[name].dtype == jnp.float32
        assert jax_result.counts[name].dtype == jnp.int32
    np.testing.assert_allclose(
        np.asarray(jax_result.total), tf_result.total.numpy(), rtol=RTOL, atol=ATOL
    )
    assert np.isfinite(np.asarray(jax_result.total))
    np.testing.assert_allclose(np.asarray(jax_grad), tf_grad.numpy(), rtol=RTOL, atol=ATOL)
    assert np.all(np.isfinite(np.asarray(jax_grad)))


def _draw(name: str, seed: int, batch: int = BATCH):
    case = CASES[name]
    rng = np.random.default_rng(seed)
    return _element(case, rng, batch), {"p": case.prediction(rng, batch)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_jitted_loss_and_gradient_equal_tensorflow(name):
    element, predictions = _draw(name, seed=0)
    _assert_same(
        _tf_result(_compiled(name)[0], element, predictions),
        _jax_result(_jitted(name), element, predictions),
    )


@given(name=st.sampled_from(sorted(CASES)), seed=st.integers(0, 2**32 - 1))
def test_parity_property(name, seed):
    """Random data, routes and weights for any case (each case compiles once, then reused)."""
    element, predictions = _draw(name, seed)
    _assert_same(
        _tf_result(_compiled(name)[0], element, predictions),
        _jax_result(_jitted(name), element, predictions),
    )


def test_eager_loss_equals_tensorflow():
    name = "dice"
    element, predictions = _draw(name, seed=3, batch=4)
    _assert_same(
        _tf_result(_compiled(name)[0], element, predictions),
        _jax_result(_jax_value_and_grad(_compiled(name)[1]), element, predictions),
    )


def test_batch_of_one_aligns_vector_target_with_column_prediction():
    name = "bce_vector_target_column_pred"
    element, predictions = _draw(name, seed=11, batch=1)
    _assert_same(
        _tf_result(_compiled(name)[0], element, predictions),
        _jax_result(_jitted(name), element, predictions),
    )
