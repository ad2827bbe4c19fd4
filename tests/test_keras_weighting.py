"""Loss weighting in fs.keras.train_step and RoutedModel (funcsplit/keras/_weighted.py).

Each weighted step is held against the same step written by hand: one tape per task for the
task gradients, their Gram matrix and alpha in NumPy, and ``w - lr · Σ_t alpha_t ∇L_t``. The
methods here are small stand-ins with the `fs.weighting.Method` shape (a loss-based one with
state, a Gram one with state) whose formulas the NumPy reference repeats.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf

import funcsplit as fs

LR = 0.1


class Method(NamedTuple):
    """The shape of ``fs.weighting.Method``."""

    name: str
    needs_gram: bool
    init: Any
    update: Any


def inverse_previous():
    """Loss-based, with state: alpha_t = T · softmax(L_t / L_t^prev) (DWA's form, T=1)."""

    def init(num_tasks):
        return {"previous": tf.ones([num_tasks]), "steps": tf.zeros([], tf.int32)}

    def update(losses, gram, state, present=None):
        ratio = losses / state["previous"]
        logits = tf.where(present, ratio, -1e9)
        alpha = tf.where(
            present, tf.nn.softmax(logits) * tf.reduce_sum(tf.cast(present, tf.float32)), 0.0
        )
        previous = tf.where(present, losses, state["previous"])
        return alpha, {"previous": previous, "steps": state["steps"] + 1}

    return Method("inverse_previous", False, init, update)


def inverse_previous_reference(losses, present, previous):
    logits = np.where(present, losses / previous, -1e9)
    soft = np.exp(logits - logits.max())
    soft = soft / soft.sum()
    alpha = np.where(present, soft * present.sum(), 0.0)
    return alpha, np.where(present, losses, previous)


def unit_gradients():
    """Gram-based, with state: alpha_t = 1 / ‖g_t‖ · decay^steps (0 for absent tasks)."""

    def init(num_tasks):
        return tf.ones([], tf.float32)

    def update(losses, gram, state, present=None):
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 1e-12))
        return tf.where(present, state / norms, 0.0), state * 0.5

    return Method("unit_gradients", True, init, update)


def unit_gradients_reference(gram, present, scale):
    norms = np.sqrt(np.maximum(np.diag(gram), 1e-12))
    return np.where(present, scale / norms, 0.0), scale * 0.5


def _split(groups=False):
    spec = fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, (None, 3)),
            "a": fs.Leaf(tf.float32, (None, 1)),
            "b": fs.Leaf(tf.float32, (None, 1)),
            "has_b": fs.Leaf(tf.bool, (None,)),
        }
    )
    group = {"a": "left", "b": "right"} if groups else {"a": None, "b": None}
    losses = (
        fs.LossBinding("a", "mse", target="a", output="a", group=group["a"]),
        fs.LossBinding(
            "b",
            "mae",
            target="b",
            output="b",
            route=fs.route("has_b"),
            weight=2.0,
            group=group["b"],
        ),
    )
    inputs = {"left": "x", "right": "x"} if groups else "x"
    return fs.compile(fs.SplitSpec(spec, inputs=inputs, losses=losses))


def _model(seed=0, heads=("a", "b")):
    keras.utils.set_random_seed(seed)
    x = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh", name="enc")(x)
    return keras.Model(x, {n: keras.layers.Dense(1, name=f"head_{n}")(h) for n in heads})


def _element(seed=0, n=6, has_b=None):
    rng = np.random.default_rng(seed)
    has_b = rng.random(n) < 0.5 if has_b is None else np.asarray(has_b, bool)
    return {
        "x": tf.constant(rng.normal(size=(n, 3)), tf.float32),
        "a": tf.constant(rng.normal(size=(n, 1)), tf.float32),
        "b": tf.constant(rng.normal(size=(n, 1)), tf.float32),
        "has_b": tf.constant(has_b),
    }


def _shared(model):
    return model.get_layer("enc").trainable_variables


def _hand_task_gradients(model, element):
    """Task losses L_t = weight · loss and their gradients, each written by hand."""
    x, has_b = element["x"], tf.cast(element["has_b"], tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        out = model(x, training=True)
        loss_a = tf.reduce_mean(tf.square(element["a"] - out["a"]))
        per_b = tf.reduce_mean(tf.abs(element["b"] - out["b"]), axis=-1)
        loss_b = 2.0 * tf.math.divide_no_nan(tf.reduce_sum(per_b * has_b), tf.reduce_sum(has_b))
    variables = model.trainable_variables
    grads = []
    for loss in (loss_a, loss_b):
        grads.append(
            [
                np.zeros(v.shape) if g is None else g.numpy()
                for g, v in zip(tape.gradient(loss, variables), variables)
            ]
        )
    losses = np.array([loss_a.numpy(), loss_b.numpy()])
    present = np.array([True, bool(np.any(element["has_b"].numpy()))])
    return losses, present, grads


def _gram(grads, model, names=("enc",)):
    shared = [i for i, v in enumerate(model.trainable_variables) if v.path.split("/")[0] in names]
    flat = np.stack([np.concatenate([g[i].ravel() for i in shared]) for g in grads])
    return flat @ flat.T


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def _expected_update(before, grads, alpha):
    return [w - LR * sum(a * g[i] for a, g in zip(alpha, grads)) for i, w in enumerate(before)]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["traced", "xla"])
@pytest.mark.parametrize("has_b", [[1, 0, 1, 0, 0, 1], [0] * 6], ids=["routed", "b-absent"])
def test_gram_method_step_equals_hand_written(jit_compile, has_b):
    compiled, model = _split(), _model()
    step = fs.keras.train_step(
        compiled,
        model,
        keras.optimizers.SGD(LR),
        weighting=unit_gradients(),
        shared=_shared,
        jit_compile=jit_compile,
    )
    scale = 1.0
    for seed in range(3):
        element = _element(seed, has_b=has_b)
        _, present, grads = _hand_task_gradients(model, element)
        alpha, scale_next = unit_gradients_reference(_gram(grads, model), present, scale)
        expected = _expected_update(_weights(model), grads, alpha)
        result = step(element)
        np.testing.assert_allclose(
            [float(result.weights[n]) for n in ("a", "b")], alpha, rtol=1e-5, atol=1e-6
        )
        for got, want in zip(_weights(model), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        scale = scale_next
        np.testing.assert_allclose(step.weighting_state[0].numpy(), scale)
        assert float(result.weights["b"]) == (0.0 if not present[1] else float(alpha[1]))
    assert step.experimental_get_tracing_count() == 1


def test_loss_method_step_equals_hand_written_and_keeps_absent_state():
    compiled, model = _split(), _model()
    step = fs.keras.train_step(
        compiled, model, keras.optimizers.SGD(LR), weighting=inverse_previous()
    )
    previous = np.ones(2)
    for seed, has_b in enumerate([[1, 1, 0, 0, 0, 0], [0] * 6, [0, 0, 0, 1, 1, 1]]):
        element = _element(seed, has_b=has_b)
        losses, present, grads = _hand_task_gradients(model, element)
        alpha, next_previous = inverse_previous_reference(losses, present, previous)
        expected = _expected_update(_weights(model), grads, alpha)
        result = step(element)
        for got, want in zip(_weights(model), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        state = {v.name.split(":")[0]: v.numpy() for v in step.weighting_state}
        np.testing.assert_allclose(step.weighting_state[0].numpy(), next_previous, rtol=1e-6)
        if not present[1]:  # an absent task keeps its state entry
            assert step.weighting_state[0].numpy()[1] == previous[1]
        previous = next_previous
        assert sorted(result.weights) == ["a", "b"]
        assert state  # the state variables are named after the method
    assert int(step.weighting_state[1].numpy()) == 3


def test_without_weighting_the_result_has_no_weights():
    step = fs.keras.train_step(_split(), _model(), keras.optimizers.SGD(LR))
    assert step(_element()).weights is None
    assert list(step.weighting_state) == []


def test_groups_take_one_method_each():
    compiled = _split(groups=True)
    models = {"left": _model(1, heads=("a",)), "right": _model(2, heads=("b",))}
    optimizers = {"left": keras.optimizers.SGD(LR), "right": keras.optimizers.SGD(LR)}
    step = fs.keras.train_step(
        compiled,
        models,
        optimizers,
        weighting={"left": unit_gradients(), "right": inverse_previous()},
        shared={"left": _shared},
    )
    element = _element(3, has_b=[1, 1, 1, 0, 0, 0])
    # each group is a one-task problem: left alpha = 1/‖g_a‖, right alpha = 1 (softmax of one)
    left = models["left"]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(element["a"] - left(element["x"])["a"]))
    enc = tape.gradient(loss, _shared(left))
    norm = np.sqrt(sum(float(tf.reduce_sum(g * g)) for g in enc))
    result = step(element)
    np.testing.assert_allclose(float(result.weights["a"]), 1.0 / norm, rtol=1e-5)
    np.testing.assert_allclose(float(result.weights["b"]), 1.0, rtol=1e-6)
    assert len(step.weighting_state) == 3


def test_regularization_is_added_unweighted():
    compiled = _split()
    keras.utils.set_random_seed(0)
    x = keras.Input((3,))
    h = keras.layers.Dense(4, name="enc", kernel_regularizer=keras.regularizers.L2(0.5))(x)
    model = keras.Model(x, {n: keras.layers.Dense(1, name=f"head_{n}")(h) for n in "ab"})
    step = fs.keras.train_step(
        compiled, model, keras.optimizers.SGD(LR), weighting=unit_gradients(), shared=_shared
    )
    element = _element(4, has_b=[1, 0, 1, 0, 1, 0])
    _, present, grads = _hand_task_gradients(model, element)
    alpha, _ = unit_gradients_reference(_gram(grads, model), present, 1.0)
    kernel = model.get_layer("enc").kernel
    before = _weights(model)
    expected = _expected_update(before, grads, alpha)
    index = next(i for i, v in enumerate(model.trainable_variables) if v is kernel)
    expected[index] = expected[index] - LR * 0.5 * 2 * before[index]
    step(element)
    for got, want in zip(_weights(model), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_checkpoint_carries_the_weighting_state(tmp_path):
    compiled, model = _split(), _model()
    step = fs.keras.train_step(
        compiled, model, keras.optimizers.SGD(LR), weighting=inverse_previous()
    )
    step(_element(0, has_b=[1] * 6))
    path = tf.train.Checkpoint(step=step).save(str(tmp_path / "ckpt"))
    saved = [v.numpy() for v in step.weighting_state]
    step(_element(1, has_b=[1] * 6))
    assert not np.array_equal(step.weighting_state[0].numpy(), saved[0])
    fresh = fs.keras.train_step(
        compiled, _model(), keras.optimizers.SGD(LR), weighting=inverse_previous()
    )
    tf.train.Checkpoint(step=fresh).restore(path).assert_existing_objects_matched()
    for variable, value in zip(fresh.weighting_state, saved):
        np.testing.assert_array_equal(variable.numpy(), value)


# --- argument checks --------------------------------------------------------------------------


def _error(**kwargs) -> str:
    compiled = kwargs.pop("compiled", None) or _split()
    model = kwargs.pop("model", None) or _model()
    with pytest.raises(fs.SpecError) as info:
        step = fs.keras.train_step(compiled, model, keras.optimizers.SGD(LR), **kwargs)
        step(_element())
    return str(info.value)


def test_gram_method_without_shared_is_an_error():
    message = _error(weighting=unit_gradients())
    assert "shared" in message and "needs_gram" in message and "unit_gradients" in message


def test_weighting_that_is_not_a_method_is_an_error():
    message = _error(weighting="famo")
    assert "fs.weighting.Method" in message and "str" in message


def test_dict_weighting_without_groups_is_an_error():
    assert "no groups" in _error(weighting={"a": inverse_previous()})


def test_groups_need_a_method_each():
    compiled = _split(groups=True)
    models = {"left": _model(1, heads=("a",)), "right": _model(2, heads=("b",))}
    optimizers = {"left": keras.optimizers.SGD(LR), "right": keras.optimizers.SGD(LR)}
    for weighting, words in [
        (inverse_previous(), ["dict", "groups"]),
        ({"left": inverse_previous()}, ["right", "fs.weighting.static()"]),
        ({"left": inverse_previous(), "right": inverse_previous(), "up": 1}, ["unknown", "up"]),
    ]:
        with pytest.raises(fs.SpecError) as info:
            fs.keras.train_step(compiled, models, optimizers, weighting=weighting)
        assert all(w in str(info.value) for w in words), str(info.value)


def test_shared_variables_must_be_trained_by_the_model():
    other = keras.Variable(np.zeros((2,)), name="stray")
    message = _error(weighting=unit_gradients(), shared=[other])
    assert "stray" in message and "does not train" in message
    message = _error(weighting=unit_gradients(), shared=lambda m: [m.get_layer("enc")])
    assert "trainable_variables" in message
    message = _error(weighting=unit_gradients(), shared=lambda m: [])
    assert "at least one shared variable" in message
