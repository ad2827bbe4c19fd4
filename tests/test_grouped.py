"""Bindings that share a row-wise loss and a route key take one loss call (`_src/tf_grouped.py`).

The grouped path must give what the per-binding masked path gives: values, counts and
gradients, eagerly, traced and under XLA, with sample weights, examples routed nowhere,
empty tasks, ``-1`` labels and NaN targets of routed-away examples.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import funcsplit as fs
from funcsplit._src import tf_grouped as grouped

TASKS = 4
CLASSES = 5
BATCH = 12


def user_ce(y_true, y_pred):
    """A hand-written sparse cross-entropy on logits (row-wise, not a registry loss)."""
    log_p = tf.nn.log_softmax(y_pred)
    return -tf.gather(log_p, tf.cast(y_true, tf.int32), batch_dims=1)


ROW_WISE_CE = fs.losses.row_wise(user_ce)


def make_split(*, per_task_targets=False, sample_weight=False, fn="sce"):
    structure = {
        "x": fs.Leaf(tf.float32, (None, 3)),
        "task": fs.Leaf(tf.int32, (None,)),
        "y": fs.Leaf(tf.int32, (None,)),
    }
    if per_task_targets:
        structure.update({f"y{t}": fs.Leaf(tf.int32, (None,)) for t in range(TASKS)})
    if sample_weight:
        structure["w"] = fs.Leaf(tf.float32, (None,))
    loss = fs.losses.sparse_categorical_crossentropy(from_logits=True) if fn == "sce" else fn
    bindings = tuple(
        fs.LossBinding(
            f"task_{t}",
            loss,
            f"y{t}" if per_task_targets else "y",
            f"head_{t}",
            route=fs.route("task", equals=t),
            sample_weight="w" if sample_weight else None,
        )
        for t in range(TASKS)
    )
    drop = ("y",) if per_task_targets else ()
    element = fs.ElementSpec.from_structure(structure)
    return fs.SplitSpec(element, inputs="x", losses=bindings, drop=drop)


def make_element(seed=0, *, per_task_targets=False, sample_weight=False):
    rng = np.random.default_rng(seed)
    # Task 3 gets no example; tasks 7 and -1 belong to no binding.
    task = rng.choice([0, 1, 2, 7, -1], size=BATCH).astype(np.int32)
    task[:3] = [0, 1, 2]
    y = rng.integers(0, CLASSES, size=BATCH).astype(np.int32)
    y[task == 7] = -1  # a missing-label sentinel where no binding looks
    element = {"x": np.zeros((BATCH, 3), np.float32), "task": task, "y": y}
    if per_task_targets:
        for t in range(TASKS):
            element[f"y{t}"] = np.where(task == t, y, -1).astype(np.int32)
    if sample_weight:
        w = rng.uniform(0.0, 2.0, size=BATCH).astype(np.float32)
        w[task == -1] = np.nan  # NaN weights of examples routed nowhere must not leak
        element["w"] = w
    return {k: tf.constant(v) for k, v in element.items()}


def heads(seed=1, classes=CLASSES):
    rng = np.random.default_rng(seed)
    return {
        f"head_{t}": tf.Variable(rng.normal(size=(BATCH, classes)).astype(np.float32))
        for t in range(TASKS)
    }


def run(compiled, element, predictions, wrap=None):
    def compute(targets, weights):
        with tf.GradientTape() as tape:
            result = compiled.loss(targets, predictions, weights)
        grads = tape.gradient(result.total, list(predictions.values()))
        return result, grads

    fn = compute if wrap is None else wrap(compute)
    _, targets, weights = compiled.split(element)
    result, grads = fn(targets, weights)
    values = {k: float(v) for k, v in result.per_loss.items()}
    counts = {k: int(v) for k, v in result.counts.items()}
    return float(result.total), values, counts, [g.numpy() for g in grads]


def assert_same(a, b):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-6)
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_allclose(a[1][k], b[1][k], rtol=1e-6, atol=1e-6)
    assert a[2] == b[2]
    for x, y in zip(a[3], b[3]):
        assert np.isfinite(x).all()
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def both_paths(monkeypatch, split, element, predictions, wrap):
    """``run`` through the grouped path (checked to be taken), then the per-binding path."""
    shared = []
    reduce_group = grouped.reduce_group
    monkeypatch.setattr(
        grouped, "reduce_group", lambda *a: shared.append(reduce_group(*a)) or shared[-1]
    )
    grouped_result = run(fs.compile(split), element, predictions, WRAPS[wrap])
    assert shared and shared[-1] is not None  # the grouped path was taken
    monkeypatch.setattr(grouped, "plan_groups", lambda plan: [])
    return grouped_result, run(fs.compile(split), element, predictions, WRAPS[wrap])


WRAPS = {
    "eager": None,
    "traced": tf.function,
    "xla": lambda f: tf.function(f, jit_compile=True),
}


@pytest.mark.parametrize("wrap", list(WRAPS), ids=list(WRAPS))
@pytest.mark.parametrize(
    "options",
    [{}, {"per_task_targets": True}, {"sample_weight": True}],
    ids=["shared-target", "per-task-targets", "sample-weights"],
)
@pytest.mark.parametrize("fn", ["sce", ROW_WISE_CE], ids=["registry", "row_wise"])
def test_grouped_equals_per_binding(monkeypatch, wrap, options, fn):
    split = make_split(**options, fn=fn)
    element = make_element(**options)
    predictions = heads()
    grouped_result, masked_result = both_paths(monkeypatch, split, element, predictions, wrap)
    assert_same(grouped_result, masked_result)
    task = element["task"].numpy()
    assert grouped_result[2] == {f"task_{t}": int((task == t).sum()) for t in range(TASKS)}
    assert grouped_result[2]["task_3"] == 0 and grouped_result[1]["task_3"] == 0.0


@pytest.mark.parametrize("fn", ["sce", ROW_WISE_CE], ids=["registry", "row_wise"])
def test_values_match_numpy(fn):
    element = make_element(3)
    predictions = heads(4)
    total, values, counts, _ = run(fs.compile(make_split(fn=fn)), element, predictions)
    task, y = element["task"].numpy(), element["y"].numpy()
    expected = {}
    for t in range(TASKS):
        logits = predictions[f"head_{t}"].numpy()[task == t]
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        losses = -log_p[np.arange(len(logits)), y[task == t]]
        expected[f"task_{t}"] = losses.mean() if len(losses) else 0.0
        assert counts[f"task_{t}"] == len(losses)
    for k, v in expected.items():
        np.testing.assert_allclose(values[k], v, rtol=1e-5)
    np.testing.assert_allclose(total, sum(expected.values()), rtol=1e-5)


def test_groups_only_registry_losses_with_distinct_equals_routes():
    plan = fs.compile(make_split()).plan
    assert [len(g) for g in grouped.plan_groups(plan)] == [TASKS]
    callable_loss = fs.compile(make_split(fn=lambda t, p: tf.reduce_sum(p, -1))).plan
    assert grouped.plan_groups(callable_loss) == []
    # Declared row-wise: grouped; `row_wise` of the same function twice is one loss.
    assert [len(g) for g in grouped.plan_groups(fs.compile(make_split(fn=ROW_WISE_CE)).plan)] == [
        TASKS
    ]
    split = make_split(fn=ROW_WISE_CE)
    rebound = tuple(
        b
        if i % 2
        else fs.LossBinding(b.name, fs.losses.row_wise(user_ce), b.target, b.output, route=b.route)
        for i, b in enumerate(split.losses)
    )
    twice = fs.SplitSpec(split.element, inputs="x", losses=rebound)
    assert [len(g) for g in grouped.plan_groups(fs.compile(twice).plan)] == [TASKS]
    # Different row-wise functions do not share a call.
    other = tuple(
        fs.LossBinding(
            b.name,
            fs.losses.row_wise(lambda t, p: user_ce(t, p)),
            b.target,
            b.output,
            route=b.route,
        )
        if i == 0
        else b
        for i, b in enumerate(split.losses)
    )
    mixed = fs.SplitSpec(split.element, inputs="x", losses=other)
    assert [len(g) for g in grouped.plan_groups(fs.compile(mixed).plan)] == [TASKS - 1]


def test_an_unhashable_row_wise_callable_keeps_the_per_binding_path():
    class Unhashable:
        __hash__ = None

        def __call__(self, y_true, y_pred):
            return user_ce(y_true, y_pred)

    compiled = fs.compile(make_split(fn=fs.losses.row_wise(Unhashable())))
    assert grouped.plan_groups(compiled.plan) == []
    element, predictions = make_element(), heads()
    assert_same(
        run(compiled, element, predictions), run(fs.compile(make_split()), *(element, predictions))
    )


def test_row_wise_keras_loss_is_called_unreduced_and_grouped():
    keras_ce = fs.losses.row_wise(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    element, predictions = make_element(5), heads(6)
    keras_result = run(fs.compile(make_split(fn=keras_ce)), element, predictions)
    registry_result = run(fs.compile(make_split()), element, predictions)
    assert_same(keras_result, registry_result)


def test_row_wise_declaration_cuts_the_loss_calls():
    """T heads declared row-wise: the loss runs once per step, not once per head."""
    calls = []

    def counted(y_true, y_pred):
        calls.append(1)
        return user_ce(y_true, y_pred)

    element, predictions = make_element(), heads()
    run(fs.compile(make_split(fn=counted)), element, predictions)
    assert len(calls) == TASKS
    calls.clear()
    run(fs.compile(make_split(fn=fs.losses.row_wise(counted))), element, predictions)
    assert len(calls) == 1


@pytest.mark.parametrize("bad", ["mse", fs.losses.mse(), ROW_WISE_CE, 3])
def test_row_wise_refuses_what_is_not_a_user_loss(bad):
    with pytest.raises(fs.SpecError, match="row_wise"):
        fs.losses.row_wise(bad)


def test_row_wise_is_named_by_its_function():
    compiled = fs.compile(make_split(fn=ROW_WISE_CE))
    assert "row_wise(user_ce)" in compiled.describe()
    broken = fs.losses.row_wise(lambda t, p: tf.reduce_mean(user_ce(t, p)) + tf.zeros([2]))
    element, predictions = make_element(), heads()
    with pytest.raises(fs.SpecError, match=r"test_grouped\.py:\d+"):
        run(fs.compile(make_split(fn=broken)), element, predictions)


def test_heads_of_different_shapes_take_the_per_binding_path():
    compiled = fs.compile(make_split())
    element = make_element()
    predictions = heads()
    predictions["head_3"] = tf.Variable(tf.zeros((BATCH, CLASSES + 2)))
    _, values, counts, grads = run(compiled, element, predictions)
    assert counts["task_3"] == 0 and values["task_3"] == 0.0
    assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("wrap", list(WRAPS), ids=list(WRAPS))
@pytest.mark.parametrize("sample_weight", [False, True], ids=["plain", "sample-weights"])
def test_unrouted_bindings_share_one_call(monkeypatch, wrap, sample_weight):
    structure = {"x": fs.Leaf(tf.float32, (None, 3))}
    structure.update({f"y{i}": fs.Leaf(tf.float32, (None, 2)) for i in range(5)})
    if sample_weight:
        structure["w"] = fs.Leaf(tf.float32, (None, 1))
    bindings = tuple(
        fs.LossBinding(
            f"b{i}",
            "huber",
            f"y{i}",
            f"p{i}",
            weight=1.0 + i % 2,
            sample_weight="w" if sample_weight else None,
        )
        for i in range(5)
    )
    split = fs.SplitSpec(fs.ElementSpec.from_structure(structure), inputs="x", losses=bindings)
    rng = np.random.default_rng(7)
    element = {k: tf.constant(rng.normal(size=(BATCH, 2)), tf.float32) for k in structure}
    element["x"] = tf.zeros((BATCH, 3))
    if sample_weight:
        element["w"] = tf.constant(rng.uniform(size=(BATCH, 1)), tf.float32)
    predictions = {
        f"p{i}": tf.Variable(rng.normal(size=(BATCH, 2)).astype(np.float32)) for i in range(5)
    }
    assert [len(g) for g in grouped.plan_groups(fs.compile(split).plan)] == [5]
    grouped_result, per_binding_result = both_paths(monkeypatch, split, element, predictions, wrap)
    assert_same(grouped_result, per_binding_result)
    assert grouped_result[2] == {f"b{i}": BATCH for i in range(5)}
