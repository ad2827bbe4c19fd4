"""Case 2: a training step on the seed's Example 2, hand-written beside funcsplit.

Custom loop (baseline: the seed's hand-written ``@tf.function`` step): the same step taking its
loss from ``compiled.loss``, and ``fs.keras.train_step``. Keras ``fit`` (baseline:
``compile(loss={"label": ..., "mask": ...})`` + ``fit``): ``RoutedModel.fit``. Each at the
seed's size and at a tiny size (where overhead shows), with and without ``jit_compile``. Every
variant trains its own copy of the model (same starting weights) with its own Adam.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import keras
import tensorflow as tf

import funcsplit as fs
from benchmarks import harness
from benchmarks.cases import seed2

CASE = "training"
SIZES = {
    "tiny": {
        "sizes": ("tiny",),
        "jit": (False,),
        "steps": 2,
        "fit_steps": 3,
        "rounds": 1,
        "warmup": 1,
    },
    "quick": {
        "sizes": ("small", "tiny"),
        "jit": (False, True),
        "steps": 5,
        "fit_steps": {"small": 20, "tiny": 60},
        "rounds": 3,
        "warmup": 1,
    },
    "full": {
        "sizes": ("small", "tiny"),
        "jit": (False, True),
        # A tiny step takes about 2 ms: 40 of them per timing keep the timer's jitter and the
        # machine's hiccups small against what is measured.
        "steps": {"small": 10, "tiny": 40},
        # fit: the median of many steps inside each epoch (a callback times them), so that
        # fit's per-epoch set-up (iterator, callbacks, logs) stays out of the step time
        "fit_steps": {"small": 40, "tiny": 200},
        "rounds": 21,
        "warmup": 2,
    },
}


def _loss_step(compiled: fs.CompiledSplit, model: keras.Model, optimizer, jit_compile: bool):
    """The seed's step with its loss code replaced by ``compiled.loss``; it returns what the
    seed's returns (the two losses)."""

    def step(element):
        inputs, targets, weights = element
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            result = compiled.loss(targets, outputs, weights)
        gradients = tape.gradient(result.total, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return result.per_loss["label"], result.per_loss["mask"]

    return tf.function(step, jit_compile=jit_compile)


def _loop(step, elements, last):
    def run():
        out = None
        for element in elements:
            out = step(element)
        return float(last(out))

    return run


def custom_loop(size: str, jit: bool, steps: int, rounds: int, warmup: int) -> list[dict]:
    """Hand-written step vs ``compiled.loss`` in the same step vs ``fs.keras.train_step``."""
    batch = seed2.SIZES[size]["batch"]
    ds = seed2.make_dataset(size, steps * batch)
    compiled = fs.compile(seed2.make_split(ds))
    raw = list(ds)
    split = [compiled.split(b) for b in raw]
    models = [seed2.make_model(size) for _ in range(3)]
    seed2.copy_weights(models[0], *models[1:])
    optimizers = [keras.optimizers.Adam(1e-3) for _ in range(3)]
    for model, optimizer in zip(models, optimizers):
        seed2.built(model, optimizer, ds)
    hand = seed2.seed_train_step(models[0], optimizers[0], jit_compile=jit)
    loss_step = _loss_step(compiled, models[1], optimizers[1], jit)
    train_step = fs.keras.train_step(compiled, models[2], optimizers[2], jit_compile=jit)
    runs = {
        "handwritten_step": _loop(hand, raw, lambda out: out[0]),
        "funcsplit_loss": _loop(loss_step, split, lambda out: out[0]),
        "funcsplit_train_step": _loop(train_step, split, lambda out: out.total),
    }
    times = harness.interleaved(runs, rounds=rounds, warmup=warmup)
    config = f"{size}, {'xla' if jit else 'no xla'}, custom loop"
    baselines = {k: "handwritten_step" for k in runs}
    out = harness.rows(CASE, config, times, baselines, steps=steps, batch=batch)
    traced = {
        "handwritten_step": hand.get_concrete_function(raw[0]),
        "funcsplit_loss": loss_step.get_concrete_function(split[0]),
        "funcsplit_train_step": train_step.get_concrete_function(),
    }
    for r in out:
        r["ops"] = harness.op_count(traced[r["variant"]])
    return out


class StepTimes(keras.callbacks.Callback):
    """The seconds of each training step of ``fit``: from ``on_train_batch_begin`` to
    ``on_train_batch_end``, the call of Keras's train function (data, step, update)."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def _fit_step_time(model: keras.Model, dataset) -> Callable[[], float]:
    """A self-timed run: one epoch of ``fit``; the median of its steps but the first (which
    creates the iterator)."""
    timer = StepTimes()

    def run() -> float:
        model.fit(dataset, epochs=1, verbose=0, callbacks=[timer])
        return statistics.median(timer.times[1:] or timer.times)

    return run


def fit(size: str, jit: bool, steps: int, rounds: int, warmup: int) -> list[dict]:
    """Keras ``compile(loss={...})`` + ``fit`` vs ``RoutedModel.fit``: per-step times inside
    ``fit`` (a callback), the median step of each epoch, paired round by round."""
    batch = seed2.SIZES[size]["batch"]
    ds = seed2.make_dataset(size, steps * batch)
    compiled = fs.compile(seed2.make_split(ds))
    keras_model, inner = seed2.make_model(size), seed2.make_model(size)
    seed2.copy_weights(keras_model, inner)
    keras_model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"label": keras.losses.SparseCategoricalCrossentropy(), "mask": keras.losses.Dice()},
        jit_compile=jit,
    )
    keras_ds = ds.map(lambda e: (e["image"], {"label": e["label"], "mask": e["mask"]})).cache()
    routed = fs.keras.RoutedModel(inner, compiled)
    routed.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    routed_ds = compiled.apply(ds).cache()
    runs = {
        "keras_fit": _fit_step_time(keras_model, keras_ds),
        "funcsplit_routed_fit": _fit_step_time(routed, routed_ds),
    }
    times = harness.interleaved(runs, rounds=rounds, warmup=warmup, self_timed=True)
    config = f"{size}, {'xla' if jit else 'no xla'}, fit"
    baselines = {k: "keras_fit" for k in runs}
    return harness.rows(
        CASE, config, times, baselines, steps=steps, batch=batch, timed="median step in fit"
    )


def run(mode: str) -> list[dict]:
    """Both comparisons for every size and XLA setting of the mode."""
    size = SIZES[mode]
    out = []
    for model_size in size["sizes"]:
        for jit in size["jit"]:
            counts = [size["steps"], size["fit_steps"]]
            steps, fit_steps = (c[model_size] if isinstance(c, dict) else c for c in counts)
            out += custom_loop(model_size, jit, steps, size["rounds"], size["warmup"])
            out += fit(model_size, jit, fit_steps, size["rounds"], size["warmup"])
    return out
