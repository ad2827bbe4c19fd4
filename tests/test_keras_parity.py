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
