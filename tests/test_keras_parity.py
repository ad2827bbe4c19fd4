"""funcsplit held against Keras's own behaviour, case by case (issue 13).

Each test names the Keras test it mirrors (in the installed package:
``keras/src/trainers/compile_utils_test.py``, ``keras/src/trainers/trainer_test.py``,
``keras/src/losses/loss_test.py``). Each case asserts Keras's value with
``reduction="sum_over_batch_size"`` and the NumPy ``Σ w·l / Σ w`` value with funcsplit's
default. Where funcsplit deliberately differs, the test asserts funcsplit's documented
behaviour (docs/concepts.md, "funcsplit and Keras compile(loss=...)").
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import funcsplit as fs


def _loss(split, element, predictions):
    compiled = fs.compile(split)
    _, targets, weights = compiled.split(element)
    return compiled.loss(targets, predictions, weights)


# --- Per-binding logs (issue 13 item 6) ------------------------------------------------------


def _routed_regression(n=10):
    rng = np.random.default_rng(6)
    data = {
        "x": rng.normal(size=(n, 3)).astype(np.float32),
        "y": rng.normal(size=(n, 1)).astype(np.float32),
        "has_y": np.array([1, 1, 0, 0, 1, 0, 1, 1, 1, 0][:n], np.float32),
    }
    return data


def _routed_model(data, batch_size, reduction):
    ds = tf.data.Dataset.from_tensor_slices(data).batch(batch_size)
    split = fs.SplitSpec(
        fs.ElementSpec.from_dataset(ds),
        inputs="x",
        losses=(
            fs.LossBinding("y", "mse", target="y", route=fs.route("has_y"), reduction=reduction),
        ),
    )
    compiled = fs.compile(split)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    routed = fs.keras.RoutedModel(model, compiled)
    routed.compile(optimizer="sgd")
    return routed, compiled.apply(ds), model


@pytest.mark.parametrize("batch_size", [2, 4, 10])
def test_per_binding_log_under_sum_over_batch_size_is_keras_value(batch_size):
    """Mirrors compile_utils_test.py::TestCompileLoss::test_struct_loss (per-output
    ``<name>_loss`` metrics) and trainer_test.py's logs: the per-output loss tracker weighs
    each batch by its size, so the epoch value is Σ w·l / N, whatever the batch size."""
    data = _routed_regression()
    routed, ds, model = _routed_model(data, batch_size, "sum_over_batch_size")
    logs = routed.evaluate(ds, return_dict=True, verbose=0)
    kernel, bias = (np.asarray(v, np.float64) for v in model.get_weights())
    squared = ((data["x"] @ kernel + bias - data["y"]) ** 2)[:, 0]
    expected = np.sum(data["has_y"] * squared) / len(squared)
    np.testing.assert_allclose(logs["y_loss"], expected, rtol=1e-5)
    # Keras's own value: compile(loss="mse") with the route as the sample weight
    keras_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    keras_model.set_weights(model.get_weights())
    keras_model.compile(loss="mse")
    keras_logs = keras_model.evaluate(
        data["x"], data["y"], sample_weight=data["has_y"], batch_size=batch_size, verbose=0
    )
    np.testing.assert_allclose(logs["y_loss"], keras_logs, rtol=1e-5)


def test_per_binding_log_under_the_default_is_the_routed_mean():
    """funcsplit's default: batches weigh their routed examples, so the epoch value is the
    mean over the routed examples, Σ m·l / Σ m (Keras has no such reduction)."""
    data = _routed_regression()
    routed, ds, model = _routed_model(data, 4, "weighted_mean")
    logs = routed.evaluate(ds, return_dict=True, verbose=0)
    kernel, bias = (np.asarray(v, np.float64) for v in model.get_weights())
    squared = ((data["x"] @ kernel + bias - data["y"]) ** 2)[:, 0]
    expected = np.sum(data["has_y"] * squared) / np.sum(data["has_y"])
    np.testing.assert_allclose(logs["y_loss"], expected, rtol=1e-5)


# --- A Keras Loss object's own reduction (issue 13 item 8) ----------------------------------
# Mirrors losses/loss_test.py::LossTest::test_reduction (None, "sum", "sum_over_batch_size",
# "mean", "mean_with_sample_weight"): what each means when the loss is bound to a binding.

RNG = np.random.default_rng(13)
B = 6
Y = RNG.normal(size=(B, 2)).astype(np.float32)
P = RNG.normal(size=(B, 2)).astype(np.float32)
W = RNG.uniform(0.2, 2.0, size=(B,)).astype(np.float32)
TASK = np.array([1, 0, 1, 1, 0, 1], np.int32)


def _regression_split(fn, **binding):
    spec = fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, (None, 2)),
            "y": fs.Leaf(tf.float32, (None, 2)),
            "w": fs.Leaf(tf.float32),
            "task": fs.Leaf(tf.int32),
        }
    )
    losses = (fs.LossBinding("y", fn, target="y", **binding),)
    return fs.SplitSpec(spec, inputs="x", losses=losses, strict=False)


def _regression_element():
    return {"x": P, "y": Y, "w": W, "task": TASK}


@pytest.mark.parametrize("reduction", [None, "none", "sum_over_batch_size"])
def test_keras_reduction_none_or_default_leaves_the_binding_to_reduce(reduction):
    """loss_test.py::test_reduction: None gives the unreduced values, which the binding
    reduces; Keras's default says nothing a binding must follow (every Loss carries it)."""
    fn = keras.losses.MeanSquaredError(reduction=reduction)
    squared = np.mean((Y.astype(np.float64) - P) ** 2, axis=1)
    for binding, expected in (
        ({"sample_weight": "w"}, np.sum(W * squared) / np.sum(W)),
        (
            {"sample_weight": "w", "reduction": "sum_over_batch_size"},
            np.sum(W * squared) / B,
        ),
    ):
        result = _loss(_regression_split(fn, **binding), _regression_element(), P)
        np.testing.assert_allclose(result.per_loss["y"], expected, rtol=1e-5)
    # Keras's own value under sum_over_batch_size is the second one
    keras_value = keras.losses.MeanSquaredError()(Y, P, sample_weight=W)
    np.testing.assert_allclose(keras_value, np.sum(W * squared) / B, rtol=1e-5)


def test_keras_mean_with_sample_weight_is_funcsplits_default():
    """loss_test.py::test_reduction ("mean_with_sample_weight"): Σ w·l / Σ w, funcsplit's
    default reduction, so it is honoured as it is; with a route the route joins the weights."""
    fn = keras.losses.MeanSquaredError(reduction="mean_with_sample_weight")
    result = _loss(_regression_split(fn, sample_weight="w"), _regression_element(), P)
    np.testing.assert_allclose(result.per_loss["y"], fn(Y, P, sample_weight=W), rtol=1e-5)
    routed = _loss(
        _regression_split(fn, sample_weight="w", route=fs.route("task", equals=1)),
        _regression_element(),
        P,
    )
    keep = TASK == 1
    np.testing.assert_allclose(
        routed.per_loss["y"], fn(Y[keep], P[keep], sample_weight=W[keep]), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("reduction", "binding", "says"),
    [
        ("sum", {}, "grows with the batch size"),
        ("mean", {}, "Keras's 'mean' is its 'sum_over_batch_size'"),
        (
            "mean_with_sample_weight",
            {"reduction": "sum_over_batch_size"},
            "contradicts reduction='sum_over_batch_size'",
        ),
    ],
    ids=["sum", "mean", "mean_with_sample_weight-vs-sum_over_batch_size"],
)
def test_keras_reductions_without_a_per_binding_meaning_are_refused(reduction, binding, says):
    """funcsplit differs deliberately: a Keras Loss's "sum" or "mean" is refused at compile
    time with the reason and the binding option to use, never silently ignored."""
    for fn in (
        keras.losses.MeanSquaredError(reduction=reduction),
        fs.losses.row_wise(keras.losses.Huber(reduction=reduction)),
    ):
        with pytest.raises(fs.SpecError, match="(?s)losses\\[0\\] 'y' fn.*" + says):
            fs.compile(_regression_split(fn, **binding))


# --- Keras masks (issue 13 item 2) -----------------------------------------------------------
# Mirrors losses/loss_test.py::LossTest::test_mask, test_mask_and_sample_weight,
# test_mask_and_sample_weight_rank2 and test_rank_adjustment ("mask"). With m the mask, w the
# sample weight (and route), l the values: Keras's sum_over_batch_size is Σ w·m·l / Σ m;
# funcsplit's default is Σ w·m·l / Σ w·m (the mask multiplies into the weights).


class ExampleLoss(keras.losses.Loss):
    """loss_test.py's ExampleLoss: elementwise squared error, no reduction of its own."""

    def call(self, y_true, y_pred):
        return (y_true - y_pred) ** 2


MASK_Y = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
MASK_P = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
MASK = np.array([True, False, True, True])
MASK_W = np.array([0.4, 0.3, 0.2, 0.1], np.float32)


def _masked(values, mask):
    from keras.src import backend

    tensor = tf.constant(values)
    backend.set_keras_mask(tensor, tf.constant(mask))
    return tensor


def _mask_split(fn, *, y_shape=(None,), **binding):
    spec = fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, y_shape),
            "y": fs.Leaf(tf.float32, y_shape),
            "w": fs.Leaf(tf.float32),
            "task": fs.Leaf(tf.int32),
        }
    )
    losses = (fs.LossBinding("y", fn, target="y", output="p", **binding),)
    return fs.SplitSpec(spec, inputs="x", losses=losses, strict=False)


def _mask_loss(split, y, p, mask, w=MASK_W, task=None, jit=None):
    compiled = fs.compile(split)
    task = np.ones(len(y), np.int32) if task is None else task
    _, targets, weights = compiled.split({"x": y, "y": y, "w": w, "task": task})
    if jit is None:  # eagerly: compiled.loss keeps the mask (a traced call would drop it)
        return compiled.loss(targets, {"p": _masked(p, mask)}, weights)

    @tf.function(jit_compile=jit)
    def run(targets, p, mask, weights):
        from keras.src import backend

        backend.set_keras_mask(p, mask)
        return compiled.loss(targets, {"p": p}, weights)

    return run(targets, tf.constant(p), tf.constant(mask), weights)


@pytest.mark.parametrize("jit", [None, False, True], ids=["eager", "traced", "xla"])
def test_mask(jit):
    """loss_test.py::test_mask: the masked mean, and 0 (no NaN) when everything is masked."""
    squared = (MASK_Y - MASK_P) ** 2
    expected = np.sum(MASK * squared) / MASK.sum()
    for reduction in ("weighted_mean", "sum_over_batch_size"):
        split = _mask_split(ExampleLoss(), reduction=reduction)
        result = _mask_loss(split, MASK_Y, MASK_P, MASK, jit=jit)
        np.testing.assert_allclose(result.per_loss["y"], expected, rtol=1e-5)
        keras_value = ExampleLoss()(MASK_Y, _masked(MASK_P, MASK))
        np.testing.assert_allclose(keras_value, expected, rtol=1e-5)
        nothing = _mask_loss(split, MASK_Y, MASK_P, np.zeros(4, bool), jit=jit)
        assert float(nothing.per_loss["y"]) == 0.0


def test_mask_and_sample_weight():
    """loss_test.py::test_mask_and_sample_weight: Keras divides Σ w·m·l by Σ m; funcsplit's
    default divides by Σ w·m (its Σ w·l / Σ w with the mask in the weights)."""
    squared = (MASK_Y - MASK_P) ** 2
    keras_value = ExampleLoss()(MASK_Y, _masked(MASK_P, MASK), sample_weight=MASK_W)
    np.testing.assert_allclose(keras_value, np.sum(MASK_W * MASK * squared) / 3, rtol=1e-5)
    ours = _mask_loss(
        _mask_split(ExampleLoss(), sample_weight="w", reduction="sum_over_batch_size"),
        MASK_Y,
        MASK_P,
        MASK,
    )
    np.testing.assert_allclose(ours.per_loss["y"], keras_value, rtol=1e-5)
    default = _mask_loss(_mask_split(ExampleLoss(), sample_weight="w"), MASK_Y, MASK_P, MASK)
    expected = np.sum(MASK_W * MASK * squared) / np.sum(MASK_W * MASK)
    np.testing.assert_allclose(default.per_loss["y"], expected, rtol=1e-5)


def test_mask_and_sample_weight_rank2():
    """loss_test.py::test_mask_and_sample_weight_rank2: per-timestep values [B, T] under a
    [B, T] mask, per-example weights (funcsplit's sample weights are per example: Keras gets
    them as [B, 1]); duplicated rows do not change the value."""
    y = np.tile(MASK_Y, (2, 1))
    p = np.tile(MASK_P, (2, 1))
    mask = np.tile(MASK, (2, 1))
    w = np.array([0.5, 1.5], np.float32)
    keras_value = ExampleLoss()(y, _masked(p, mask), sample_weight=w[:, None])
    ours = _mask_loss(
        _mask_split(
            ExampleLoss(), y_shape=(None, 4), sample_weight="w", reduction="sum_over_batch_size"
        ),
        y,
        p,
        mask,
        w=w,
    )
    np.testing.assert_allclose(ours.per_loss["y"], keras_value, rtol=1e-5)
    squared = (y - p) ** 2
    weights = w[:, None] * mask
    default = _mask_loss(
        _mask_split(ExampleLoss(), y_shape=(None, 4), sample_weight="w"), y, p, mask, w=w
    )
    np.testing.assert_allclose(
        default.per_loss["y"], np.sum(weights * squared) / np.sum(weights), rtol=1e-5
    )
    # the unweighted masked mean of duplicated rows is the rank-1 value
    plain = _mask_loss(_mask_split(ExampleLoss(), y_shape=(None, 4)), y, p, mask, w=w)
    rank1 = _mask_loss(_mask_split(ExampleLoss()), MASK_Y, MASK_P, MASK)
    np.testing.assert_allclose(plain.per_loss["y"], rank1.per_loss["y"], rtol=1e-6)


def test_rank_adjustment_mask():
    """loss_test.py::test_rank_adjustment ("mask"): a [B, 1] mask over [B] values."""
    squared = (MASK_Y - MASK_P) ** 2
    ours = _mask_loss(
        _mask_split(ExampleLoss(), sample_weight="w", reduction="sum_over_batch_size"),
        MASK_Y,
        MASK_P,
        MASK[:, None],
    )
    np.testing.assert_allclose(ours.per_loss["y"], np.sum(MASK_W * MASK * squared) / 3, rtol=1e-5)


def test_mask_with_a_route_and_a_registry_loss():
    """A route joins the weights: Σ r·w·m·l / Σ r·w·m by default; Keras's value with the route
    as a sample weight under sum_over_batch_size. Per-timestep mse of [B, T, D] predictions."""
    rng = np.random.default_rng(2)
    y = rng.normal(size=(4, 5, 3)).astype(np.float32)
    p = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mask = rng.random((4, 5)) < 0.6
    task = np.array([1, 0, 1, 1], np.int32)
    w = np.array([0.5, 2.0, 1.0, 1.5], np.float32)
    per_step = np.mean((y.astype(np.float64) - p) ** 2, axis=-1)
    weights = (task == 1)[:, None] * w[:, None] * mask
    binding = {"sample_weight": "w", "route": fs.route("task", equals=1)}
    ours = _mask_loss(_mask_split("mse", y_shape=(None, 5, 3), **binding), y, p, mask, w, task)
    np.testing.assert_allclose(
        ours.per_loss["y"], np.sum(weights * per_step) / np.sum(weights), rtol=1e-5
    )
    summed = _mask_loss(
        _mask_split("mse", y_shape=(None, 5, 3), reduction="sum_over_batch_size", **binding),
        y,
        p,
        mask,
        w,
        task,
    )
    keras_value = keras.losses.MeanSquaredError()(
        y, _masked(p, mask), sample_weight=((task == 1) * w)[:, None]
    )
    np.testing.assert_allclose(summed.per_loss["y"], keras_value, rtol=1e-5)
    assert int(ours.counts["y"]) == 3


def test_a_mask_on_a_batch_level_loss_is_refused():
    """funcsplit differs deliberately: a batch-level (scalar) loss cannot be weighted by a
    mask per example; a SpecError says so instead of ignoring the mask."""
    split = _mask_split("dice", y_shape=(None, 4))
    y = np.tile(MASK_Y, (2, 1))
    with pytest.raises(fs.SpecError, match="(?s)binding 'y' fn 'dice'.*Keras mask"):
        _mask_loss(split, y, np.tile(MASK_P, (2, 1)), np.tile(MASK, (2, 1)), w=MASK_W[:2])


def _weights_equal(a, b, rtol=1e-4, atol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _text_data(n=12, steps=6, vocab=9):
    """Token sequences padded with 0 at the end (lengths 1..steps) and their next tokens."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, steps + 1, size=n)
    tokens = rng.integers(1, vocab, size=(n, steps)).astype(np.int32)
    tokens[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    following = np.concatenate([tokens[:, 1:], np.zeros((n, 1), np.int32)], axis=1)
    return {"tokens": tokens, "next": following}


class MaskedTextGenerator(keras.Model):
    """The seed's Example 1 text model with Embedding(mask_zero=True): its output carries the
    mask of the padding, which a GRU and a Dense pass on."""

    def __init__(self, vocab=9):
        super().__init__()
        self.embedding = keras.layers.Embedding(vocab, 8, mask_zero=True)
        self.gru = keras.layers.GRU(8, return_sequences=True, return_state=True)
        self.dense = keras.layers.Dense(vocab, activation="softmax")

    def call(self, x):
        output, _ = self.gru(self.embedding(x))
        return self.dense(output)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "weighted_mean"])
def test_fit_parity_on_a_masked_sequence_model(reduction):
    """trainer_test.py's fit with a masked output, and compile_utils' masked losses: a
    RoutedModel trains the same weights as keras compile(loss=...) with reduction
    "sum_over_batch_size" (Σ m·l / Σ m), and so does funcsplit's default, which without
    sample weights is the same masked mean. Without the mask the weights would differ."""
    data = _text_data()
    ds = tf.data.Dataset.from_tensor_slices(data).batch(4)
    loss = fs.LossBinding(
        "next", "sparse_categorical_crossentropy", target="next", reduction=reduction
    )
    compiled = fs.compile(fs.SplitSpec(fs.ElementSpec.from_dataset(ds), "tokens", (loss,)))

    keras.utils.set_random_seed(3)
    ours = MaskedTextGenerator()
    ours(data["tokens"][:2])
    theirs = MaskedTextGenerator()
    theirs(data["tokens"][:2])
    theirs.set_weights(ours.get_weights())
    initial = ours.get_weights()

    routed = fs.keras.RoutedModel(ours, compiled)
    routed.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
    history = routed.fit(compiled.apply(ds), epochs=2, verbose=0, shuffle=False)
    theirs.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss="sparse_categorical_crossentropy",
        jit_compile=False,
    )
    keras_history = theirs.fit(
        data["tokens"], data["next"], batch_size=4, epochs=2, verbose=0, shuffle=False
    )
    _weights_equal(ours.get_weights(), theirs.get_weights())
    np.testing.assert_allclose(history.history["loss"], keras_history.history["loss"], rtol=1e-5)
    moved = max(np.abs(a - b).max() for a, b in zip(initial, ours.get_weights()))
    assert moved > 1e-3


# --- Multi-output losses: compile_utils_test.py::TestCompileLoss ----------------------------

T1 = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], np.float32)
T2 = np.array([[0.7, 0.8], [0.9, 1.0], [1.1, 1.2]], np.float32)
P1 = np.array([[1.2, 1.1], [1.0, 0.9], [0.8, 0.7]], np.float32)
P2 = np.array([[0.6, 0.5], [0.4, 0.3], [0.2, 0.1]], np.float32)
SW_A = np.array([1.0, 2.0, 3.0], np.float32)
SW_B = np.array([3.0, 2.0, 1.0], np.float32)


def _np_values(name, y, p):
    error = p.astype(np.float64) - y
    return np.mean(error**2 if name == "mse" else np.abs(error), axis=-1)


def _multi_output(element, losses, predictions, *, reductions=("sum_over_batch_size",)):
    """funcsplit's total for the bindings ``(name, fn, target, output, weight, sample)``,
    once per reduction, and the NumPy reference of each."""
    spec = fs.ElementSpec.from_structure(
        tf.nest.map_structure(lambda v: tf.TensorSpec((None, *v.shape[1:]), v.dtype), element)
    )
    out = {}
    for reduction in reductions:
        bindings = tuple(
            fs.LossBinding(
                name,
                fn,
                target=target,
                output=output,
                weight=weight,
                sample_weight=sample,
                reduction=reduction,
            )
            for name, fn, target, output, weight, sample in losses
        )
        split = fs.SplitSpec(spec, inputs=(), losses=bindings, strict=False)
        out[reduction] = _loss(split, element, predictions)
    return out


def _np_total(losses, element, predictions, reduction):
    total = 0.0
    for _, fn, target, output, weight, sample in losses:
        get = lambda tree, path: tree[path] if isinstance(path, str) else _get(tree, path)
        values = _np_values(fn, get(element, target), get(predictions, output))
        w = np.ones(len(values)) if sample is None else get(element, sample)
        denominator = len(values) if reduction == "sum_over_batch_size" else np.sum(w)
        total += weight * np.sum(w * values) / denominator
    return total


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def test_single_output_case():
    """compile_utils_test.py::TestCompileLoss::test_single_output_case (0.068333)."""
    from keras.src.trainers.compile_utils import CompileLoss

    element = {"y": T1[:, :2]}
    y_pred = np.array([[0.4, 0.1], [0.2, 0.6], [0.6, 0.1]], np.float32)
    losses = [("y", "mse", "y", None, 1.0, None)]
    result = _multi_output(element, losses, y_pred, reductions=("sum_over_batch_size",))
    keras_value = CompileLoss(loss=keras.losses.MeanSquaredError())(element["y"], y_pred)
    np.testing.assert_allclose(keras_value, 0.068333, atol=1e-5)
    np.testing.assert_allclose(result["sum_over_batch_size"].total, keras_value, rtol=1e-5)


@pytest.mark.parametrize("case", ["list", "dict", "list_loss_dict_data"])
def test_list_and_dict_output_cases(case):
    """compile_utils_test.py::TestCompileLoss::test_list_output_case (0.953333),
    test_dict_output_case with per-output sample weights (1.266666),
    test_list_loss_dict_data (1.07666): each output its binding, by path."""
    from keras.src.trainers.compile_utils import CompileLoss

    if case == "list":
        element = {"t": (T1, T2)}
        predictions = (P1, P2)
        losses = [
            ("a", "mse", ("t", 0), fs.Path((0,)), 1.0, None),
            ("b", "mse", ("t", 1), fs.Path((1,)), 1.0, None),
        ]
        keras_value = CompileLoss(loss=["mse", "mse"])([T1, T2], [P1, P2])
        literal = 0.953333
    elif case == "dict":
        element = {"a": T1, "b": T2, "w_a": SW_A, "w_b": SW_B}
        predictions = {"a": P1, "b": P2}
        losses = [("a", "mse", "a", "a", 1.0, "w_a"), ("b", "mse", "b", "b", 1.0, "w_b")]
        compile_loss = CompileLoss(loss={"a": "mse", "b": "mse"})
        keras_value = compile_loss({"a": T1, "b": T2}, predictions, {"a": SW_A, "b": SW_B})
        literal = 1.266666
    else:
        element = {"a": T1, "b": T2}
        predictions = {"a": P1, "b": P2}
        losses = [("b", "mse", "b", "b", 1.0, None), ("a", "mae", "a", "a", 1.0, None)]
        keras_value = CompileLoss(loss=["mse", "mae"], output_names=["b", "a"])(
            {"a": T1, "b": T2}, predictions
        )
        literal = 1.07666
    np.testing.assert_allclose(keras_value, literal, atol=1e-5)
    result = _multi_output(
        element, losses, predictions, reductions=("sum_over_batch_size", "weighted_mean")
    )
    np.testing.assert_allclose(result["sum_over_batch_size"].total, keras_value, rtol=1e-5)
    np.testing.assert_allclose(
        result["weighted_mean"].total,
        _np_total(losses, element, predictions, "weighted_mean"),
        rtol=1e-5,
    )


@pytest.mark.parametrize("container", ["dict", "tuple", "namedtuple"])
def test_struct_loss(container):
    """compile_utils_test.py::TestCompileLoss::test_struct_loss, test_struct_loss_indice_path,
    test_struct_loss_namedtuple (1.07666): losses on nested outputs, by nested paths."""
    import collections

    point = collections.namedtuple("Point", ["x", "y"])
    if container == "dict":
        pair_true, pair_pred, keys = {"c": T1, "d": T2}, {"c": P1, "d": P2}, ("c", "d")
    elif container == "tuple":
        pair_true, pair_pred, keys = (T1, T2), (P1, P2), (0, 1)
    else:
        pair_true, pair_pred, keys = point(T1, T2), point(P1, P2), ("x", "y")
    element = {"a": pair_true, "b": T2}
    predictions = {"a": pair_pred, "b": P2}
    out = [fs.Path(("a", k)) for k in keys]
    losses = [
        ("c", "mse", fs.Path(("a", keys[0])), out[0], 1.0, None),
        ("d", "mae", fs.Path(("a", keys[1])), out[1], 1.0, None),
    ]
    result = _multi_output(element, losses, predictions)
    np.testing.assert_allclose(result["sum_over_batch_size"].total, 1.07666, atol=1e-5)
    assert set(result["sum_over_batch_size"].per_loss) == {"c", "d"}  # b has no loss


def test_struct_loss_valid_weights():
    """compile_utils_test.py::TestCompileLoss::test_struct_loss_valid_weights: loss weights
    1 and 0 give 4; the per-output values stay unweighted (4 and 4). Rank-1 targets and
    predictions: Keras's mean over the batch equals funcsplit's per-example mean here."""
    element = {"a": np.array([1.0, 2.0], np.float32), "b": np.array([1.0, 2.0], np.float32)}
    predictions = {"a": np.array([3.0, 4.0], np.float32), "b": np.array([3.0, 4.0], np.float32)}
    losses = [("a", "mse", "a", "a", 1.0, None), ("b", "mse", "b", "b", 0.0, None)]
    for reduction, result in _multi_output(
        element, losses, predictions, reductions=("sum_over_batch_size", "weighted_mean")
    ).items():
        np.testing.assert_allclose(result.total, 4.0, err_msg=reduction)
        np.testing.assert_allclose([result.per_loss["a"], result.per_loss["b"]], [4.0, 4.0])


def test_a_path_not_in_the_outputs_is_named():
    """compile_utils_test.py::TestCompileLoss::test_struct_loss_invalid_path: Keras raises
    KeyError "can't be found in the model's output"; funcsplit a SpecError naming the path."""
    element = {"a": {"c": T1}, "b": T2}
    losses = [("d", "mae", "b", "b/d", 1.0, None)]
    with pytest.raises(fs.SpecError, match="b/d"):
        _multi_output(element, losses, {"a": {"c": P1}, "b": P2})


# --- fit: a 2-output model, loss weights, per-output sample weights -------------------------


def _two_output_model(seed):
    keras.utils.set_random_seed(seed)
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(5, activation="tanh")(x)
    outputs = {
        "a": keras.layers.Dense(2, name="a")(h),
        "b": keras.layers.Dense(3, activation="softmax", name="b")(h),
    }
    return keras.Model(x, outputs)


def _two_output_bindings():
    return (
        fs.LossBinding(
            "a",
            "mse",
            target="ya",
            output="a",
            weight=0.5,
            sample_weight="wa",
            reduction="sum_over_batch_size",
        ),
        fs.LossBinding(
            "b",
            "sparse_categorical_crossentropy",
            target="yb",
            output="b",
            weight=2.0,
            sample_weight="wb",
            reduction="sum_over_batch_size",
        ),
    )


def _two_output_data(n):
    rng = np.random.default_rng(5)
    return {
        "x": rng.normal(size=(n, 4)).astype(np.float32),
        "ya": rng.normal(size=(n, 2)).astype(np.float32),
        "yb": rng.integers(0, 3, size=n).astype(np.int32),
        "wa": rng.uniform(0.0, 2.0, size=n).astype(np.float32),
        "wb": rng.uniform(0.0, 2.0, size=n).astype(np.float32),
    }


@pytest.mark.parametrize("jit_compile", [False, True], ids=["no-xla", "xla"])
def test_fit_parity_two_outputs_loss_weights_and_sample_weights(jit_compile):
    """trainer_test.py's multi-output fit: a 2-output model with loss_weights and
    per-output sample weights; RoutedModel with reduction="sum_over_batch_size" trains the
    same weights and logs the same History (keys loss, a_loss, b_loss and their values) as
    keras compile(loss=..., loss_weights=...), with and without XLA."""
    data = _two_output_data(12)  # whole batches: with a partial one see the next test
    ds = tf.data.Dataset.from_tensor_slices(data).batch(4)
    compiled = fs.compile(
        fs.SplitSpec(fs.ElementSpec.from_dataset(ds), "x", _two_output_bindings())
    )
    ours, theirs = _two_output_model(0), _two_output_model(1)
    theirs.set_weights(ours.get_weights())
    initial = ours.get_weights()

    routed = fs.keras.RoutedModel(ours, compiled)
    routed.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    history = routed.fit(compiled.apply(ds), epochs=2, verbose=0, shuffle=False).history
    theirs.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
        loss_weights={"a": 0.5, "b": 2.0},
        jit_compile=jit_compile,
    )
    keras_history = theirs.fit(
        data["x"],
        {"a": data["ya"], "b": data["yb"]},
        sample_weight={"a": data["wa"], "b": data["wb"]},
        batch_size=4,
        epochs=2,
        verbose=0,
        shuffle=False,
    ).history
    _weights_equal(ours.get_weights(), theirs.get_weights())
    assert sorted(history) == sorted(keras_history) == ["a_loss", "b_loss", "loss"]
    for key, values in keras_history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-5, err_msg=key)
    assert max(np.abs(a - b).max() for a, b in zip(initial, ours.get_weights())) > 1e-3


def test_per_output_logs_with_a_partial_batch_differ_deliberately():
    """compile_utils.py's CompileLoss feeds each per-output tracker
    ``sample_weight=y_pred.shape[0]``, the static batch dimension, which is None in a traced
    step: with a partial last batch Keras's ``<output>_loss`` is the plain mean of the
    batches' values. funcsplit weighs each batch by its size, so its log is the exact
    Σ w·l / N and does not depend on the batching (docs/concepts.md). The totals agree."""
    data = _two_output_data(10)  # batches of 4, 4, 2
    ds = tf.data.Dataset.from_tensor_slices(data).batch(4)
    compiled = fs.compile(
        fs.SplitSpec(fs.ElementSpec.from_dataset(ds), "x", _two_output_bindings())
    )
    model = _two_output_model(0)
    routed = fs.keras.RoutedModel(model, compiled)
    routed.compile(optimizer="sgd")
    logs = routed.evaluate(compiled.apply(ds), return_dict=True, verbose=0)
    model.compile(
        loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
        loss_weights={"a": 0.5, "b": 2.0},
    )
    keras_logs = model.evaluate(
        data["x"],
        {"a": data["ya"], "b": data["yb"]},
        sample_weight={"a": data["wa"], "b": data["wb"]},
        batch_size=4,
        return_dict=True,
        verbose=0,
    )
    squared = np.mean((model.predict(data["x"], verbose=0)["a"] - data["ya"]) ** 2, axis=1)
    weighted = data["wa"].astype(np.float64) * squared
    batches = [slice(0, 4), slice(4, 8), slice(8, 10)]
    batch_values = [weighted[b].sum() / len(weighted[b]) for b in batches]
    np.testing.assert_allclose(logs["a_loss"], weighted.sum() / 10, rtol=1e-5)
    np.testing.assert_allclose(keras_logs["a_loss"], np.mean(batch_values), rtol=1e-5)
    assert abs(logs["a_loss"] - keras_logs["a_loss"]) > 1e-3
    np.testing.assert_allclose(logs["loss"], keras_logs["loss"], rtol=1e-5)
