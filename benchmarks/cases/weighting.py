"""Case 6: the step time of each weighting method against the plain sum, at T = 2, 4, 8 tasks.

One model (a shared two-layer encoder, one head per task, every task routed to part of the
batch) trained by ``fs.keras.train_step(..., weighting=fs.weighting.<name>())`` for every
method on main, beside two hand-written steps on copies of the same model: the plain sum of
the task losses (the baseline), and the *Gram floor*, the least a Gram method can do: one
backward pass per task over the shared part, their Gram matrix, and the sum of the task
gradients applied. All variants run in one process, interleaved step by step (each step of
each variant timed on its own, the same batch for all: `step_interleaved`); a row's median
and ratios are over steps. Rows carry three ratios:
to the hand-written sum (``ratio_to_baseline``), to ``fs.weighting.static()``
(``ratio_to_static``), and, for the Gram methods, to the floor (``ratio_to_gram_floor``);
Nash-MTL's row adds its ratio to PCGrad's step (``ratio_to_pcgrad``).
"""

from __future__ import annotations

import gc
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import funcsplit as fs
from benchmarks import harness

CASE = "weighting"
FEATURES, WIDTH, BATCH = 32, 128, 128
SIZES = {
    "tiny": {"tasks": (2,), "steps": 2, "rounds": 1, "warmup": 1},
    "quick": {"tasks": (2, 4, 8), "steps": 10, "rounds": 6, "warmup": 1},
    "full": {"tasks": (2, 4, 8), "steps": 20, "rounds": 15, "warmup": 2},
}


def available() -> list[str]:
    return list(fs.weighting.NAMES)


def make_split(tasks: int) -> fs.CompiledSplit:
    """``T`` regression tasks, task ``t`` routed to the examples whose ``task`` is ``t`` or
    whose ``all`` flag is set (so every task is present in a batch)."""
    leaves = {"x": fs.Leaf(tf.float32, (None, FEATURES)), "task": fs.Leaf(tf.int32, (None,))}
    leaves.update({f"y{t}": fs.Leaf(tf.float32, (None, 1)) for t in range(tasks)})
    losses = tuple(
        fs.LossBinding(
            f"t{t}", "mse", target=f"y{t}", output=f"t{t}", route=fs.route("task", not_equal=t + 1)
        )
        for t in range(tasks)
    )
    spec = fs.ElementSpec.from_structure(leaves)
    return fs.compile(fs.SplitSpec(spec, inputs="x", losses=losses))


def make_model(tasks: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = keras.Input((FEATURES,))
    h = keras.layers.Dense(WIDTH, activation="relu", name="shared1")(x)
    h = keras.layers.Dense(WIDTH, activation="relu", name="shared2")(h)
    heads = {f"t{t}": keras.layers.Dense(1, name=f"head{t}")(h) for t in range(tasks)}
    return keras.Model(x, heads)


def shared(model: keras.Model) -> list:
    return [v for n in ("shared1", "shared2") for v in model.get_layer(n).trainable_variables]


def make_batches(tasks: int, steps: int) -> list[dict]:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(steps):
        batch = {
            "x": tf.constant(rng.normal(size=(BATCH, FEATURES)), tf.float32),
            "task": tf.constant(rng.integers(0, tasks + 1, size=BATCH), tf.int32),
        }
        for t in range(tasks):
            batch[f"y{t}"] = tf.constant(rng.normal(size=(BATCH, 1)), tf.float32)
        batches.append(batch)
    return batches


def _hand_losses(model, batch, tasks):
    out = model(batch["x"], training=True)
    losses = []
    for t in range(tasks):
        mask = tf.cast(batch["task"] != t + 1, tf.float32)
        per = tf.reduce_mean(tf.square(batch[f"y{t}"] - out[f"t{t}"]), axis=-1)
        losses.append(tf.math.divide_no_nan(tf.reduce_sum(per * mask), tf.reduce_sum(mask)))
    return losses


def handwritten_sum(model, optimizer, tasks):
    """The plain sum of the masked task means, written by hand (the baseline)."""

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            total = tf.add_n(_hand_losses(model, batch, tasks))
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return total

    return step


def handwritten_gram_floor(model, optimizer, tasks):
    """What any Gram method must do: T backward passes over the shared part, ``G Gᵀ``, and
    the combined gradient (here the plain sum, ``alpha = 1``)."""
    variables = model.trainable_variables
    shared_ids = {id(v) for v in shared(model)}
    common = [v for v in variables if id(v) in shared_ids]
    rest = [v for v in variables if id(v) not in shared_ids]

    @tf.function
    def step(batch):
        with tf.GradientTape(persistent=True) as tape:
            losses = tf.stack(_hand_losses(model, batch, tasks))
        rows = [
            tape.gradient(losses, common, output_gradients=tf.one_hot(t, tasks))
            for t in range(tasks)
        ]
        flat = tf.stack([tf.concat([tf.reshape(g, [-1]) for g in row], 0) for row in rows])
        gram = tf.matmul(flat, flat, transpose_b=True)
        alpha = tf.ones([tasks]) + 0.0 * tf.reduce_sum(gram)
        combined = [
            tf.add_n([alpha[t] * rows[t][i] for t in range(tasks)]) for i in range(len(common))
        ]
        head = tape.gradient(losses, rest, output_gradients=alpha)
        optimizer.apply_gradients(zip(combined + head, common + rest))
        return tf.reduce_sum(losses)

    return step


def step_interleaved(
    runs: dict[str, tuple], *, rounds: int, warmup: int, steps: int
) -> dict[str, list[float]]:
    """Times every variant one *step* at a time, interleaved step by step.

    ``runs[name] = (step, batches, last)``. For each batch index, each variant takes its step
    on that batch (the order rotates), timed until its result is read back (``last``): load
    that drifts on a shared machine touches the variants of one step alike, and each paired
    ratio compares the same batch. Garbage collection is off within a round.
    """
    names = list(runs)
    for name in names:
        step, batches, last = runs[name]
        for _ in range(warmup):
            float(last(step(batches[0])))
    times: dict[str, list[float]] = {name: [] for name in names}
    turn = 0
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            for i in range(steps):
                order = names[turn % len(names) :] + names[: turn % len(names)]
                turn += 1
                for name in order:
                    step, batches, last = runs[name]
                    start = time.perf_counter()
                    float(last(step(batches[i])))
                    times[name].append(time.perf_counter() - start)
        finally:
            gc.enable()
    return times


def one_size(tasks: int, steps: int, rounds: int, warmup: int) -> list[dict]:
    """Every method and both hand-written steps at ``tasks`` tasks, interleaved."""
    compiled = make_split(tasks)
    batches = make_batches(tasks, steps)
    names = available()
    init = make_model(tasks).get_weights()

    def fresh():
        model = make_model(tasks)
        model.set_weights(init)
        return model, keras.optimizers.SGD(1e-3)

    runs, gram = {}, set()
    model, optimizer = fresh()
    runs["handwritten_sum"] = (handwritten_sum(model, optimizer, tasks), batches, lambda o: o)
    model, optimizer = fresh()
    floor = handwritten_gram_floor(model, optimizer, tasks)
    runs["handwritten_gram_floor"] = (floor, batches, lambda o: o)
    for name in names:
        method = getattr(fs.weighting, name)()
        model, optimizer = fresh()
        step = fs.keras.train_step(
            compiled,
            model,
            optimizer,
            weighting=method,
            shared=shared if method.needs_gram else None,
        )
        split = [compiled.split(b) for b in batches]
        runs[f"funcsplit_{name}"] = (step, split, lambda r: r.total)
        if method.needs_gram:
            gram.add(f"funcsplit_{name}")
    times = step_interleaved(runs, rounds=rounds, warmup=warmup, steps=steps)
    config = f"T={tasks}, train_step"
    baselines = {k: None if k == "handwritten_sum" else "handwritten_sum" for k in runs}
    rows = harness.rows(
        CASE, config, times, baselines, steps=steps, batch=BATCH, tasks=tasks, timed="one step"
    )
    for row in rows:
        variant = row["variant"]
        if "funcsplit_static" in times and variant.startswith("funcsplit"):
            row["ratio_to_static"] = harness.paired_ratio(times[variant], times["funcsplit_static"])
        if variant in gram:
            row["needs_gram"] = True
            row["ratio_to_gram_floor"] = harness.paired_ratio(
                times[variant], times["handwritten_gram_floor"]
            )
        elif variant.startswith("funcsplit"):
            row["needs_gram"] = False
        if variant == "funcsplit_nash_mtl" and "funcsplit_pcgrad" in times:
            row["ratio_to_pcgrad"] = harness.paired_ratio(times[variant], times["funcsplit_pcgrad"])
        row["step_s"] = statistics.median(times[variant])
    return rows


def run(mode: str) -> list[dict]:
    """The methods at every task count of the mode."""
    size = SIZES[mode]
    out = []
    for tasks in size["tasks"]:
        out += one_size(tasks, size["steps"], size["rounds"], size["warmup"])
    return out
