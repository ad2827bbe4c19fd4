"""Loss weighting in fs.keras.train_step and RoutedModel (funcsplit/keras/_weighted.py).

Each weighted step is held against the same step written by hand: one tape per task for the
task gradients, their Gram matrix and alpha in NumPy, and ``w - lr · Σ_t alpha_t ∇L_t``. The
methods here are small stand-ins with the `fs.weighting.Method` shape (a loss-based one with
state, a Gram one with state) whose formulas the NumPy reference repeats.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
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


# --- RoutedModel --------------------------------------------------------------------------------


def _dataset(batches=3, n=6):
    parts = [_element(10 + i, n=n, has_b=[i % 2, 0, 1, 0, 0, i % 2]) for i in range(batches)]
    parts[1] = {**parts[1], "has_b": tf.zeros([n], tf.bool)}  # b absent from one batch
    whole = {k: tf.concat([p[k] for p in parts], 0) for k in parts[0]}
    return parts, tf.data.Dataset.from_tensor_slices(whole).batch(n)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["traced", "xla"])
def test_routed_model_fit_equals_hand_written_steps(jit_compile):
    compiled = _split()
    parts, ds = _dataset()
    reference = _model(5)
    scale, alphas = 1.0, []
    expected_loss = []
    for element in parts:
        losses, present, grads = _hand_task_gradients(reference, element)
        alpha, scale = unit_gradients_reference(_gram(grads, reference), present, scale)
        alphas.append((alpha, present))
        expected_loss.append(losses.sum())
        for variable, value in zip(
            reference.trainable_variables, _expected_update(_weights(reference), grads, alpha)
        ):
            variable.assign(value)
    routed = fs.keras.RoutedModel(_model(5), compiled, weighting=unit_gradients(), shared=_shared)
    routed.compile(optimizer=keras.optimizers.SGD(LR), jit_compile=jit_compile)
    history = routed.fit(compiled.apply(ds), epochs=1, verbose=0, shuffle=False).history
    for got, want in zip(_weights(routed.model), _weights(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for t, name in enumerate(("a", "b")):
        shown = [a[t] for a, p in alphas if p[t]]
        np.testing.assert_allclose(history[f"{name}_weight"][0], np.mean(shown), rtol=1e-5)
    np.testing.assert_allclose(history["loss"][0], np.mean(expected_loss), rtol=1e-5)
    np.testing.assert_allclose(routed.non_trainable_variables[0].numpy(), scale)
    logs = routed.evaluate(compiled.apply(ds), return_dict=True, verbose=0)
    assert sorted(logs) == ["a_loss", "b_loss", "loss"]
    assert len(routed.evaluate(compiled.apply(ds), verbose=0)) == 3


def test_routed_model_history_shows_weights_beside_losses_and_val_has_none():
    compiled = _split()
    _, ds = _dataset()
    routed = fs.keras.RoutedModel(_model(), compiled, weighting=inverse_previous())
    routed.compile(optimizer=keras.optimizers.SGD(LR))
    data = compiled.apply(ds)
    history = routed.fit(data, validation_data=data, epochs=2, verbose=0).history
    assert sorted(history) == [
        "a_loss",
        "a_weight",
        "b_loss",
        "b_weight",
        "loss",
        "val_a_loss",
        "val_b_loss",
        "val_loss",
    ]
    assert int(routed.non_trainable_variables[1].numpy()) == 6  # steps, in the method's state


def test_routed_model_static_weighting_equals_no_weighting():
    compiled = _split()
    _, ds = _dataset()
    fitted = []
    for weighting in (None, fs.weighting.static()):
        routed = fs.keras.RoutedModel(_model(7), compiled, weighting=weighting)
        routed.compile(optimizer=keras.optimizers.SGD(LR))
        history = routed.fit(compiled.apply(ds), epochs=2, verbose=0).history
        fitted.append((_weights(routed.model), history))
    for got, want in zip(fitted[1][0], fitted[0][0]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fitted[1][1]["loss"], fitted[0][1]["loss"], rtol=1e-6)
    assert fitted[1][1]["a_weight"] == [1.0, 1.0]


def test_routed_model_weights_file_carries_the_state(tmp_path):
    compiled = _split()
    _, ds = _dataset()
    routed = fs.keras.RoutedModel(_model(), compiled, weighting=fs.weighting.uncertainty())
    routed.compile(optimizer=keras.optimizers.SGD(LR))
    routed.fit(compiled.apply(ds), epochs=1, verbose=0)
    state = routed.non_trainable_variables[0].numpy()
    assert np.all(state != 0.0)  # the log-variances moved
    path = str(tmp_path / "routed.weights.h5")
    routed.save_weights(path)
    fresh = fs.keras.RoutedModel(_model(), compiled, weighting=fs.weighting.uncertainty())
    fresh(_element()["x"])  # built
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.non_trainable_variables[0].numpy(), state)


def test_routed_model_checks_weighting_up_front():
    compiled = _split()
    with pytest.raises(fs.SpecError, match="needs_gram"):
        fs.keras.RoutedModel(_model(), compiled, weighting=unit_gradients())
    with pytest.raises(fs.SpecError, match="fs.weighting.Method"):
        fs.keras.RoutedModel(_model(), compiled, weighting=[inverse_previous()])
    other = keras.Variable(np.zeros((2,)), name="stray")
    with pytest.raises(fs.SpecError, match="stray"):
        fs.keras.RoutedModel(_model(), compiled, weighting=unit_gradients(), shared=[other])


def test_train_step_static_weighting_equals_no_weighting():
    compiled = _split()
    results = []
    for weighting in (None, fs.weighting.static(weights=[1.0, 1.0])):
        model = _model(3)
        step = fs.keras.train_step(
            compiled, model, keras.optimizers.Adam(0.01), weighting=weighting
        )
        for seed in range(3):
            result = step(_element(seed))
        results.append((_weights(model), float(result.total)))
    for got, want in zip(results[1][0], results[0][0]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-6)


# --- tf.distribute: 2 replicas == one device with the global batch -----------------------------


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    """The results of ``distribute_weighting.py`` (2 logical CPUs, in a subprocess)."""
    here = pathlib.Path(__file__).parent
    out = tmp_path_factory.mktemp("weighting") / "out.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    # the checkout's funcsplit first (the script's own folder is sys.path[0], not the cwd)
    paths = [str(here), str(here.parent), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    done = subprocess.run(
        [sys.executable, str(here / "distribute_weighting.py"), str(out)],
        env=env,
        cwd=here.parent,
        capture_output=True,
        text=True,
        timeout=1800,  # every method, one device and two replicas: minutes on a loaded CPU
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["replicas"] == 2
    assert not payload["errors"], "\n".join(payload["errors"].values())
    return payload


def _runs(payload, kind):
    return {k.split("/")[1]: v for k, v in payload.items() if k.startswith(f"{kind}/")}


def test_distributed_train_step_equals_one_device(distributed):
    runs = _runs(distributed, "train_step")
    assert {"unit_gradients", "static", "uncertainty"} <= set(runs)
    for name, run in runs.items():
        single, mirrored = run["single"], run["mirrored"]
        for got, want in zip(mirrored["weights"], single["weights"]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        for got, want in zip(mirrored["alphas"], single["alphas"]):
            assert sorted(got) == sorted(want)
            np.testing.assert_allclose(
                [got[k] for k in sorted(got)],
                [want[k] for k in sorted(want)],
                rtol=1e-5,
                atol=1e-6,
                err_msg=name,
            )
        np.testing.assert_allclose(mirrored["totals"], single["totals"], rtol=1e-5)
        for got, want in zip(mirrored["state"], single["state"]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
    # the routing is uneven and the box tasks are absent from the second batch: alpha 0
    alphas = runs["unit_gradients"]["single"]["alphas"]
    assert alphas[0]["box"] > 0.0 and alphas[0]["label"] > 0.0
    assert alphas[1]["box"] == 0.0 and alphas[1]["box_sum"] == 0.0 and alphas[1]["label"] > 0.0


def test_distributed_routed_model_fit_equals_one_device(distributed):
    runs = _runs(distributed, "routed_model")
    assert set(runs) == {"unit_gradients", "uncertainty"}
    for name, run in runs.items():
        single, mirrored = run["single"], run["mirrored"]
        for got, want in zip(mirrored["weights"], single["weights"]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        assert sorted(mirrored["history"]) == sorted(single["history"])
        for key, values in single["history"].items():
            np.testing.assert_allclose(mirrored["history"][key], values, rtol=1e-5, err_msg=key)
        assert "label_weight" in single["history"]
        for got, want in zip(mirrored["state"], single["state"]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_weighted_routed_model_saves_and_loads_with_its_method(tmp_path):
    compiled = _split()
    _, ds = _dataset()
    routed = fs.keras.RoutedModel(_model(), compiled, weighting=fs.weighting.uncertainty())
    routed.compile(optimizer=keras.optimizers.SGD(LR))
    routed.fit(compiled.apply(ds), epochs=1, verbose=0)
    path = str(tmp_path / "weighted.keras")
    routed.save(path)
    with pytest.raises(fs.SpecError, match="custom_objects") as info:
        keras.models.load_model(path)
    assert "fs.weighting.uncertainty(" in str(info.value)
    with pytest.raises(fs.SpecError, match="named 'static'"):
        keras.models.load_model(path, custom_objects={"weighting": fs.weighting.static()})
    loaded = keras.models.load_model(path, custom_objects={"weighting": fs.weighting.uncertainty()})
    assert loaded.weighting.name == "uncertainty"
    np.testing.assert_array_equal(
        loaded.non_trainable_variables[0].numpy(), routed.non_trainable_variables[0].numpy()
    )
    for model in (routed, loaded):  # one more epoch each: the same weights and state
        model.fit(compiled.apply(ds), epochs=1, verbose=0)
    for got, want in zip(_weights(loaded.model), _weights(routed.model)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        loaded.non_trainable_variables[0].numpy(), routed.non_trainable_variables[0].numpy()
    )
