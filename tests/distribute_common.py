"""Shared pieces of the distribution test scripts: a split with every reduction, data, a model.

Imported by ``distribute_mirrored.py`` and ``distribute_multiworker.py`` (run as subprocesses
by ``test_distribute.py``). Importing it has no side effects: the logical devices are
configured by the scripts' ``main``.
"""

from __future__ import annotations

import itertools
import json
import os
import sys

import attrs
import numpy as np

N_FEATURES = 4
N_CLASSES = 3
CLASS_WEIGHT = {0: 2.0, 2: 0.5}
# column ranges of the linear model's outputs
COLUMNS = {"label": (0, 3), "box": (3, 5), "tok": (5, 8), "mask": (8, 11)}
N_OUT = 11


def logical_cpus(n: int) -> None:
    """Splits the CPU into ``n`` logical devices, unless already configured (by a docs page).

    Must run before TensorFlow initialises its devices.
    """
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    if tf.config.get_logical_device_configuration(cpus[0]) is None:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )


def squared_error(y_true, y_pred):
    """A plain callable loss returning ``[B, T]`` values (funcsplit means over ``T``)."""
    import tensorflow as tf

    return tf.square(tf.cast(y_true, tf.float32) - y_pred)


def element_spec():
    import tensorflow as tf

    import funcsplit as fs

    return fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, (None, N_FEATURES)),
            "label": fs.Leaf(tf.int32, (None,)),
            "has_box": fs.Leaf(tf.bool, (None,)),
            "box": fs.Leaf(tf.float32, (None, 2)),
            "task": fs.Leaf(tf.int32, (None,)),
            "sw": fs.Leaf(tf.float32, (None,)),
            "tok": fs.Leaf(tf.float32, (None, 3)),
            "mask": fs.Leaf(tf.float32, (None, 3)),
        }
    )


def exact_bindings():
    """Per-example bindings covering every reduction funcsplit offers (all exact)."""
    import keras

    import funcsplit as fs

    return (
        fs.LossBinding(
            "label",
            "sparse_categorical_crossentropy",
            target="label",
            output="label",
            route=fs.route("label", not_equal=-1),
            sample_weight="sw",
            class_weight=CLASS_WEIGHT,
        ),
        fs.LossBinding(
            "box", "mse", target="box", output="box", route=fs.route("has_box"), weight=0.5
        ),
        fs.LossBinding(
            "box_sum",
            "mae",
            target="box",
            output="box",
            route=fs.route("has_box"),
            sample_weight="sw",
            reduction="sum_over_batch_size",
        ),
        fs.LossBinding("tok", keras.losses.Huber(), target="tok", output="tok"),
        fs.LossBinding(
            "tok_task",
            squared_error,
            target="tok",
            output="tok",
            route=fs.route("task", equals=1),
            sample_weight="sw",
            weight=2.0,
        ),
        fs.LossBinding(
            "tok_sum",
            "mse",
            target="tok",
            output="tok",
            reduction="sum_over_batch_size",
            weight=0.25,
        ),
    )


def exact_split():
    import funcsplit as fs

    return fs.SplitSpec(element_spec(), inputs="x", losses=exact_bindings(), drop=("mask",))


def dice_split():
    import funcsplit as fs

    dice = fs.LossBinding("dice", "dice", target="mask", output="mask", route=fs.route("has_box"))
    return fs.SplitSpec(
        element_spec(),
        inputs="x",
        losses=(dice,),
        drop=("label", "box", "task", "sw", "tok"),
    )


def rank1_split():
    """Rank-1 heads (a squeezed ``Dense(1)``): ``[B]`` targets and predictions, routed and
    weighted unevenly between the replicas (issue 13 item 1)."""
    import funcsplit as fs

    losses = (
        fs.LossBinding("reg", "mse", target="sw", output="reg", route=fs.route("task", equals=1)),
        fs.LossBinding(
            "reg_bce",
            "binary_crossentropy",
            target="has_box",
            output="reg_p",
            route=fs.route("label", not_equal=-1),
            sample_weight="sw",
        ),
    )
    return fs.SplitSpec(element_spec(), inputs="x", losses=losses, drop=("box", "tok", "mask"))


def grouped_split():
    """The exact split with two groups: ``a`` trains on the label, ``b`` on box and tok."""
    import funcsplit as fs

    losses = tuple(
        attrs.evolve(b, group="a" if b.name == "label" else "b") for b in exact_bindings()
    )
    return fs.SplitSpec(element_spec(), inputs={"a": "x", "b": "x"}, losses=losses, drop=("mask",))


def predictions(w, x):
    """The linear model of the core tests: ``x @ w`` cut into the four heads."""
    import tensorflow as tf

    h = tf.matmul(x, w)
    return {
        "label": tf.nn.softmax(h[:, 0:3]),
        "box": h[:, 3:5],
        "tok": h[:, 5:8],
        "mask": tf.sigmoid(h[:, 8:11]),
        "reg": h[:, 3],  # rank-1 heads of rank1_split
        "reg_p": tf.sigmoid(h[:, 8]),
    }


def make_batch(rng: np.random.Generator, n: int, **fixed) -> dict:
    """A batch of ``n`` examples; ``fixed`` overrides leaves (e.g. ``label=[...]``)."""
    batch = {
        "x": rng.normal(size=(n, N_FEATURES)).astype("float32"),
        "label": rng.integers(-1, N_CLASSES, size=n).astype("int32"),
        "has_box": rng.random(n) < 0.5,
        "box": rng.normal(size=(n, 2)).astype("float32"),
        "task": rng.integers(0, 3, size=n).astype("int32"),
        "sw": rng.uniform(0.0, 2.0, size=n).astype("float32"),
        "tok": rng.normal(size=(n, 3)).astype("float32"),
        "mask": (rng.random((n, 3)) < 0.5).astype("float32"),
    }
    for key, value in fixed.items():
        batch[key] = np.asarray(value, dtype=batch[key].dtype)
    return batch


def fixed_case() -> tuple[dict, list[int], np.ndarray]:
    """The hand-picked uneven case: 7 + 4 examples, replica 1 has no label and all boxes.

    Returns:
        ``(global batch, per-replica sizes, initial weights)``.
    """
    rng = np.random.default_rng(20240611)
    sizes = [7, 4]
    batch = make_batch(
        rng,
        11,
        label=[0, 2, 1, -1, 2, 0, 1, -1, -1, -1, -1],
        has_box=[True, False, False, False, False, False, False, True, True, True, True],
        task=[1, 1, 0, 2, 1, 0, 2, 2, 2, 2, 1],
        sw=[0.5, 1.5, 0.0, 1.0, 2.0, 0.25, 1.0, 0.75, 1.25, 0.0, 1.0],
    )
    w0 = rng.normal(scale=0.5, size=(N_FEATURES, N_OUT)).astype("float32")
    return batch, sizes, w0


def parts(batch: dict, sizes: list[int]) -> list[dict]:
    """Cuts a global batch into consecutive per-replica parts of the given sizes."""
    bounds = np.cumsum([0, *sizes])
    return [{k: v[a:b] for k, v in batch.items()} for a, b in itertools.pairwise(bounds)]


def distribute_parts(strategy, parts):
    """Per-replica values: replica ``r`` gets ``parts[r]`` (any sizes)."""
    import tensorflow as tf

    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.map_structure(tf.constant, parts[ctx.replica_id_in_sync_group])
    )


def single_runner(compiled, w0):
    """``run(element) -> (LossResult, dloss/dw)`` on one device."""
    import tensorflow as tf

    w = tf.Variable(w0)

    @tf.function(reduce_retracing=True)
    def run(element):
        with tf.GradientTape() as tape:
            inputs, targets, weights = compiled.split(element)
            result = compiled.loss(targets, predictions(w, inputs), weights)
        return result, tape.gradient(result.total, w)

    return run


def mirrored_runner(strategy, compiled, w0):
    """``run(per_replica) -> (summed LossResult, gradients summed over replicas)``."""
    import tensorflow as tf

    import funcsplit as fs

    with strategy.scope():
        w = tf.Variable(w0)

    def replica(element):
        with tf.GradientTape() as tape:
            inputs, targets, weights = compiled.split(element)
            result = compiled.loss(targets, predictions(w, inputs), weights)
        return result, tape.gradient(result.total, w)

    @tf.function(reduce_retracing=True)
    def run(per_replica):
        result, gradient = strategy.run(replica, args=(per_replica,))
        return (
            fs.distribute.reduce_result(strategy, result),
            strategy.reduce("SUM", gradient, axis=None),
        )

    return run


def to_json(value):
    """Tensors, arrays and LossResults to plain JSON values."""
    if hasattr(value, "_asdict"):
        return {k: to_json(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(to_json(payload), f)


def quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
