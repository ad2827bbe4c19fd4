"""Properties of the loss: exact reduction, safe routing, and agreement of eager, traced, XLA.

Each value is checked against a plain NumPy reference written here by hand:
``per_loss = Σ w·l / Σ w`` over the routed examples (``Σ w·l / B`` for
``sum_over_batch_size``), ``total = Σ weight·per_loss``, for mse, mae, huber, a user
callable, and sparse cross-entropy; with rank-1 predictions and Keras masks too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import assume
from hypothesis import given
from hypothesis import strategies as st

import funcsplit as fs
from funcsplit.testing import strategies as fst

NUMERIC = (tf.float32, tf.float64, tf.int32, tf.int64, tf.uint8, tf.bool)
# Numbers stay within 1e4 so float32 sums are exact to ~1e-6 relative.
MAGNITUDE = 1e4


pytestmark = pytest.mark.usefixtures("quiet_retracing_warnings")


# -------------------------------------------------------------------------- NumPy reference


def get(node: Any, keys: tuple) -> Any:
    for key in keys:
        node = getattr(node, key) if isinstance(key, str) and isinstance(node, tuple) else node[key]
    return node


def flatten(node: Any) -> list:
    """Leaves in `tf.nest` order (dict keys sorted), for pairing targets and predictions."""
    if isinstance(node, Mapping):
        return [leaf for key in sorted(node) for leaf in flatten(node[key])]
    if isinstance(node, (list, tuple)):
        return [leaf for value in node for leaf in flatten(value)]
    return [node]


def kind_of(fn: Any) -> str:
    if fn is fst.leafwise_squared_error:
        return "leafwise"
    name = fn if isinstance(fn, str) else getattr(fn, "name", None)
    if isinstance(fn, keras.losses.MeanSquaredError):
        return "mse"
    if isinstance(fn, fs.losses.BuiltinLoss) and fn.name == "huber":
        return f"huber:{fn.option('delta')}"
    return {"mse": "mse", "mae": "mae", "huber": "huber:1.0"}[name]


def per_example(kind: str, true: Any, pred: Any, *, elements: bool = False) -> np.ndarray:
    """The per-example loss, by hand, in float64 (with ``elements``: the loss's values before
    the mean over non-batch axes, of shape ``pred.shape[:-1]``, ``[B]`` for a ``[B]`` pred)."""
    if kind == "leafwise":
        parts = []
        for t, p in zip(flatten(true), flatten(pred)):
            if isinstance(t, (tf.RaggedTensor, tf.SparseTensor)) or t.dtype == tf.string:
                continue
            t, p = np.asarray(t, np.float32).astype(np.float64), np.asarray(p, np.float64)
            parts.append(((p - t) ** 2).reshape(len(t), -1).mean(axis=1))
        return np.mean(parts, axis=0) if parts else np.zeros(len(np.asarray(flatten(pred)[0])))
    t = np.asarray(true).astype(np.float32).astype(np.float64)
    p = np.asarray(pred, np.float64)
    if p.ndim == 1:  # a rank-1 head: one value per example, as [B, 1]
        p = p[:, None]
    if t.ndim == 1 and p.ndim == 2:
        t = t[:, None]
    error = p - t
    if kind == "mse":
        values = error**2
    elif kind == "mae":
        values = np.abs(error)
    else:
        delta = float(kind.split(":")[1])
        values = np.where(
            np.abs(error) <= delta, 0.5 * error**2, delta * np.abs(error) - 0.5 * delta**2
        )
    if elements:
        return values.mean(axis=-1)
    return values.reshape(len(t), -1).mean(axis=1)


def keras_mask(pred: Any) -> np.ndarray | None:
    mask = getattr(pred, "_keras_mask", None)
    return None if mask is None else np.asarray(mask, bool)


def masked_values(kind: str, true: Any, pred: Any, mask: np.ndarray) -> tuple:
    """Per-example values and weights under a Keras mask, by hand: example i's value is the
    mean of its kept values, its weight the kept share (docs/concepts.md, Keras masks)."""
    values = per_example(kind, true, pred, elements=True)
    keep = np.broadcast_to(
        mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim)), values.shape
    )
    flat_keep = keep.reshape(len(values), -1).astype(np.float64)
    flat = np.where(flat_keep > 0, values.reshape(len(values), -1), 0.0)
    kept = flat_keep.sum(axis=1)
    means = np.divide(flat.sum(axis=1), kept, out=np.zeros_like(kept), where=kept > 0)
    return means, flat_keep.mean(axis=1)


def route_mask(route: fs.Route | None, leaf: Any, batch: int) -> np.ndarray:
    if route is None:
        return np.ones(batch, bool)
    values = np.asarray(leaf).reshape(-1)
    wanted = route.value if route.op == "one_of" else (route.value,)
    if values.dtype == object:
        wanted = tuple(w.encode() for w in wanted)
    if route.op == "truthy":
        return values != 0
    hits = np.isin(values, np.array(wanted, dtype=values.dtype))
    return ~hits if route.op == "not_equal" else hits


def output(predictions: Any, binding: fs.LossBinding) -> Any:
    keys = () if binding.group is None else (binding.group,)
    return get(predictions, (*keys, *tuple(binding.output)))


def reference(split: fs.SplitSpec, element: Any, predictions: Any) -> dict:
    """``{"total", "per_loss", "counts"}`` computed by hand."""
    per_loss, counts = {}, {}
    for b in split.losses:
        true = get(element, tuple(b.target))
        pred = output(predictions, b)
        batch = len(np.asarray(flatten(pred)[0]))
        route_leaf = None if b.route is None else get(element, tuple(b.route.path))
        mask = route_mask(b.route, route_leaf, batch)
        weights = mask.astype(np.float64)
        if b.sample_weight is not None:
            sample = np.asarray(get(element, tuple(b.sample_weight))).reshape(-1)
            weights = weights * sample.astype(np.float32).astype(np.float64)
        keep = keras_mask(pred)
        if keep is None:
            values = per_example(kind_of(b.fn), true, pred)
            share = np.ones(batch)
        else:
            values, share = masked_values(kind_of(b.fn), true, pred, keep)
            weights = weights * share
        routed = mask.nonzero()[0]
        values = values[routed]
        numerator = float(np.sum(weights[routed] * values))
        denominator = share.sum() if b.reduction == "sum_over_batch_size" else weights.sum()
        per_loss[b.name] = numerator / denominator if denominator else 0.0
        counts[b.name] = int(mask.sum())
    total = sum(b.weight * per_loss[b.name] for b in split.losses)
    scale = sum(abs(b.weight * per_loss[b.name]) for b in split.losses)
    return {"total": total, "per_loss": per_loss, "counts": counts, "scale": scale}


def assert_matches(result: fs.LossResult, expected: dict, rtol: float = 1e-4) -> None:
    assert set(result.per_loss) == set(expected["per_loss"])
    for name, value in expected["per_loss"].items():
        np.testing.assert_allclose(
            float(result.per_loss[name]), value, rtol=rtol, atol=1e-6, err_msg=name
        )
        assert int(result.counts[name]) == expected["counts"][name], name
    np.testing.assert_allclose(
        float(result.total), expected["total"], rtol=0, atol=rtol * expected["scale"] + 1e-6
    )


# ------------------------------------------------------------------------------- strategies


@st.composite
def loss_cases(draw, dtypes=NUMERIC, kinds=("dense", "ragged"), max_rank=2, masked=False):
    """A split with at least one binding, a batch, and predictions for it."""
    spec = draw(
        fst.structures(
            max_leaves=6, leaves=fst.leaves(dtypes=dtypes, kinds=kinds, max_rank=max_rank)
        )
    )
    split = draw(fst.split_specs(spec, min_bindings=1))
    element = draw(fst.elements(split, batch_size=st.integers(1, 4), max_magnitude=MAGNITUDE))
    return split, element, draw(fst.predictions(split, element, masked=masked))


def numeric_dense_targets(split: fs.SplitSpec) -> bool:
    spec = split.element
    return all(
        leaf.kind == "dense" and leaf.dtype != tf.string
        for b in split.losses
        for path, leaf in spec.leaves
        if path.keys[: len(b.target)] == tuple(b.target)
    )


# ------------------------------------------------------------------- 4. exact weighted mean


@given(loss_cases(dtypes=(*NUMERIC, tf.string)))
def test_each_loss_is_the_weighted_mean_over_its_routed_examples(case):
    """per_loss = Σ w·l / Σ w over routed examples; total = Σ weight·per_loss; counts."""
    split, element, predictions = case
    compiled = fs.compile(split)
    _, targets, weights = compiled.split.python_function(element)
    assert_matches(
        compiled.loss(targets, predictions, weights), reference(split, element, predictions)
    )


@given(loss_cases(dtypes=NUMERIC, kinds=("dense",), max_rank=3, masked=True))
def test_masked_and_rank1_predictions_equal_the_reference(case):
    """Issue 13 items 1 and 2: rank-1 ``[B]`` predictions are one value per example, and a
    Keras mask on a prediction weighs its values (Σ w·m·l / Σ w·m, or / Σ m for
    sum_over_batch_size), by the NumPy reference."""
    split, element, predictions = case
    compiled = fs.compile(split)
    _, targets, weights = compiled.split.python_function(element)
    assert_matches(
        compiled.loss(targets, predictions, weights), reference(split, element, predictions)
    )


@st.composite
def classification_cases(draw):
    """Labels in [-1, C) with -1 = missing, probabilities or logits, weights and routes."""
    batch = draw(st.integers(1, 6))
    classes = draw(st.integers(2, 5))
    labels = draw(st.lists(st.integers(-1, classes - 1), min_size=batch, max_size=batch))
    logits = draw(
        st.lists(
            st.lists(st.floats(-20, 20, width=32), min_size=classes, max_size=classes),
            min_size=batch,
            max_size=batch,
        )
    )
    sample = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=batch, max_size=batch))
    task = draw(st.lists(st.integers(0, 2), min_size=batch, max_size=batch))
    from_logits = draw(st.booleans())
    route = draw(
        st.sampled_from(
            [fs.route("label", not_equal=-1), fs.route("label", one_of=list(range(classes)))]
        )
    )
    element = {
        "label": tf.constant(labels, tf.int64),
        "task": tf.constant(task, tf.int32),
        "weight": tf.constant(sample, tf.float32)[:, None],
    }
    return batch, classes, element, np.array(logits, np.float32), from_logits, route


def softmax_log_probs(logits: np.ndarray, from_logits: bool) -> np.ndarray:
    z = logits.astype(np.float64)
    if from_logits:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)  # Keras renormalises probabilities, then clips
    return np.log(np.clip(probs, 1e-7, 1 - 1e-7))


@given(classification_cases())
def test_sparse_cross_entropy_is_the_weighted_mean_over_labelled_examples(case):
    """Missing labels (-1) are routed away and never reach the cross-entropy."""
    batch, _, element, logits, from_logits, route = case
    spec = fs.ElementSpec.from_structure(
        {
            "label": fs.Leaf(tf.int64, (None,)),
            "task": fs.Leaf(tf.int32, (None,)),
            "weight": fs.Leaf(tf.float32, (None, 1)),
        }
    )
    split = fs.SplitSpec(
        spec,
        inputs={},
        losses=(
            fs.LossBinding(
                "cls",
                fs.losses.sparse_categorical_crossentropy(from_logits=from_logits),
                target="label",
                output="cls",
                route=route,
                sample_weight="weight",
            ),
            fs.LossBinding(
                "cls_task",
                "sparse_categorical_crossentropy",
                target="label",
                output="prob",
                weight=0.5,
                route=fs.route("task", equals=1),
            ),
        ),
    )
    probabilities = np.exp(softmax_log_probs(logits, True)).astype(np.float32)
    scores = logits if from_logits else probabilities
    labels = element["label"].numpy()
    labels_task = np.where(labels < 0, 0, labels)
    element["label"] = tf.where(element["task"] == 1, labels_task, element["label"])
    compiled = fs.compile(split)
    _, targets, weights = compiled.split(element)
    result = compiled.loss(
        targets, {"cls": tf.constant(scores), "prob": tf.constant(probabilities)}, weights
    )
    labels = element["label"].numpy()
    routed = labels >= 0
    sample = element["weight"].numpy()[:, 0].astype(np.float64) * routed
    picked = -softmax_log_probs(scores, from_logits)[np.arange(batch), np.maximum(labels, 0)]
    cls = (sample * np.where(routed, picked, 0)).sum() / sample.sum() if sample.sum() else 0.0
    on_task = element["task"].numpy() == 1
    picked_prob = -softmax_log_probs(probabilities, False)[np.arange(batch), np.maximum(labels, 0)]
    cls_task = picked_prob[on_task].mean() if on_task.any() else 0.0
    np.testing.assert_allclose(float(result.per_loss["cls"]), cls, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(result.per_loss["cls_task"]), cls_task, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(result.total), cls + 0.5 * cls_task, rtol=1e-4, atol=1e-5)
    assert int(result.counts["cls"]) == routed.sum()
    assert int(result.counts["cls_task"]) == on_task.sum()


# ---------------------------------------------------------- 5. empty routes, poison routed away


def _float_leaves_under(split: fs.SplitSpec, path: fs.Path) -> list[fs.Path]:
    return [
        p
        for p, leaf in split.element.leaves
        if p.keys[: len(path)] == tuple(path) and leaf.kind == "dense" and leaf.dtype.is_floating
    ]


def _replace(node: Any, keys: tuple, fn, at: tuple = ()) -> Any:
    if at == keys:
        return fn(node)
    if isinstance(node, Mapping):
        return {k: _replace(v, keys, fn, (*at, k)) for k, v in node.items()}
    if isinstance(node, tuple) and hasattr(type(node), "_fields"):
        return type(node)(*(_replace(v, keys, fn, (*at, f)) for f, v in zip(node._fields, node)))
    if isinstance(node, (list, tuple)):
        return type(node)(_replace(v, keys, fn, (*at, i)) for i, v in enumerate(node))
    return node


@st.composite
def routed_cases(draw):
    """A split whose bindings all route on one per-example leaf ``key`` (truthy), a batch
    where ``key`` routes the examples in ``routed``, and NaN in every float target and
    sample weight of the other examples."""
    spec = draw(
        fst.structures(
            max_leaves=6, leaves=fst.leaves(dtypes=NUMERIC, kinds=("dense",), max_rank=2)
        )
    )
    keys = [p for p in fst.per_example_paths(spec) if spec[p].dtype != tf.string]
    assume(keys)
    key = draw(st.sampled_from(keys))
    split = draw(fst.split_specs(spec, min_bindings=1))
    weights = [p for p in fst.per_example_paths(spec) if p != key and spec[p].dtype.is_floating]
    weight = st.sampled_from([None, *weights])  # float sample weights, to be poisoned below
    losses = tuple(
        attrs.evolve(b, route=fs.route(key), sample_weight=draw(weight) or b.sample_weight)
        for b in split.losses
    )
    used = [key, *(b.sample_weight for b in losses if b.sample_weight is not None)]
    drop = tuple(p for p in split.drop if not any(p.keys == u.keys[: len(p)] for u in used))
    # Old route keys may now be unused: this property is about losses, not accounting.
    split = attrs.evolve(split, losses=losses, drop=drop, strict=False)
    element = draw(fst.elements(split, batch_size=st.integers(1, 4), max_magnitude=MAGNITUDE))
    batch = int(tf.shape(tf.nest.flatten(element)[0])[0])
    routed = np.array(draw(st.lists(st.booleans(), min_size=batch, max_size=batch)))
    poisoned = set()
    for b in split.losses:
        for path in (b.target, b.sample_weight):
            if path is not None:
                poisoned.update(p for p in _float_leaves_under(split, path) if p != key)

    def poison(value: tf.Tensor) -> tf.Tensor:
        mask = tf.reshape(tf.constant(routed), [-1] + [1] * (value.shape.rank - 1))
        return tf.where(mask, value, tf.constant(np.nan, value.dtype))

    def set_key(value: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.reshape(tf.constant(routed), tf.shape(value)), value.dtype)

    element = _replace(element, tuple(key), set_key)
    for path in poisoned:
        element = _replace(element, tuple(path), poison)
    return split, element, draw(fst.predictions(split, element)), routed


def _loss_and_gradients(compiled, element, predictions):
    _, targets, weights = compiled.split(element)
    flat = [tf.Variable(p) for p in tf.nest.flatten(predictions)]
    with tf.GradientTape() as tape:
        result = compiled.loss(targets, tf.nest.pack_sequence_as(predictions, flat), weights)
    grads = tape.gradient(result.total, flat)
    return result, [np.zeros(v.shape) if g is None else g.numpy() for g, v in zip(grads, flat)]


@given(routed_cases())
def test_routed_away_examples_cannot_poison_the_loss_or_its_gradient(case):
    """NaN in a routed-away target or sample weight changes nothing; empty routes give 0."""
    split, element, predictions, routed = case
    result, grads = _loss_and_gradients(fs.compile(split), element, predictions)
    assert np.isfinite(float(result.total))
    assert all(np.isfinite(g).all() for g in grads)
    if not routed.any():
        assert float(result.total) == 0.0
        assert all(float(v) == 0.0 for v in result.per_loss.values())
        assert all(int(c) == 0 for c in result.counts.values())
        assert all((g == 0).all() for g in grads)
    clean = tf.nest.map_structure(
        lambda v: tf.where(tf.math.is_nan(v), tf.zeros_like(v), v) if v.dtype.is_floating else v,
        element,
    )
    assert_matches(result, reference(split, clean, predictions))


# ----------------------------------------------------- 6. eager, tf.function and XLA agree


@given(loss_cases(kinds=("dense",)))
def test_eager_traced_and_xla_losses_agree(case):
    split, element, predictions = case
    assert numeric_dense_targets(split)
    compiled = fs.compile(split)
    _, targets, weights = compiled.split(element)
    eager = compiled.loss.python_function(targets, predictions, weights)
    traced = compiled.loss(targets, predictions, weights)
    xla = tf.function(compiled.loss.python_function, jit_compile=True, autograph=False)(
        targets, predictions, weights
    )
    expected = reference(split, element, predictions)
    for result in (eager, traced, xla):
        assert_matches(result, expected)
    for name in compiled.names:
        np.testing.assert_allclose(
            float(traced.per_loss[name]), float(eager.per_loss[name]), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            float(xla.per_loss[name]), float(eager.per_loss[name]), rtol=1e-5, atol=1e-6
        )


# ------------------------------------------------- regressions found by the properties above


def test_regression_a_nan_sample_weight_of_a_routed_away_example_does_not_leak():
    spec = fs.ElementSpec.from_structure(
        {"y": fs.Leaf(tf.float32), "keep": fs.Leaf(tf.bool), "w": fs.Leaf(tf.float32)}
    )
    binding = fs.LossBinding(
        "y", "mse", target="y", output="y", route=fs.route("keep"), sample_weight="w"
    )
    compiled = fs.compile(fs.SplitSpec(spec, inputs={}, losses=(binding,)))
    element = {
        "y": tf.constant([1.0, np.nan]),
        "keep": tf.constant([True, False]),
        "w": tf.constant([2.0, np.nan]),
    }
    result, grads = _loss_and_gradients(compiled, element, {"y": tf.zeros((2, 1))})
    assert float(result.total) == 1.0
    assert np.isfinite(grads[0]).all()
