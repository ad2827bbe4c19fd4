"""Case 3: per-example routing to T task heads, funcsplit beside hand-written mask and gather code.

Each example carries a ``task`` id in ``[0, T)``; head ``t``'s loss takes the examples of task
``t``. The hand-written step routes either by masks (every head's loss on the whole batch,
weighted by ``task == t``) or by gathering each task's examples (``tf.where`` + ``tf.gather``,
dynamic shapes). funcsplit's step takes ``compiled.loss`` with ``route("task", equals=t)``.
The loss is cheap (sparse cross-entropy on logits, 10 classes: Keras's function by hand,
funcsplit's registry loss) or expensive (a pairwise ranking loss over 32 logits, ``C²`` terms
per example), where computing it for every head on the whole batch costs T times what
gathering costs. funcsplit's ``funcsplit`` row binds the ranking loss declared with
``fs.losses.row_wise`` (so the heads share one loss call, each example on its own head's
row); its baseline is the cheaper of the two hand-written ones in that configuration. The
``funcsplit_undeclared`` row binds the bare callable, which funcsplit must call on each
binding's whole batch (it may look across examples) and so routes by masks. Its baseline is
``handwritten_masked_safe``: the masked code that also replaces routed-away targets, as
funcsplit's semantics require (a ``-1`` or NaN of an example routed away must not reach the
loss). That guard costs more than its ops suggest: the plain masked code feeds every head the
same target tensor, so TensorFlow's common-subexpression elimination computes the loss's
target-only terms once for all heads, while a guarded target differs per head. The row also
reports its ratio to the unguarded masked code (``ratio_to_masked``).
"""

from __future__ import annotations

from statistics import median

import keras
import tensorflow as tf

import funcsplit as fs
from benchmarks import harness

CASE = "routing"
SIZES = {
    "tiny": {"tasks": (4,), "losses": ("expensive",), "steps": 2, "rounds": 1},
    "quick": {"tasks": (1, 16, 64), "losses": ("cheap", "expensive"), "steps": 3, "rounds": 3},
    "full": {"tasks": (1, 4, 16, 64), "losses": ("cheap", "expensive"), "steps": 10, "rounds": 11},
}
BATCH = 64
FEATURES = 16
CLASSES = {"cheap": 10, "expensive": 32}


def pairwise_ranking(y_true, y_pred):
    """An expensive per-example loss: softplus of every logit margin against the label's."""
    y_pred = tf.convert_to_tensor(y_pred)
    labels = tf.one_hot(tf.reshape(tf.cast(y_true, tf.int32), [-1]), tf.shape(y_pred)[-1])
    margins = y_pred[:, :, None] - y_pred[:, None, :]
    order = labels[:, :, None] - labels[:, None, :]
    return tf.reduce_mean(tf.math.softplus(-order * margins), axis=[1, 2])


def sparse_ce(y_true, y_pred):
    """The cheap loss: Keras's sparse categorical cross-entropy on logits, per example."""
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


# (hand-written, funcsplit): funcsplit takes its registry loss where there is one.
LOSSES = {
    "cheap": (sparse_ce, fs.losses.sparse_categorical_crossentropy(from_logits=True)),
    "expensive": (pairwise_ranking, fs.losses.row_wise(pairwise_ranking)),
}


def make_model(tasks: int, classes: int) -> keras.Model:
    """A shared trunk and one logits head per task, outputs keyed ``task_<t>``."""
    keras.utils.set_random_seed(0)
    x = keras.Input((FEATURES,), name="x")
    h = keras.layers.Dense(32, activation="relu")(x)
    heads = {f"task_{t}": keras.layers.Dense(classes, name=f"task_{t}")(h) for t in range(tasks)}
    return keras.Model(x, heads)


def make_batches(tasks: int, classes: int, steps: int) -> list[dict]:
    """``steps`` batches ``{x, task, y}``; tasks uniform in ``[0, T)``."""
    out = []
    for i in range(steps):
        seed = (3, i)
        out.append(
            {
                "x": tf.random.stateless_normal((BATCH, FEATURES), seed=seed),
                "task": tf.random.stateless_uniform(
                    (BATCH,), seed=seed, maxval=tasks, dtype=tf.int32
                ),
                "y": tf.random.stateless_uniform(
                    (BATCH,), seed=(4, i), maxval=classes, dtype=tf.int32
                ),
            }
        )
    return out


def masked_loss(loss_fn, tasks: int, *, guard_targets: bool = False):
    """Hand-written mask routing: each head's loss on the whole batch, masked by its task.

    ``guard_targets``: also zero the routed-away targets before the loss sees them (what
    funcsplit's semantics require; the plain form feeds every head the same target tensor).
    """

    def loss(batch, outputs):
        total = 0.0
        for t in range(tasks):
            routed = tf.equal(batch["task"], t)
            weight = tf.cast(routed, tf.float32)
            y = tf.where(routed, batch["y"], 0) if guard_targets else batch["y"]
            values = loss_fn(y, outputs[f"task_{t}"])
            total += tf.math.divide_no_nan(tf.reduce_sum(values * weight), tf.reduce_sum(weight))
        return total

    return loss


def gathered_loss(loss_fn, tasks: int):
    """Hand-written gather routing: each head's loss on its own examples only."""

    def loss(batch, outputs):
        total = 0.0
        for t in range(tasks):
            index = tf.where(tf.equal(batch["task"], t))[:, 0]
            values = loss_fn(tf.gather(batch["y"], index), tf.gather(outputs[f"task_{t}"], index))
            count = tf.cast(tf.size(index), tf.float32)
            total += tf.math.divide_no_nan(tf.reduce_sum(values), count)
        return total

    return loss


def make_split(batch: dict, loss_fn, tasks: int) -> fs.SplitSpec:
    """One binding per task, routed by ``task == t``."""
    return fs.SplitSpec(
        element=fs.ElementSpec.from_structure(
            tf.nest.map_structure(lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), batch)
        ),
        inputs="x",
        losses=tuple(
            fs.LossBinding(f"task_{t}", loss_fn, "y", f"task_{t}", route=fs.route("task", equals=t))
            for t in range(tasks)
        ),
    )


def _hand_step(model, optimizer, loss):
    def step(batch):
        with tf.GradientTape() as tape:
            total = loss(batch, model(batch["x"], training=True))
        gradients = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return total

    return tf.function(step)


def _funcsplit_step(model, optimizer, compiled):
    def step(batch):
        inputs, targets, weights = compiled.split(batch)
        with tf.GradientTape() as tape:
            total = compiled.loss(targets, model(inputs, training=True), weights).total
        gradients = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return total

    return tf.function(step)


def _loop(step, elements):
    def run():
        out = None
        for element in elements:
            out = step(element)
        return float(out)

    return run


def one(tasks: int, loss_name: str, steps: int, rounds: int) -> list[dict]:
    """Masked, gathered and funcsplit steps for one T and one loss."""
    classes, (loss_fn, funcsplit_fn) = CLASSES[loss_name], LOSSES[loss_name]
    batches = make_batches(tasks, classes, steps)
    compiled = fs.compile(make_split(batches[0], funcsplit_fn, tasks))
    undeclared = isinstance(funcsplit_fn, fs.losses.RowWise)
    count = 5 if undeclared else 3
    models = [make_model(tasks, classes) for _ in range(count)]
    for m in models[1:]:
        m.set_weights(models[0].get_weights())
    optimizers = [keras.optimizers.SGD(0.01) for _ in range(count)]
    for m, o in zip(models, optimizers):
        o.build(m.trainable_variables)
    steps_by_variant = {
        "handwritten_masked": _hand_step(models[0], optimizers[0], masked_loss(loss_fn, tasks)),
        "handwritten_gather": _hand_step(models[1], optimizers[1], gathered_loss(loss_fn, tasks)),
        "funcsplit": _funcsplit_step(models[2], optimizers[2], compiled),
    }
    if undeclared:  # the same loss, not declared row-wise: routed by masks
        bare = fs.compile(make_split(batches[0], loss_fn, tasks))
        steps_by_variant["handwritten_masked_safe"] = _hand_step(
            models[3], optimizers[3], masked_loss(loss_fn, tasks, guard_targets=True)
        )
        steps_by_variant["funcsplit_undeclared"] = _funcsplit_step(models[4], optimizers[4], bare)
    runs = {k: _loop(step, batches) for k, step in steps_by_variant.items()}
    times = harness.interleaved(runs, rounds=rounds, warmup=2)
    masked, gather = times["handwritten_masked"], times["handwritten_gather"]
    cheaper = "handwritten_masked" if median(masked) <= median(gather) else "handwritten_gather"
    config = f"T={tasks}, {loss_name} loss"
    baselines = dict.fromkeys(times, cheaper)
    if undeclared:
        baselines["handwritten_masked_safe"] = "handwritten_masked"
        baselines["funcsplit_undeclared"] = "handwritten_masked_safe"
    out = harness.rows(CASE, config, times, baselines, tasks=tasks, loss=loss_name, steps=steps)
    for r in out:
        r["ops"] = harness.op_count(
            steps_by_variant[r["variant"]].get_concrete_function(batches[0])
        )
        if r["variant"].startswith("funcsplit"):
            r["ratio_to_masked"] = harness.paired_ratio(times["funcsplit"], masked)
            r["ratio_to_gather"] = harness.paired_ratio(times["funcsplit"], gather)
    return out


def run(mode: str) -> list[dict]:
    """Every T and loss of the mode."""
    size = SIZES[mode]
    return [
        r
        for loss_name in size["losses"]
        for tasks in size["tasks"]
        for r in one(tasks, loss_name, size["steps"], size["rounds"])
    ]
