"""Trains, saves and resumes as a user's job would; run by ``test_lifecycle.py``.

    python tests/lifecycle_resume.py first DIR    # 4 epochs straight; 2 epochs, then save
    python tests/lifecycle_resume.py second DIR   # a fresh process: load, 2 more epochs

Each case writes its final state (weights, then optimizer and weighting variables) to
``DIR/<case>-straight.npz`` or ``DIR/<case>-resumed.npz``; the test compares the two.

- ``fit``, ``fit-xla``: `RoutedModel.fit` with Adam, saved by ``ModelCheckpoint("….keras")``
  (``fit``) or ``routed.save`` (``fit-xla``, ``jit_compile=True``) and loaded with
  ``keras.models.load_model``; its split has a user callable, filled from
  ``custom_objects``. The data are not shuffled: Keras starts each epoch's iterator anew.
  ``fit-weighted`` adds the uncertainty weighting (its state: the RoutedModel's variables;
  the method itself is passed to ``load_model`` as ``custom_objects["weighting"]``).
- ``step``, ``step-xla``, ``step-weighted``: `fs.keras.train_step` with Adam, saved by
  ``tf.train.Checkpoint(model=…, optimizer=…, step=…, data=iterator)``: the iterator of a
  seeded, shuffled, repeated dataset is in the checkpoint, so the resumed job continues the
  same example order. ``step-weighted`` adds the uncertainty weighting, whose state is in
  ``step``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import funcsplit as fs

EPOCHS = 4
STEPS_PER_EPOCH = 4  # 16 examples in batches of 4: one batch shape, for XLA
CASES = ("fit", "fit-xla", "fit-weighted", "step", "step-xla", "step-weighted")


def half_mae(y_true, y_pred):
    """A user's loss: not in the registry, so a named hole in the saved split."""
    return 0.5 * tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)


def dataset() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=16).astype(np.int32)
    labels[rng.random(16) < 0.3] = -1  # missing labels, routed away
    data = {
        "x": rng.normal(size=(16, 4)).astype(np.float32),
        "label": labels,
        "y": rng.normal(size=(16, 1)).astype(np.float32),
    }
    return tf.data.Dataset.from_tensor_slices(data)


def split(ds: tf.data.Dataset) -> fs.SplitSpec:
    return fs.SplitSpec(
        fs.ElementSpec.from_dataset(ds.batch(4)),
        inputs="x",
        losses=(
            fs.LossBinding(
                "cls",
                "sparse_categorical_crossentropy",
                target="label",
                output="cls",
                route=fs.route("label", not_equal=-1),
            ),
            fs.LossBinding("reg", half_mae, target="y", output="reg", weight=0.5),
        ),
    )


def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(
        inputs,
        {
            "cls": keras.layers.Dense(3, activation="softmax")(hidden),
            "reg": keras.layers.Dense(1)(hidden),
        },
    )


def state(net: keras.Model, optimizer: keras.optimizers.Optimizer, extra=()) -> list:
    return [np.asarray(v) for v in [*net.get_weights(), *optimizer.variables, *extra]]


# --- RoutedModel.fit ---------------------------------------------------------------------


def weighting():
    """The weighting of ``fit-weighted``: its state lives in the RoutedModel's variables."""
    return fs.weighting.uncertainty(learning_rate=0.1)


def fit_state(routed: fs.keras.RoutedModel) -> list:
    """Inner weights, optimizer variables, then the wrapper's own (the weighting state)."""
    inner = {id(v) for v in routed.model.weights}
    own = [v for v in routed.non_trainable_weights if id(v) not in inner]
    return state(routed.model, routed.optimizer, own)


def fit_first(case: str, out: str) -> None:
    ds = dataset()
    compiled = fs.compile(split(ds))
    batches = compiled.apply(ds.batch(4))
    path = os.path.join(out, f"{case}.keras")
    for epochs, tag in ((EPOCHS, "straight"), (EPOCHS // 2, "first")):
        method = weighting() if case == "fit-weighted" else None
        routed = fs.keras.RoutedModel(model(), compiled, weighting=method)
        routed.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=case == "fit-xla")
        callbacks = [keras.callbacks.ModelCheckpoint(path)] if case == "fit" else []
        routed.fit(batches, epochs=epochs, verbose=0, callbacks=callbacks)
        if tag == "straight":
            np.savez(os.path.join(out, f"{case}-straight.npz"), *fit_state(routed))
        elif case != "fit":
            routed.save(path)


def fit_second(case: str, out: str) -> None:
    custom_objects = {"half_mae": half_mae}
    if case == "fit-weighted":
        custom_objects["weighting"] = weighting()  # a method is code: the caller passes it
    routed = keras.models.load_model(
        os.path.join(out, f"{case}.keras"), custom_objects=custom_objects
    )
    assert routed.jit_compile is (case == "fit-xla"), routed.jit_compile
    assert int(routed.optimizer.iterations) == STEPS_PER_EPOCH * EPOCHS // 2
    batches = routed.compiled_split.apply(dataset().batch(4))
    routed.fit(batches, initial_epoch=EPOCHS // 2, epochs=EPOCHS, verbose=0)
    np.savez(os.path.join(out, f"{case}-resumed.npz"), *fit_state(routed))


# --- fs.keras.train_step with tf.train.Checkpoint -----------------------------------------


def _step_job(case: str):
    """Everything the job builds before it trains or restores: the checkpoint's objects."""
    ds = dataset()
    compiled = fs.compile(split(ds))
    net, optimizer = model(), keras.optimizers.Adam(0.01)
    weighting = fs.weighting.uncertainty(learning_rate=0.1) if case == "step-weighted" else None
    step = fs.keras.train_step(
        compiled, net, optimizer, jit_compile=case == "step-xla", weighting=weighting
    )
    iterator = iter(ds.shuffle(16, seed=0).batch(4, drop_remainder=True).repeat())
    checkpoint = tf.train.Checkpoint(model=net, optimizer=optimizer, step=step, data=iterator)
    return net, optimizer, step, iterator, checkpoint


def _train(step, iterator, steps: int) -> None:
    for _ in range(steps):
        result = step(next(iterator))
        assert np.isfinite(float(result.total))


def step_first(case: str, out: str) -> None:
    net, optimizer, step, iterator, _ = _step_job(case)
    _train(step, iterator, STEPS_PER_EPOCH * EPOCHS)
    extra = step.weighting_state
    np.savez(os.path.join(out, f"{case}-straight.npz"), *state(net, optimizer, extra))
    net, optimizer, step, iterator, checkpoint = _step_job(case)
    _train(step, iterator, STEPS_PER_EPOCH * EPOCHS // 2)
    checkpoint.write(os.path.join(out, case))


def step_second(case: str, out: str) -> None:
    net, optimizer, step, iterator, checkpoint = _step_job(case)
    checkpoint.read(os.path.join(out, case)).assert_consumed()
    assert int(optimizer.iterations) == STEPS_PER_EPOCH * EPOCHS // 2
    _train(step, iterator, STEPS_PER_EPOCH * EPOCHS // 2)
    extra = step.weighting_state
    np.savez(os.path.join(out, f"{case}-resumed.npz"), *state(net, optimizer, extra))


def main(phase: str, out: str) -> None:
    for case in CASES:
        kind = "fit" if case.startswith("fit") else "step"
        globals()[f"{kind}_{phase}"](case, out)
        print(f"{phase} {case}: done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
