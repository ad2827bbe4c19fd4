"""Tests of funcsplit.keras: RoutedModel (fit / evaluate / predict) and train_step.

Every numerical claim is checked against the same training written by hand: a GradientTape
loop with hand-written masked, weighted losses, on identical initial weights.
"""

import importlib.util
import pathlib
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import funcsplit as fs

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_weights_close(a, b, rtol=1e-5, atol=1e-6):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# A multi-task element: 10 examples in batches of 4, 4, 2 (a ragged last batch). The second
# batch has no label at all (-1 everywhere); the regression target has sample weights.
LABELS = np.array([0, 1, 2, -1, -1, -1, -1, -1, 1, 0], np.int32)


def _multitask_dataset(batch_size=4):
    rng = np.random.default_rng(0)
    data = {
        "x": rng.normal(size=(10, 4)).astype(np.float32),
        "label": LABELS,
        "y": rng.normal(size=(10, 1)).astype(np.float32),
        "w": rng.uniform(0.5, 2.0, size=(10,)).astype(np.float32),
    }
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


def _multitask_split(ds):
    return fs.compile(
        fs.SplitSpec(
            fs.ElementSpec.from_dataset(ds),
            inputs="x",
            losses=(
                fs.LossBinding(
                    "cls",
                    "sparse_categorical_crossentropy",
                    target="label",
                    output="cls",
                    route=fs.route("label", not_equal=-1),
                ),
                fs.LossBinding(
                    "reg", "mse", target="y", output="reg", weight=0.5, sample_weight="w"
                ),
            ),
        )
    )


def _multitask_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {
        "cls": keras.layers.Dense(3, activation="softmax")(hidden),
        "reg": keras.layers.Dense(1)(hidden),
    }
    return keras.Model(inputs, outputs)


def _twin_models(make):
    keras.utils.set_random_seed(0)
    first, second = make(), make()
    second.set_weights(first.get_weights())
    return first, second


def _hand_losses(batch, out):
    """The multi-task losses written by hand: masked mean CE, weighted mean MSE."""
    label = batch["label"]
    mask = tf.cast(label != -1, tf.float32)
    ce = keras.losses.sparse_categorical_crossentropy(tf.where(label != -1, label, 0), out["cls"])
    cls = tf.math.divide_no_nan(tf.reduce_sum(ce * mask), tf.reduce_sum(mask))
    se = tf.reduce_mean(tf.square(batch["y"] - out["reg"]), axis=-1)
    reg = tf.reduce_sum(se * batch["w"]) / tf.reduce_sum(batch["w"])
    return cls, reg, cls + 0.5 * reg


def _hand_training(model, optimizer, ds, epochs):
    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            total = _hand_losses(batch, model(batch["x"], training=True))[2]
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return total

    for _ in range(epochs):
        for batch in ds:
            assert np.isfinite(step(batch).numpy())


OPTIMIZERS = {"sgd": lambda: keras.optimizers.SGD(0.1), "adam": lambda: keras.optimizers.Adam(0.01)}


# --- RoutedModel -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("optimizer", "jit_compile"),
    [("sgd", False), ("adam", False), ("adam", True)],
    ids=["sgd", "adam", "adam-xla"],
)
def test_fit_equals_hand_written_masked_loop(optimizer, jit_compile):
    # XLA compiles each batch shape anew (slow on CPU): one shape there; the ragged last
    # batch and the all-missing batch are covered without XLA.
    ds = _multitask_dataset(batch_size=5 if jit_compile else 4)
    compiled = _multitask_split(ds)
    model, reference = _twin_models(_multitask_model)
    routed = fs.keras.RoutedModel(model, compiled)
    routed.compile(optimizer=OPTIMIZERS[optimizer](), jit_compile=jit_compile)
    history = routed.fit(compiled.apply(ds), epochs=2, verbose=0)
    assert routed.jit_compile is jit_compile
    _hand_training(reference, OPTIMIZERS[optimizer](), ds, epochs=2)
    _assert_weights_close(model.get_weights(), reference.get_weights())
    assert set(history.history) == {"loss", "cls_loss", "reg_loss"}
    assert all(np.isfinite(v) for vs in history.history.values() for v in vs)


def test_logs_are_exact_epoch_means_and_metrics_see_routed_examples():
    ds = _multitask_dataset()
    compiled = _multitask_split(ds)
    keras.utils.set_random_seed(0)
    model = _multitask_model()
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    routed = fs.keras.RoutedModel(model, compiled, metrics={"cls": [accuracy]})
    routed.compile(
        optimizer="sgd",
        metrics={"reg": [keras.metrics.MeanAbsoluteError()]},
        weighted_metrics={"reg": [keras.metrics.MeanSquaredError()]},
    )
    logs = routed.evaluate(compiled.apply(ds), return_dict=True, verbose=0)

    totals, cls_sum, cls_count, sizes = [], 0.0, 0.0, []
    correct, abs_err, sq_err, weights = [], [], [], []
    for batch in ds:
        out = model(batch["x"])
        cls, _, total = _hand_losses(batch, out)
        routed_mask = batch["label"].numpy() != -1
        totals.append(float(total))
        sizes.append(len(routed_mask))
        cls_sum += float(cls) * routed_mask.sum()
        cls_count += routed_mask.sum()
        predicted = np.argmax(out["cls"].numpy(), axis=-1)
        correct.extend(predicted[routed_mask] == batch["label"].numpy()[routed_mask])
        err = batch["y"].numpy()[:, 0] - out["reg"].numpy()[:, 0]
        abs_err.extend(np.abs(err))
        sq_err.extend(err**2 * batch["w"].numpy())
        weights.extend(batch["w"].numpy())
    reg_all = np.sum(sq_err) / np.sum(weights)

    assert set(logs) == {
        "loss",
        "cls_loss",
        "reg_loss",
        "cls_sparse_categorical_accuracy",
        "reg_mean_absolute_error",
        "reg_mean_squared_error",
    }
    np.testing.assert_allclose(logs["loss"], np.average(totals, weights=sizes), rtol=1e-5)
    # Per binding, batches count by their routed examples: the all-missing batch adds nothing.
    np.testing.assert_allclose(logs["cls_loss"], cls_sum / cls_count, rtol=1e-5)
    np.testing.assert_allclose(logs["cls_sparse_categorical_accuracy"], np.mean(correct))
    np.testing.assert_allclose(logs["reg_mean_absolute_error"], np.mean(abs_err), rtol=1e-5)
    np.testing.assert_allclose(logs["reg_mean_squared_error"], reg_all, rtol=1e-5)
    np.testing.assert_allclose(accuracy.count.numpy(), (LABELS != -1).sum())


class _NestedHeads(keras.Model):
    def __init__(self):
        super().__init__()
        self.trunk = keras.layers.Dense(8, activation="relu")
        self.a = keras.layers.Dense(3, activation="softmax")
        self.b = keras.layers.Dense(1)

    def call(self, x):
        h = self.trunk(x)
        return {"heads": {"a": self.a(h), "b": self.b(h)}}


class _ListHeads(_NestedHeads):
    def call(self, x):
        h = self.trunk(x)
        return [self.a(h), self.b(h)]


def _functional(structure):
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    a, b = keras.layers.Dense(3, activation="softmax")(h), keras.layers.Dense(1)(h)
    return keras.Model(inputs, (a, b) if structure == "tuple" else {"a": a, "b": b})


def _single():
    reg = keras.regularizers.L2(0.1)
    dense = keras.layers.Dense(3, activation="softmax", kernel_regularizer=reg)
    return keras.Sequential([keras.Input((4,)), dense])


def _heads(out):
    """The ("a", "b") predictions of each structure (b is None for one output)."""
    if isinstance(out, dict):
        out = out.get("heads", out)
        return out["a"], out["b"]
    return (out[0], out[1]) if isinstance(out, (list, tuple)) else (out, None)


STRUCTURES = {
    # name: (model factory, output path of "a", output path of "b" or None for one output)
    "single-sequential-regularized": (_single, None, None),
    "tuple-functional": (lambda: _functional("tuple"), "0", "1"),
    "dict-functional": (lambda: _functional("dict"), "a", "b"),
    "nested-dict-subclassed": (_NestedHeads, "heads/a", "heads/b"),
    "list-subclassed": (_ListHeads, "0", "1"),
}


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_output_structures(name):
    make, out_a, out_b = STRUCTURES[name]
    rng = np.random.default_rng(1)
    batch = {
        "x": rng.normal(size=(4, 4)).astype(np.float32),
        "label": np.array([0, 2, 1, 0], np.int32),
        "y": rng.normal(size=(4, 1)).astype(np.float32),
    }
    ds = tf.data.Dataset.from_tensor_slices(batch).batch(4)
    losses = [fs.LossBinding("a", "sparse_categorical_crossentropy", target="label", output=out_a)]
    if out_b is not None:
        losses.append(fs.LossBinding("b", "mse", target="y", output=out_b, weight=2.0))
    drop = () if out_b else ("y",)
    compiled = fs.compile(fs.SplitSpec(fs.ElementSpec.from_dataset(ds), "x", losses, drop))
    keras.utils.set_random_seed(0)
    model = make()
    a_out, b_out = _heads(model(batch["x"]))
    expected = {"a": np.mean(keras.losses.sparse_categorical_crossentropy(batch["label"], a_out))}
    if out_b is not None:
        expected["b"] = np.mean(np.square(batch["y"] - b_out.numpy()))
    total = expected["a"] + 2.0 * expected.get("b", 0.0)
    total += sum(float(tf.reduce_sum(v)) for v in model.losses)  # the L2 penalty, if any

    routed = fs.keras.RoutedModel(model, compiled)
    routed.compile(optimizer=keras.optimizers.SGD(0.01))
    # One batch: the logs hold the values at the initial weights.
    history = routed.fit(compiled.apply(ds), epochs=1, verbose=0).history
    assert set(history) == {"loss", *(f"{k}_loss" for k in expected)}
    for key, value in expected.items():
        np.testing.assert_allclose(history[f"{key}_loss"][0], value, rtol=1e-5)
    np.testing.assert_allclose(history["loss"][0], total, rtol=1e-5)
    assert not np.allclose(_heads(model(batch["x"]))[0], a_out)  # it trained


def test_validation_predict_and_saved_inner_model_need_no_funcsplit(tmp_path):
    ds = _multitask_dataset()
    compiled = _multitask_split(ds)
    keras.utils.set_random_seed(0)
    routed = fs.keras.RoutedModel(_multitask_model(), compiled)
    routed.compile(optimizer="sgd")
    history = routed.fit(compiled.apply(ds), validation_data=compiled.apply(ds), verbose=0)
    assert {"val_loss", "val_cls_loss", "val_reg_loss"} <= set(history.history)
    predicted = routed.predict(compiled.apply(ds), verbose=0)
    path = tmp_path / "model.keras"
    routed.model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "funcsplit" not in archive.read("config.json").decode()
    reloaded = keras.models.load_model(path)
    x = np.concatenate([b["x"] for b in ds.as_numpy_iterator()])
    for key in ("cls", "reg"):
        np.testing.assert_allclose(reloaded.predict(x, verbose=0)[key], predicted[key], rtol=1e-5)


def test_routed_model_argument_errors():
    ds = _multitask_dataset()
    compiled = _multitask_split(ds)
    model = _multitask_model()
    with pytest.raises(fs.SpecError, match="CompiledSplit"):
        fs.keras.RoutedModel(model, compiled.spec)
    with pytest.raises(fs.SpecError, match=r"did you mean: cls"):
        fs.keras.RoutedModel(model, compiled, metrics={"clss": [keras.metrics.Accuracy()]})
    with pytest.raises(fs.SpecError, match=r"keras\.metrics\.Metric"):
        fs.keras.RoutedModel(model, compiled, metrics={"cls": ["accuracy"]})
    routed = fs.keras.RoutedModel(model, compiled)
    with pytest.raises(fs.SpecError, match="loss"):
        routed.compile(optimizer="sgd", loss="mse")
    routed.compile(optimizer="sgd")
    with pytest.raises(fs.SpecError, match=r"fit\(compiled\.apply\(ds\)\)"):
        routed.fit(ds, epochs=1, verbose=0)  # the raw dataset, not compiled.apply(ds)
    with pytest.raises(fs.SpecError, match=r"evaluate\(compiled\.apply\(ds\)\)"):
        routed.evaluate(ds, verbose=0)


# --- train_step ---------------------------------------------------------------------------


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_train_step_without_groups_equals_hand_written_masked_loop(jit_compile):
    # XLA compiles each batch shape anew (slow on CPU): one shape there; the ragged last
    # batch and the all-missing batch are covered without XLA.
    ds = _multitask_dataset(batch_size=5 if jit_compile else 4)
    compiled = _multitask_split(ds)
    model, reference = _twin_models(_multitask_model)
    step = fs.keras.train_step(
        compiled, model, keras.optimizers.Adam(0.01), jit_compile=jit_compile
    )
    hand = []
    for _ in range(2):
        for batch in ds:
            hand.append(float(_hand_losses(batch, model(batch["x"]))[2]))
            result = step(compiled.split(batch))
            np.testing.assert_allclose(float(result.total), hand[-1], rtol=1e-5)
    assert step.experimental_get_tracing_count() == 1  # batches of 4 and 2, one trace
    _hand_training(reference, keras.optimizers.Adam(0.01), ds, epochs=2)
    _assert_weights_close(model.get_weights(), reference.get_weights())


def test_seed_example_1_two_models_equals_hand_written_loop():
    seed = _example("seed_1_two_models")
    # The seed's element (image, label, text), with smaller images to keep the test fast.
    images = tf.random.stateless_normal((30, 16, 16, 3), seed=(0, 1))
    labels = tf.random.stateless_uniform((30,), seed=(0, 2), maxval=10, dtype=tf.int32)
    texts = tf.random.stateless_uniform((30, 20), seed=(0, 3), maxval=100, dtype=tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels, texts)).batch(10)
    compiled = fs.compile(seed.make_split(ds))
    first = next(iter(ds))
    keras.utils.set_random_seed(0)
    models = {"image": seed.ImageClassifier(), "text": seed.TextGenerator()}
    hand_models = {"image": seed.ImageClassifier(), "text": seed.TextGenerator()}
    for key, part in (("image", 0), ("text", 2)):
        models[key](first[part]), hand_models[key](first[part])
        hand_models[key].set_weights(models[key].get_weights())
    step = fs.keras.train_step(
        compiled, models, {k: keras.optimizers.Adam(1e-3) for k in ("image", "text")}
    )
    image_model, text_model = hand_models["image"], hand_models["text"]
    optimizer_image, optimizer_text = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def hand_step(image, label, text):  # the seed's step, with a real next-token text loss
        with tf.GradientTape(persistent=True) as tape:
            image_loss = cross_entropy(label, image_model(image))
            logits = text_model(text)[:, :-1]
            text_loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(text[:, 1:], logits, from_logits=True)
            )
        gradients_image = tape.gradient(image_loss, image_model.trainable_variables)
        gradients_text = tape.gradient(text_loss, text_model.trainable_variables)
        optimizer_image.apply_gradients(zip(gradients_image, image_model.trainable_variables))
        optimizer_text.apply_gradients(zip(gradients_text, text_model.trainable_variables))
        return image_loss, text_loss

    for element, raw in zip(compiled.apply(ds), ds):
        result = step(element)
        image_loss, text_loss = hand_step(*raw)
        np.testing.assert_allclose(float(result.per_loss["label"]), float(image_loss), rtol=1e-5)
        np.testing.assert_allclose(float(result.per_loss["text"]), float(text_loss), rtol=1e-5)
    for key in models:
        _assert_weights_close(models[key].get_weights(), hand_models[key].get_weights(), 1e-4)


def _grouped_split():
    spec = fs.ElementSpec.from_structure(
        {"a": fs.Leaf(tf.float32, (None, 2)), "b": fs.Leaf(tf.float32, (None, 3))}
    )
    losses = (
        fs.LossBinding("la", "mse", target="a", group="ga"),
        fs.LossBinding("lb", "mse", target="b", group="gb"),
    )
    return fs.compile(fs.SplitSpec(spec, inputs={"ga": "b", "gb": "a"}, losses=losses))


def test_train_step_shared_optimizer_equals_separate_optimizers():
    compiled = _grouped_split()
    element = {"a": tf.ones((4, 2)), "b": tf.fill((4, 3), 0.5)}
    keras.utils.set_random_seed(0)
    models = {"ga": keras.layers.Dense(2), "gb": keras.layers.Dense(3)}
    twins = {"ga": keras.layers.Dense(2), "gb": keras.layers.Dense(3)}
    for g, x in (("ga", element["b"]), ("gb", element["a"])):
        models[g](x), twins[g](x)
        twins[g].set_weights(models[g].get_weights())
    shared = keras.optimizers.Adam(0.1)
    step = fs.keras.train_step(compiled, models, {"ga": shared, "gb": shared})
    twin_step = fs.keras.train_step(
        compiled, twins, {"ga": keras.optimizers.Adam(0.1), "gb": keras.optimizers.Adam(0.1)}
    )
    for _ in range(3):
        step(compiled.split(element)), twin_step(compiled.split(element))
    for g in models:
        _assert_weights_close(models[g].get_weights(), twins[g].get_weights())


def _argument_cases():
    dense, sgd = keras.layers.Dense(1), keras.optimizers.SGD()
    grouped, plain = _grouped_split(), _multitask_split(_multitask_dataset())
    two = {"ga": keras.layers.Dense(2), "gb": keras.layers.Dense(3)}
    opts = {"ga": sgd, "gb": sgd}
    return {
        "not-a-compiled-split": (grouped.spec, two, opts, "CompiledSplit"),
        "missing-group-model": (grouped, {"ga": dense}, opts, r"no entry for \['gb'\]"),
        "unknown-group-optimizer": (grouped, two, {**opts, "gc": sgd}, r"unknown keys \['gc'\]"),
        "optimizer-by-name": (grouped, two, {"ga": "adam", "gb": sgd}, "Optimizer instance"),
        "one-model-for-groups": (grouped, dense, opts, "a dict keyed by the groups"),
        "same-model-two-groups": (grouped, {"ga": dense, "gb": dense}, opts, "the same model"),
        "dicts-without-groups": (plain, {"x": dense}, {"x": sgd}, "the split has no groups"),
        "not-a-model": (plain, lambda x: x, sgd, "a Keras model"),
    }


@pytest.mark.parametrize("case", list(_argument_cases()))
def test_train_step_argument_errors(case):
    compiled, models, optimizers, message = _argument_cases()[case]
    with pytest.raises(fs.SpecError, match=message):
        fs.keras.train_step(compiled, models, optimizers)


def test_train_step_rejects_shared_variables_and_unknown_elements():
    compiled = _grouped_split()
    element = {"a": tf.ones((4, 2)), "b": tf.ones((4, 3))}
    shared = keras.layers.Dense(2)  # ga: b (3 features) -> a (2); gb: a (2) -> b (3)
    gb = keras.Sequential([keras.layers.Dense(3), shared, keras.layers.Dense(3)])
    models = {"ga": shared, "gb": gb}
    sgd = keras.optimizers.SGD()
    step = fs.keras.train_step(compiled, models, {"ga": sgd, "gb": keras.optimizers.SGD()})
    with pytest.raises(fs.SpecError, match=r"in groups 'ga' and 'gb'"):
        step(compiled.split(element))
    step = fs.keras.train_step(
        compiled,
        {"ga": keras.layers.Dense(2), "gb": keras.layers.Dense(3)},
        {"ga": sgd, "gb": keras.optimizers.SGD()},
    )
    with pytest.raises(fs.SpecError, match=r"a raw element of the split's element spec"):
        step({"a": tf.ones((4, 2))})
    with pytest.raises(fs.SpecError, match=r"dataset \(batched\) at path 'b'"):
        step({"a": tf.ones((4, 2)), "b": tf.ones((4, 5))})


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_train_step_takes_the_raw_element_and_the_split_triple(jit):
    """Issue 13 item 3: the seed's ``for batch in dataset: train_step(batch)``."""
    compiled = _grouped_split()
    batches = [{"a": tf.fill((n, 2), float(n)), "b": tf.fill((n, 3), 0.5)} for n in (4, 3, 5)]

    def train(raw: bool) -> list:
        keras.utils.set_random_seed(0)
        models = {"ga": keras.layers.Dense(2), "gb": keras.layers.Dense(3)}
        optimizers = {"ga": keras.optimizers.SGD(0.1), "gb": keras.optimizers.SGD(0.1)}
        step = fs.keras.train_step(compiled, models, optimizers, jit_compile=jit)
        totals = [float(step(b if raw else compiled.split(b)).total) for b in batches]
        assert step.experimental_get_tracing_count() == 1
        return totals + [w.numpy() for m in models.values() for w in m.weights]

    for raw_value, split_value in zip(train(True), train(False)):
        np.testing.assert_allclose(raw_value, split_value, rtol=1e-6)


# --- the seed examples ---------------------------------------------------------------------


def test_examples_run():
    history = _example("seed_1_two_models").main(steps=1, n=10)
    assert len(history) == 1 and all(np.isfinite(history[0]))
    for name, bindings in (
        ("seed_2_label_and_mask", ("label", "mask")),
        ("seed_3_nested_labels", ("category_1", "category_2")),
    ):
        logs = _example(name).main(epochs=1, n=10)
        assert set(logs) == {"loss", *(f"{b}_loss" for b in bindings)}
        assert all(np.isfinite(v[0]) for v in logs.values())
