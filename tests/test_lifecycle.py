"""Tests of a `RoutedModel`'s life cycle: weights, checkpoints, resuming, saving and serving.

Resuming is checked against the run that never stopped: the same model trained the same
number of epochs in one go must have the same weights (and optimizer state). Serving is
checked in a subprocess that loads the SavedModel with plain TensorFlow and never imports
funcsplit.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import funcsplit as fs
from funcsplit._src import registry

HERE = pathlib.Path(__file__).resolve().parent

# 12 examples in 3 batches of 4; the second batch has no label (-1): its classification
# loss has nothing routed.
LABELS = np.array([0, 1, 2, 1, -1, -1, -1, -1, 2, 0, -1, 1], np.int32)


def _dataset():
    rng = np.random.default_rng(0)
    data = {
        "x": rng.normal(size=(12, 4)).astype(np.float32),
        "label": LABELS,
        "y": rng.normal(size=(12, 1)).astype(np.float32),
    }
    return tf.data.Dataset.from_tensor_slices(data).batch(4)


def _split(ds):
    return fs.SplitSpec(
        fs.ElementSpec.from_dataset(ds),
        inputs="x",
        losses=(
            fs.LossBinding(
                "cls",
                "sparse_categorical_crossentropy",
                target="label",
                output="cls",
                route=fs.route("label", not_equal=-1),
            ),
            fs.LossBinding("reg", "mse", target="y", output="reg", weight=0.5),
        ),
    )


class _Heads(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cls = keras.layers.Dense(3, activation="softmax")
        self.reg = keras.layers.Dense(1)

    def call(self, hidden):
        return {"cls": self.cls(hidden), "reg": self.reg(hidden)}


def _routed(compiled, seed=0):
    """A compiled RoutedModel around a Sequential without an input shape (nothing built)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), _Heads()])
    routed = fs.keras.RoutedModel(model, compiled)
    routed.compile(optimizer=keras.optimizers.Adam(0.01))
    return routed


def _max_difference(a, b):
    assert len(a) == len(b)
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


def _state(routed):
    """Weights and optimizer variables (Adam's step count, moments) as arrays."""
    return [v.numpy() for v in routed.model.weights], [
        v.numpy() for v in routed.optimizer.variables
    ]


# --- weights and checkpoints without building by hand ------------------------------------


def test_load_weights_into_a_fresh_model_restores_weights_and_optimizer_state(tmp_path):
    ds = _dataset()
    compiled = fs.compile(_split(ds))
    trained = _routed(compiled)
    trained.fit(compiled.apply(ds), epochs=2, verbose=0)
    trained.save_weights(tmp_path / "routed.weights.h5")

    fresh = _routed(compiled, seed=1)
    assert not fresh.built
    fresh.load_weights(tmp_path / "routed.weights.h5")
    weights, slots = _state(fresh)
    assert int(fresh.optimizer.iterations) == 6  # 2 epochs of 3 batches
    assert _max_difference(weights, _state(trained)[0]) == 0.0
    assert _max_difference(slots, _state(trained)[1]) == 0.0

    # One more epoch from the loaded state is the same epoch as the one that never stopped.
    trained.fit(compiled.apply(ds), epochs=1, verbose=0)
    fresh.fit(compiled.apply(ds), epochs=1, verbose=0)
    assert _max_difference(_state(fresh)[0], _state(trained)[0]) <= 1e-6


def test_save_weights_before_training_builds_from_the_split(tmp_path):
    ds = _dataset()
    compiled = fs.compile(_split(ds))
    routed = _routed(compiled)
    routed.save_weights(tmp_path / "start.weights.h5")
    assert routed.built and routed.optimizer.built
    assert [v.shape for v in routed.model.weights] == [(4, 8), (8,), (8, 3), (3,), (8, 1), (1,)]


def test_model_checkpoint_weights_only_and_backup_and_restore_resume_exactly(tmp_path):
    ds = _dataset()
    compiled = fs.compile(_split(ds))
    straight = _routed(compiled)
    straight.fit(compiled.apply(ds), epochs=4, verbose=0)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("killed")  # the job dies after its second epoch

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "epoch{epoch}.weights.h5"), save_weights_only=True
    )
    first = _routed(compiled)
    with pytest.raises(RuntimeError, match="killed"):
        first.fit(
            compiled.apply(ds), epochs=4, verbose=0, callbacks=[backup, checkpoint, Interrupt()]
        )
    assert (tmp_path / "epoch2.weights.h5").exists()

    resumed = _routed(compiled, seed=1)  # a new job: other initial weights, nothing built
    history = resumed.fit(compiled.apply(ds), epochs=4, verbose=0, callbacks=[backup])
    assert history.epoch == [2, 3]
    assert int(resumed.optimizer.iterations) == 12
    assert _max_difference(_state(resumed)[0], _state(straight)[0]) <= 1e-6

    from_checkpoint = _routed(compiled, seed=2)
    from_checkpoint.load_weights(tmp_path / "epoch2.weights.h5")
    from_checkpoint.fit(compiled.apply(ds), initial_epoch=2, epochs=4, verbose=0)
    assert _max_difference(_state(from_checkpoint)[0], _state(straight)[0]) <= 1e-6


def test_building_from_the_split_needs_the_input_dimensions():
    spec = fs.ElementSpec.from_structure(
        {"x": fs.Leaf(tf.float32, (None, None)), "y": fs.Leaf(tf.float32, (None, 1))}
    )
    compiled = fs.compile(fs.SplitSpec(spec, inputs="x", losses=(fs.LossBinding("y", "mse", "y"),)))
    routed = fs.keras.RoutedModel(keras.Sequential([keras.layers.Dense(1)]), compiled)
    with pytest.raises(fs.SpecError, match=r"(?s)'x'.*float32\[None, None\].*ElementSpec"):
        routed.load_weights("never-read.weights.h5")


# --- save and load_model ------------------------------------------------------------------


def half_mae(y_true, y_pred):
    """A user loss: a named hole in the saved split."""
    return 0.5 * tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)


@keras.saving.register_keras_serializable(package="lifecycle_tests")
def keras_registered_mae(y_true, y_pred):
    return tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)


def _custom_split(ds, fn=half_mae):
    split = _split(ds)
    return fs.SplitSpec(
        split.element,
        split.inputs,
        (split.losses[0], fs.LossBinding("reg", fn, target="y", output="reg")),
    )


@pytest.fixture
def clean_registry():
    saved = dict(registry._USER)
    registry._USER.clear()
    yield
    registry._USER.clear()
    registry._USER.update(saved)


def _saved(tmp_path, split, *, jit_compile=False, metrics=None):
    ds = _dataset()
    compiled = fs.compile(split)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {"cls": keras.layers.Dense(3, activation="softmax")(hidden)}
    outputs["reg"] = keras.layers.Dense(1)(hidden)
    routed = fs.keras.RoutedModel(keras.Model(inputs, outputs), compiled, metrics=metrics)
    routed.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=jit_compile)
    routed.fit(compiled.apply(ds), epochs=2, verbose=0)
    path = tmp_path / "routed.keras"
    routed.save(path)
    return routed, path


def test_save_and_load_model_round_trip_model_split_metrics_compile_and_optimizer(tmp_path):
    ds = _dataset()
    metrics = {"cls": [keras.metrics.SparseCategoricalAccuracy(name="acc")]}
    routed, path = _saved(tmp_path, _split(ds), jit_compile=True, metrics=metrics)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    assert config["registered_name"] == "funcsplit>RoutedModel"
    assert config["config"]["split"] == routed.compiled_split.spec.to_dict()
    assert config["config"]["weighting"] is None

    loaded = keras.models.load_model(path)
    assert isinstance(loaded, fs.keras.RoutedModel)
    assert loaded.compiled_split.spec == routed.compiled_split.spec
    assert loaded.jit_compile is True
    assert isinstance(loaded.optimizer, keras.optimizers.Adam)
    assert int(loaded.optimizer.iterations) == 6
    assert _max_difference(_state(loaded)[0], _state(routed)[0]) == 0.0
    assert _max_difference(_state(loaded)[1], _state(routed)[1]) == 0.0
    x = np.concatenate([b["x"] for b in ds.as_numpy_iterator()])
    for key, value in routed.predict(x, verbose=0).items():
        np.testing.assert_array_equal(loaded.predict(x, verbose=0)[key], value)
    logs = loaded.evaluate(loaded.compiled_split.apply(ds), return_dict=True, verbose=0)
    assert logs == routed.evaluate(routed.compiled_split.apply(ds), return_dict=True, verbose=0)
    assert set(logs) == {"loss", "cls_loss", "reg_loss", "cls_acc"}


def test_import_funcsplit_alone_lets_load_model_find_routed_model(tmp_path):
    """A loading program that only does ``import funcsplit`` (no ``fs.keras`` touched) loads
    the file: the package registers RoutedModel with Keras when it is imported."""
    _, path = _saved(tmp_path, _split(_dataset()))
    code = (
        "import sys, keras, funcsplit\n"
        "assert 'funcsplit.keras' in sys.modules\n"
        f"print(type(keras.models.load_model({str(path)!r})).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "RoutedModel"


def test_a_user_callable_is_refused_without_custom_objects_naming_the_binding(tmp_path):
    routed, path = _saved(tmp_path, _custom_split(_dataset()))
    with pytest.raises(fs.SpecError) as info:
        keras.models.load_model(path)
    text = str(info.value)
    assert "binding 'reg'" in text and "'half_mae'" in text
    assert "custom_objects" in text and "fs.losses.register" in text

    loaded = keras.models.load_model(path, custom_objects={"half_mae": half_mae})
    assert loaded.compiled_split.spec == routed.compiled_split.spec
    assert _max_difference(_state(loaded)[1], _state(routed)[1]) == 0.0


def test_a_user_callable_loads_from_the_funcsplit_or_the_keras_registry(tmp_path, clean_registry):
    _, path = _saved(tmp_path, _custom_split(_dataset()))
    fs.losses.register("half_mae", half_mae)
    loaded = keras.models.load_model(path)
    assert loaded.compiled_split.spec.losses[1].fn is half_mae

    (tmp_path / "k").mkdir()
    _, path = _saved(tmp_path / "k", _custom_split(_dataset(), keras_registered_mae))
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))["config"]
    assert config["keras_registered"] == {
        "keras_registered_mae": "lifecycle_tests>keras_registered_mae"
    }
    loaded = keras.models.load_model(path)
    assert loaded.compiled_split.spec.losses[1].fn is keras_registered_mae


def test_a_keras_loss_object_loads_through_keras_in_safe_mode(tmp_path):
    routed, path = _saved(tmp_path, _custom_split(_dataset(), keras.losses.MeanAbsoluteError()))
    loaded = keras.models.load_model(path)
    fn = loaded.compiled_split.spec.losses[1].fn
    assert isinstance(fn, keras.losses.MeanAbsoluteError) and fn.get_config() == (
        routed.compiled_split.spec.losses[1].fn.get_config()
    )


def test_a_hostile_split_document_in_the_archive_is_a_spec_error(tmp_path):
    _, path = _saved(tmp_path, _split(_dataset()))
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["split"]["losses"][0]["fn"] = {"callable": "os.system", "import": "os"}
    members["config.json"] = json.dumps(config).encode()
    hostile = tmp_path / "hostile.keras"
    with zipfile.ZipFile(hostile, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(fs.SpecError, match=r"losses\[0\]\.fn"):
        keras.models.load_model(hostile)


# --- resume in a fresh process -----------------------------------------------------------

RESUME_CASES = ("fit", "fit-xla", "fit-weighted", "step", "step-xla", "step-weighted")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Runs ``lifecycle_resume.py``: 4 epochs straight and 2 saved (one process), then the
    last 2 after loading (a fresh process). Returns the directory of the states."""
    out = tmp_path_factory.mktemp("resume")
    # The funcsplit of this checkout, whatever is installed.
    path = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, CUDA_VISIBLE_DEVICES="")
    for phase in ("first", "second"):
        done = subprocess.run(
            [sys.executable, str(HERE / "lifecycle_resume.py"), phase, str(out)],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return out


@pytest.mark.parametrize("case", RESUME_CASES)
def test_two_epochs_saved_loaded_in_a_fresh_process_and_two_more_equal_four(resumed, case):
    straight = np.load(resumed / f"{case}-straight.npz")
    again = np.load(resumed / f"{case}-resumed.npz")
    names = straight.files
    assert names == again.files and len(names) >= 20  # 6 weights, Adam's 14 (+ weighting)
    difference = _max_difference([straight[n] for n in names], [again[n] for n in names])
    print(f"{case}: max abs difference after 2 + 2 vs 4 epochs = {difference:.3g}")
    assert difference <= 1e-6


# --- serving -----------------------------------------------------------------------------

SERVE = """
import json, sys
import numpy as np
import tensorflow as tf

loaded = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
served = loaded.serve(tf.constant(x))
default = loaded.signatures["serving_default"](inputs=tf.constant(x))
print(json.dumps({
    "funcsplit_imported": any(m.split(".")[0] == "funcsplit" for m in sys.modules),
    "cls": np.asarray(served["cls"]).tolist(),
    "reg": np.asarray(served["reg"]).tolist(),
    "default_keys": sorted(default),
}))
"""


def test_export_serves_predictions_without_funcsplit(tmp_path):
    ds = _dataset()
    compiled = fs.compile(_split(ds))
    routed = _routed(compiled)
    routed.fit(compiled.apply(ds), epochs=1, verbose=0)
    routed.export(tmp_path / "served", verbose=False)
    x = np.concatenate([b["x"] for b in ds.as_numpy_iterator()])
    np.save(tmp_path / "x.npy", x)
    expected = routed.predict(x, verbose=0)

    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(SERVE))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "served"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repository: nothing there to import by accident
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["funcsplit_imported"] is False
    assert out["default_keys"] == ["cls", "reg"]
    np.testing.assert_allclose(out["cls"], expected["cls"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["reg"], expected["reg"], rtol=1e-5, atol=1e-6)
