"""Loss weighting under a 2-replica MirroredStrategy vs one device with the global batch.

Run as a subprocess by ``test_keras_weighting.py`` (the logical devices must be configured
before TensorFlow initialises them): ``python distribute_weighting.py OUT.json``. For every
weighting method (the ``fs.weighting`` constructors on main, and a Gram stand-in), it trains
the same model from the same weights with `fs.keras.train_step` and with
`fs.keras.RoutedModel.fit`, once on one device and once on two replicas whose halves of each
batch route differently (one half has no labels, the other no boxes), and writes the
weights, the task weights ``alpha``, the method's state and the logs of both.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any
from typing import NamedTuple

import distribute_common as common
import numpy as np

ROUTED = ("unit_gradients", "uncertainty")  # the methods also run through RoutedModel.fit
EPOCHS = 1


class _Method(NamedTuple):
    name: str
    needs_gram: bool
    init: Any
    update: Any


def unit_gradients():
    """A Gram stand-in: alpha_t = s / ‖g_t‖ (s halves each step), whatever lands on main."""
    import tensorflow as tf

    def init(num_tasks):
        return tf.ones([], tf.float32)

    def update(losses, gram, state, present=None):
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 1e-12))
        return tf.where(present, state / norms, 0.0), state * 0.5

    return _Method("unit_gradients", True, init, update)


def methods() -> dict:
    import funcsplit as fs

    out = {"unit_gradients": unit_gradients}
    for name in fs.weighting.NAMES:
        out[name] = getattr(fs.weighting, name)
    return out


def _model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    x = keras.Input((common.N_FEATURES,), name="x")
    h = keras.layers.Dense(6, activation="tanh", name="shared")(x)
    outputs = {
        "label": keras.layers.Dense(3, activation="softmax", name="label")(h),
        "box": keras.layers.Dense(2, name="box")(h),
        "tok": keras.layers.Dense(3, name="tok")(h),
    }
    return keras.Model(x, outputs)


def _shared(model):
    return model.get_layer("shared").trainable_variables


def _data():
    """Three global batches (8, 8, 6); in each the replicas' halves route differently."""
    import tensorflow as tf

    rng = np.random.default_rng(11)
    data = common.make_batch(rng, 22)
    data["label"][4:8] = -1  # first batch: the second replica has no labels
    data["has_box"][:4] = False  # first batch: the first replica has no boxes
    data["has_box"][4:8] = True
    data["has_box"][8:16] = False  # second batch: no boxes at all (an absent task)
    return tf.data.Dataset.from_tensor_slices(data).batch(8)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _state(variables) -> list:
    return [np.asarray(v.numpy()).tolist() for v in variables]


def train_step_run(strategy, make_method) -> dict:
    import keras
    import tensorflow as tf

    import funcsplit as fs

    compiled = fs.compile(common.exact_split())
    ds = _data()
    init = _model(0).get_weights()
    out = {}
    for where in ("single", "mirrored"):
        scope = strategy.scope() if where == "mirrored" else _null()
        with scope:
            model = _model(0)
            model.set_weights(init)
            method = make_method()
            step = fs.keras.train_step(
                compiled,
                model,
                keras.optimizers.SGD(0.1, momentum=0.5),
                weighting=method,
                shared=_shared if method.needs_gram else None,
            )
        if where == "mirrored":

            @tf.function
            def run(element, step=step):
                return fs.distribute.reduce_result(strategy, strategy.run(step, args=(element,)))

            elements = fs.distribute.distribute_dataset(strategy, compiled, ds)
        else:
            run, elements = step, compiled.apply(ds)
        alphas, totals = [], []
        for _ in range(EPOCHS):
            for element in elements:
                result = run(element)
                alphas.append({k: float(v) for k, v in result.weights.items()})
                totals.append(float(result.total))
        out[where] = {
            "weights": model.get_weights(),
            "alphas": alphas,
            "totals": totals,
            "state": _state(step.weighting_state),
        }
    return out


def routed_model_run(strategy, make_method) -> dict:
    import keras

    import funcsplit as fs

    compiled = fs.compile(common.exact_split())
    ds = _data()
    init = _model(0).get_weights()
    out = {}
    for where in ("single", "mirrored"):
        scope = strategy.scope() if where == "mirrored" else _null()
        with scope:
            method = make_method()
            routed = fs.keras.RoutedModel(
                _model(0),
                compiled,
                weighting=method,
                shared=_shared if method.needs_gram else None,
            )
            routed.model.set_weights(init)
            routed.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5))
        history = routed.fit(compiled.apply(ds), epochs=EPOCHS, verbose=0, shuffle=False)
        state = [v for v in routed.non_trainable_variables if "_state_" in v.path]
        out[where] = {
            "weights": routed.model.get_weights(),
            "history": history.history,
            "state": _state(state),
        }
    return out


def main(argv: list[str]) -> None:
    common.quiet()
    common.logical_cpus(2)
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    payload: dict = {"replicas": strategy.num_replicas_in_sync, "errors": {}}
    for name, make in methods().items():
        for kind, run in (("train_step", train_step_run), ("routed_model", routed_model_run)):
            if kind == "routed_model" and name not in ROUTED:
                continue  # RoutedModel shares the weighting code: two methods cover it
            key = f"{kind}/{name}"
            try:
                payload[key] = run(strategy, make)
            except Exception:
                payload["errors"][key] = traceback.format_exc()
    common.write(argv[0], payload)


if __name__ == "__main__":
    main(sys.argv[1:])
