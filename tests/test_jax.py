"""funcsplit.jax: the same SplitSpec lowered to JAX equals the TensorFlow lowering.

Parity: for every registry loss (with its options), routes (poisoned routed-away targets
included), sample weights, class weights, empty routes and both reductions, the JAX per-loss
values, totals, counts and gradients equal TensorFlow's (rtol 1e-5); eagerly and under jit.
"""

from __future__ import annotations

import collections
import functools

import keras
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
from funcsplit._src.registry import NAMES  # noqa: E402

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
    # rank-1 heads (a squeezed Dense(1)): [B] targets and predictions are per-example values
    "mse_rank1": Case("mse", _float(), lambda rng, b: _normal(rng, (b,)), _nan),
    "mae_rank1": Case("mae", _float(), lambda rng, b: _normal(rng, (b,)), _nan),
    "huber_rank1": Case("huber", _float(), lambda rng, b: _normal(rng, (b,)), _nan),
    "bce_rank1": Case(
        "binary_crossentropy", _labels(2), lambda rng, b: _sigmoid(rng, (b,)), lambda v: -7
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


# --- structures, split and its checks --------------------------------------------------------

Pair = collections.namedtuple("Pair", "first second")


def _nested_split() -> tuple[fs.SplitSpec, tuple]:
    """A tuple element holding a dict with a '/' key, a namedtuple and a nested dict."""
    spec = fs.ElementSpec.from_structure(
        (
            {"image/pixels": fs.Leaf(tf.float32, (None, 3)), "id": fs.Leaf(tf.string, (None,))},
            Pair(fs.Leaf(tf.int64, (None,)), fs.Leaf(tf.float32, (None, 1))),
            {"labels": {"b": fs.Leaf(tf.int32, (None,)), "a": fs.Leaf(tf.bool, (None,))}},
        )
    )
    split = fs.SplitSpec(
        spec,
        inputs={"pixels": fs.Path((0, "image/pixels")), "pair": ("1/second",)},
        losses=(
            fs.LossBinding(
                "b",
                "sparse_categorical_crossentropy",
                target="2/labels/b",
                output="cls",
                route=fs.route("2/labels/a"),
            ),
            fs.LossBinding(
                "first", "mse", target=fs.Path((1, "first")), output="reg", sample_weight="1/second"
            ),
        ),
        drop=fs.Path((0, "id")),
    )
    rng = np.random.default_rng(0)
    element = (
        {
            "image/pixels": rng.normal(size=(5, 3)).astype(np.float32),
            "id": np.array([b"a", b"b", b"c", b"d", b"e"]),
        },
        Pair(np.arange(5, dtype=np.int64), rng.uniform(size=(5, 1)).astype(np.float32)),
        {
            "labels": {
                "b": np.array([0, -1, 2, -1, 1], np.int32),
                "a": np.array([True, False, True, False, True]),
            }
        },
    )
    return split, element


def test_split_routes_like_tensorflow_by_path():
    split, element = _nested_split()
    tf_inputs, tf_targets, tf_weights = fs.compile(split).split(element)
    inputs, targets, weights = fsj.compile(split).split(element)
    assert set(inputs) == {"pixels", "pair"} and isinstance(inputs["pair"], tuple)
    np.testing.assert_array_equal(inputs["pixels"], element[0]["image/pixels"])
    np.testing.assert_array_equal(inputs["pair"][0], element[1].second)
    tf.nest.map_structure(
        np.testing.assert_array_equal,
        (inputs, targets, weights),
        (tf_inputs, tf_targets, tf_weights),
    )
    assert weights["b"]["route"] is element[2]["labels"]["a"]


def test_loss_on_nested_element_equals_tensorflow_and_ignores_missing_labels():
    split, element = _nested_split()
    rng = np.random.default_rng(1)
    predictions = {
        "cls": rng.dirichlet(np.ones(3), 5).astype(np.float32),
        "reg": rng.normal(size=(5, 1)).astype(np.float32),
    }
    tf_compiled, jax_compiled = fs.compile(split), fsj.compile(split)
    _, tf_targets, tf_weights = tf_compiled.split(element)
    expected = tf_compiled.loss(tf_targets, predictions, tf_weights)
    _, targets, weights = jax.jit(jax_compiled.split)(_without_strings(element))
    result = jax.jit(jax_compiled.loss)(targets, predictions, weights)
    for name in ("b", "first"):
        np.testing.assert_allclose(result.per_loss[name], expected.per_loss[name], rtol=RTOL)
    assert int(result.counts["b"]) == 3
    by_hand = -np.mean(np.log(predictions["cls"][[0, 2, 4], [0, 2, 1]]))
    np.testing.assert_allclose(result.per_loss["b"], by_hand, rtol=RTOL)


def _without_strings(element):
    """A dropped string leaf cannot enter jit: replace it by a placeholder array."""
    first = dict(element[0], id=np.zeros(5, np.int32))
    return (first, *element[1:])


def test_split_names_missing_and_misshaped_leaves():
    split, element = _nested_split()
    compiled = fsj.compile(split)
    bad = ({"image/pixels": np.zeros((5, 4), np.float32), "idx": element[0]["id"]}, *element[1:])
    with pytest.raises(fs.SpecError) as info:
        compiled.split(bad)
    found = set(info.value.paths)
    assert {"0/image/pixels", "0/id", "0/idx"} <= found
    assert "shape float32[None, 3]" in str(info.value)
    with pytest.raises(fs.SpecError, match="subtree {'labels'") as info:
        compiled.split(list(element[:2]))
    assert info.value.paths == ("2",)
    with pytest.raises(fs.SpecError, match=r"the structure \(\{'id': ., 'image/pixels'"):
        compiled.split({"x": element})


# --- compile-time errors -----------------------------------------------------------------------


def test_leaves_jax_cannot_carry_are_named_at_compile_time():
    spec = fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, (None, 2)),
            "words": fs.Leaf(tf.int32, (None, None), kind="ragged"),
            "boxes": fs.Leaf(tf.float32, (None, 4), kind="sparse"),
            "caption": fs.Leaf(tf.string, (None,)),
            "filename": fs.Leaf(tf.string, (None,)),
            "y": fs.Leaf(tf.float32, (None,)),
        }
    )
    split = fs.SplitSpec(
        spec,
        inputs={"x": "x", "words": "words"},
        losses=(
            fs.LossBinding("y", "mse", target="y", route=fs.route("caption", equals="a")),
            fs.LossBinding("boxes", lambda t, p: p, target="boxes"),
        ),
        drop="filename",
    )
    fs.compile(split)  # TensorFlow carries all of them
    with pytest.raises(fs.SpecError) as info:
        fsj.compile(split)
    assert set(info.value.paths) == {"words", "boxes", "caption"}
    assert "input words" in str(info.value) and "route of y" in str(info.value)


def test_keras_losses_translate_or_are_named():
    import keras

    spec = fs.ElementSpec.from_structure(
        {"x": fs.Leaf(tf.float32, (None, 3)), "y": fs.Leaf(tf.int32, (None,))}
    )
    keras_split = fs.SplitSpec(
        spec,
        inputs="x",
        losses=(
            fs.LossBinding(
                "y", keras.losses.SparseCategoricalCrossentropy(from_logits=True), target="y"
            ),
        ),
    )
    registry_split = fs.SplitSpec(
        spec,
        inputs="x",
        losses=(
            fs.LossBinding(
                "y", fs.losses.sparse_categorical_crossentropy(from_logits=True), target="y"
            ),
        ),
    )
    compiled = fsj.compile(keras_split)
    assert compiled.plan.losses[0].fn == registry_split.losses[0].fn
    targets, logits = {"y": np.array([0, 2])}, np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    np.testing.assert_allclose(
        compiled.loss(targets, logits).total,
        fs.compile(keras_split).loss(targets, tf.constant(logits, tf.float32)).total,
        rtol=RTOL,
    )
    for loss in (keras.losses.Dice(), keras.losses.SparseCategoricalCrossentropy(ignore_class=0)):
        bad = fs.SplitSpec(spec, inputs="x", losses=(fs.LossBinding("y", loss, target="y"),))
        with pytest.raises(fs.SpecError, match="runs on TensorFlow") as info:
            fsj.compile(bad)
        assert info.value.paths == ("y",)


def test_compile_rejects_what_the_resolver_rejects():
    spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 3))})
    with pytest.raises(fs.SpecError) as info:
        fsj.compile(
            fs.SplitSpec(spec, inputs="x", losses=(fs.LossBinding("y", "mse", target="z"),))
        )
    assert info.value.paths == ("z",)
    with pytest.raises(fs.SpecError, match="SplitSpec"):
        fsj.compile("not a split")


# --- user losses, batch-level losses under jit --------------------------------------------------


def _user_split(fn) -> fs.SplitSpec:
    spec = fs.ElementSpec.from_structure(
        {"y": fs.Leaf(tf.float32, (None, 2)), "keep": fs.Leaf(tf.bool, (None,))}
    )
    return fs.SplitSpec(
        spec,
        inputs="y",
        losses=(
            fs.LossBinding("all", fn, target="y"),
            fs.LossBinding("routed", fn, target="y", route=fs.route("keep")),
        ),
    )


_Y = np.array([[0.0, 1.0], [2.0, 3.0], [np.nan, 5.0], [1.0, 1.0]], np.float32)
_KEEP = np.array([True, True, False, True])
_P = np.array([[1.0, 1.0], [0.0, 0.0], [4.0, 4.0], [3.0, -1.0]], np.float32)


def _run(compiled, keep=_KEEP, jit=False):
    _, targets, weights = compiled.split({"y": _Y, "keep": keep})
    loss = jax.jit(compiled.loss) if jit else compiled.loss
    return loss(targets, _P, weights)


def test_user_per_example_loss_from_optax_is_routed_and_averaged():
    result = _run(fsj.compile(_user_split(optax.losses.squared_error)), jit=True)
    per_example = np.mean((_P - np.nan_to_num(_Y)) ** 2, axis=1)
    np.testing.assert_allclose(result.per_loss["routed"], per_example[_KEEP].mean(), rtol=RTOL)
    assert np.isnan(result.per_loss["all"])  # the NaN target is routed to "all"


def test_row_wise_user_loss_runs_its_inner_function_per_binding():
    """`fs.losses.row_wise` is a TensorFlow-side declaration; JAX calls the wrapped loss."""
    declared = fsj.compile(_user_split(fs.losses.row_wise(optax.losses.squared_error)))
    plain = fsj.compile(_user_split(optax.losses.squared_error))
    for name, value in _run(plain, jit=True).per_loss.items():
        np.testing.assert_allclose(_run(declared, jit=True).per_loss[name], value, rtol=RTOL)
    keras_mse = fs.losses.row_wise(keras.losses.MeanSquaredError())
    split = fsj.compile(_user_split(keras_mse))  # a Keras loss inside is translated
    routed = np.mean((_P - np.nan_to_num(_Y)) ** 2, axis=1)[_KEEP].mean()
    np.testing.assert_allclose(_run(split, jit=True).per_loss["routed"], routed, rtol=RTOL)


def _abs_mean(y_true, y_pred):
    return jnp.mean(jnp.abs(y_true - y_pred))


def test_user_scalar_loss_without_route_is_computed_over_the_whole_batch():
    spec = fs.ElementSpec.from_structure({"y": fs.Leaf(tf.float32, (None, 2))})
    python_float = lambda y_true, y_pred: 0.25
    split = fs.SplitSpec(
        spec,
        inputs="y",
        losses=(
            fs.LossBinding("mean", _abs_mean, target="y"),
            fs.LossBinding("constant", python_float, target="y", weight=2.0),
        ),
    )
    result = jax.jit(fsj.compile(split).loss)({"mean": _Y[:2], "constant": _Y[:2]}, _P[:2])
    np.testing.assert_allclose(result.per_loss["mean"], np.abs(_P[:2] - _Y[:2]).mean())
    assert float(result.per_loss["constant"]) == 0.25 and int(result.counts["constant"]) == 2
    np.testing.assert_allclose(result.total, np.abs(_P[:2] - _Y[:2]).mean() + 0.5, rtol=RTOL)


def test_user_scalar_loss_eagerly_gathers_the_routed_examples_as_tensorflow_does():
    compiled = fsj.compile(_user_split(_abs_mean))
    result = _run(compiled)
    np.testing.assert_allclose(result.per_loss["routed"], np.abs(_P - _Y)[_KEEP].mean(), rtol=RTOL)
    tf_compiled = fs.compile(_user_split(lambda t, p: tf.reduce_mean(tf.abs(t - p))))
    _, targets, weights = tf_compiled.split({"y": _Y, "keep": _KEEP})
    expected = tf_compiled.loss(targets, tf.constant(_P), weights)
    np.testing.assert_allclose(result.per_loss["routed"], expected.per_loss["routed"], rtol=RTOL)
    assert float(_run(compiled, keep=np.zeros(4, bool)).per_loss["routed"]) == 0.0


def test_user_scalar_loss_under_jit_needs_a_mask_keyword():
    with pytest.raises(fs.SpecError, match="mask") as info:
        _run(fsj.compile(_user_split(_abs_mean)), jit=True)
    assert info.value.paths == ("y",) and "'routed'" in str(info.value)

    def masked_abs_mean(y_true, y_pred, *, mask=None):
        if mask is None:
            return _abs_mean(y_true, y_pred)
        rows = mask[:, None].astype(jnp.float32)
        return jnp.sum(jnp.abs(y_true - y_pred) * rows) / (2.0 * jnp.sum(rows))

    compiled = fsj.compile(_user_split(masked_abs_mean))
    jitted, eager = _run(compiled, jit=True), _run(fsj.compile(_user_split(_abs_mean)))
    np.testing.assert_allclose(jitted.per_loss["routed"], eager.per_loss["routed"], rtol=RTOL)
    empty = _run(compiled, keep=np.zeros(4, bool), jit=True)
    assert float(empty.per_loss["routed"]) == 0.0 and int(empty.counts["routed"]) == 0


# --- empty routes, gradients, vmap, groups ------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "target_shape"), [("sparse_categorical_crossentropy", (3,)), ("dice", (3, 4))]
)
def test_empty_route_is_zero_with_zero_finite_gradient(loss, target_shape):
    spec = fs.ElementSpec.from_structure(
        {"y": fs.Leaf(tf.int32, (None, *target_shape[1:])), "has": fs.Leaf(tf.float32, (None,))}
    )
    compiled = fsj.compile(
        fs.SplitSpec(
            spec,
            inputs="y",
            losses=(fs.LossBinding("only", loss, target="y", route=fs.route("has")),),
        )
    )
    element = {"y": np.full(target_shape, -1, np.int32), "has": np.zeros(3, np.float32)}
    _, targets, weights = compiled.split(element)

    def total(p):
        return compiled.loss(targets, p, weights).total

    value, grad = jax.jit(jax.value_and_grad(total))(jnp.full((3, 4), 0.25))
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros((3, 4)))


def test_vmap_over_ensemble_members_and_over_batches():
    compiled = _compiled("scce")[1]
    rng = np.random.default_rng(5)
    elements = [_draw("scce", seed)[0] for seed in range(3)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *elements)
    members = np.stack([_probs(rng, (BATCH, 5)) for _ in range(3)])

    def total(element, p):
        _, targets, weights = compiled.split(element)
        return compiled.loss(targets, {"p": p}, weights).total

    by_member = jax.vmap(lambda p: total(elements[0], p))(members)
    by_batch = jax.vmap(total)(stacked, members)
    for k in range(3):
        np.testing.assert_allclose(by_member[k], total(elements[0], members[k]), rtol=RTOL)
        np.testing.assert_allclose(by_batch[k], total(elements[k], members[k]), rtol=RTOL)


def _groups_split() -> fs.SplitSpec:
    spec = fs.ElementSpec.from_structure(
        (fs.Leaf(tf.float32, (None, 3)), fs.Leaf(tf.int32, (None,)), fs.Leaf(tf.int32, (None, 4)))
    )
    return fs.SplitSpec(
        spec,
        inputs={"image": "0", "text": "2"},
        losses=(
            fs.LossBinding("label", "sparse_categorical_crossentropy", target="1", group="image"),
            fs.LossBinding(
                "text",
                fs.losses.sequence_crossentropy(from_logits=True, pad_id=None),
                target="2",
                group="text",
                weight=0.5,
            ),
        ),
    )


def test_groups_route_predictions_and_gradients_per_group():
    compiled = fsj.compile(_groups_split())
    rng = np.random.default_rng(0)
    element = (
        rng.normal(size=(5, 3)).astype(np.float32),
        rng.integers(0, 3, 5),
        rng.integers(0, 6, (5, 4)),
    )
    params = {
        "image": jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
        "text": jnp.asarray(rng.normal(size=(6, 6)), jnp.float32),
    }

    def predict(params, inputs):
        return {
            "image": jax.nn.softmax(inputs["image"] @ params["image"]),
            "text": params["text"][inputs["text"]],
        }

    def loss(params, name=None):
        inputs, targets, weights = compiled.split(element)
        result = compiled.loss(targets, predict(params, inputs), weights)
        return result.total if name is None else result.per_loss[name]

    grads = jax.grad(loss)(params)
    np.testing.assert_allclose(grads["image"], jax.grad(loss)(params, "label")["image"], rtol=RTOL)
    np.testing.assert_allclose(
        grads["text"], 0.5 * jax.grad(loss)(params, "text")["text"], rtol=RTOL
    )
    tx = fsj.group_optimizer(compiled, {"image": optax.sgd(0.1), "text": optax.sgd(0.0)})
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["image"], -0.1 * grads["image"], rtol=RTOL)
    np.testing.assert_array_equal(updates["text"], np.zeros((6, 6)))


def test_group_optimizer_names_mismatched_groups():
    compiled = fsj.compile(_groups_split())
    with pytest.raises(fs.SpecError, match=r"\['image', 'text'\]"):
        fsj.group_optimizer(compiled, {"image": optax.sgd(0.1)})
    tx = fsj.group_optimizer(compiled, {"image": optax.sgd(0.1), "text": optax.adam(0.1)})
    with pytest.raises(fs.SpecError, match="keyed by the groups"):
        tx.init({"image": jnp.ones(2), "txt": jnp.ones(2)})
    ungrouped = fsj.compile(_user_split("mse"))
    with pytest.raises(fs.SpecError, match="a split with groups"):
        fsj.group_optimizer(ungrouped, {})


@pytest.mark.parametrize(
    ("dtype", "route"),
    [
        (tf.int64, fs.route("id", equals=2**40)),
        (tf.float64, fs.route("id", one_of=(1.0, 1e-300))),
    ],
)
def test_route_values_outside_the_jax_dtype_are_named(dtype, route):
    spec = fs.ElementSpec.from_structure(
        {"y": fs.Leaf(tf.float32, (None, 1)), "id": fs.Leaf(dtype, (None,))}
    )
    split = fs.SplitSpec(
        spec, inputs="y", losses=(fs.LossBinding("y", "mse", target="y", route=route),)
    )
    with jax.enable_x64(True) if hasattr(jax, "enable_x64") else jax.experimental.enable_x64():
        fsj.compile(split)  # 64-bit types on: the values fit
    with pytest.raises(fs.SpecError, match="jax_enable_x64") as info:
        fsj.compile(split)
    assert info.value.paths == ("id",)


def test_nan_sample_weight_of_a_routed_away_example_does_not_leak():
    spec = fs.ElementSpec.from_structure(
        {
            "y": fs.Leaf(tf.float32, (None, 2)),
            "keep": fs.Leaf(tf.bool, (None,)),
            "w": fs.Leaf(tf.float32, (None,)),
        }
    )
    split = fs.SplitSpec(
        spec,
        inputs="y",
        losses=(
            fs.LossBinding("routed", "mse", target="y", route=fs.route("keep"), sample_weight="w"),
        ),
    )
    element = {"y": _Y, "keep": _KEEP, "w": np.array([1.0, 2.0, np.nan, 0.5], np.float32)}
    tf_compiled, compiled = fs.compile(split), fsj.compile(split)
    _, tf_targets, tf_weights = tf_compiled.split(element)
    expected = tf_compiled.loss(tf_targets, tf.constant(_P), tf_weights)
    _, targets, weights = compiled.split(element)
    value, grad = jax.jit(jax.value_and_grad(lambda p: compiled.loss(targets, p, weights).total))(
        jnp.asarray(_P)
    )
    per_example = np.mean((_P - np.nan_to_num(_Y)) ** 2, axis=1)
    by_hand = (per_example[[0, 1, 3]] * [1.0, 2.0, 0.5]).sum() / 3.5
    np.testing.assert_allclose(value, by_hand, rtol=RTOL)
    np.testing.assert_allclose(value, expected.total.numpy(), rtol=RTOL)
    assert np.all(np.isfinite(grad)) and np.all(grad[2] == 0)


def test_user_loss_failures_and_batch_reduced_values_are_named():
    def reduced_over_batch(y_true, y_pred):
        return jnp.mean(jnp.square(y_true - y_pred), axis=0)  # [2]: wrong axis

    def broken(y_true, y_pred):
        return y_true @ y_pred  # [4, 2] @ [4, 2]: shapes do not fit

    for fn, message in ((reduced_over_batch, "batch dimension 4"), (broken, "TypeError")):
        compiled = fsj.compile(_user_split(fn))
        with pytest.raises(fs.SpecError, match=message) as info:
            _run(compiled, jit=True)
        assert info.value.paths[0] == "y" and fn.__name__ in str(info.value)
