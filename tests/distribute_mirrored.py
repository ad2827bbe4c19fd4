"""Runs funcsplit under a 2-replica MirroredStrategy and tf.data service; writes JSON.

Run by ``test_distribute.py`` in a subprocess, because the two logical CPU devices must be
configured before TensorFlow initialises its devices::

    python tests/distribute_mirrored.py OUT.json

Each section computes the single-device and the distributed numbers on the same global
batches and stores both (and the data) in the JSON; the test compares them with each other
and with NumPy references. The hypothesis property runs its examples here, in this one
process, and stores its outcome. A section that raises stores its traceback under
``errors``.
"""

from __future__ import annotations

import sys
import traceback

import distribute_common as common
import numpy as np

SUM = "SUM"


def section_core(strategy):
    """The hand-picked uneven case, exact split and dice split."""
    import funcsplit as fs

    batch, sizes, w0 = common.fixed_case()
    out = {"batch": batch, "sizes": sizes, "w0": w0}
    splits = {
        "exact": common.exact_split(),
        "dice": common.dice_split(),
        "rank1": common.rank1_split(),
    }
    for name, split in splits.items():
        compiled = fs.compile(split)
        single = common.single_runner(compiled, w0)(batch)
        mirrored = common.mirrored_runner(strategy, compiled, w0)(
            common.distribute_parts(strategy, common.parts(batch, sizes))
        )
        out[name] = {"single": single, "mirrored": mirrored}
    return out


def _close(found, expected, rtol=1e-5):
    found, expected = np.asarray(found, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-6)
    error = float(np.max(np.abs(found - expected), initial=0.0)) / scale
    assert error <= rtol, f"relative error {error:.3g} > {rtol}: {found} vs {expected}"
    return error


def section_property(strategy):
    """Hypothesis: random routing and weights, 2 replicas == 1 device (losses, gradients)."""
    import tensorflow as tf
    from hypothesis import given
    from hypothesis import settings
    from hypothesis import strategies as st

    import conftest  # noqa: F401 - registers and loads the hypothesis profile
    import funcsplit as fs

    _, _, w0 = common.fixed_case()
    exact = fs.compile(common.exact_split())
    dice = fs.compile(common.dice_split())
    runners = {
        "exact": (common.single_runner(exact, w0), common.mirrored_runner(strategy, exact, w0)),
        "dice": (common.single_runner(dice, w0), common.mirrored_runner(strategy, dice, w0)),
    }
    stats = {
        "examples": 0,
        "max_loss_error": 0.0,
        "max_gradient_error": 0.0,
        "dice_checked": 0,
        "routed_counts_differ": 0,
    }
    example = st.tuples(
        st.integers(-1, 2),  # label, -1 = missing
        st.booleans(),  # has_box
        st.integers(0, 2),  # task
        st.one_of(st.just(0.0), st.floats(0.0625, 2.0, width=32)),  # sample weight
    )

    @settings(database=None)
    @given(
        first=st.lists(example, min_size=0, max_size=6),
        second=st.lists(example, min_size=1, max_size=6),
        seed=st.integers(0, 2**16),
    )
    def property_(first, second, seed):
        rows = first + second
        batch = common.make_batch(
            np.random.default_rng(seed),
            len(rows),
            label=[r[0] for r in rows],
            has_box=[r[1] for r in rows],
            task=[r[2] for r in rows],
            sw=[r[3] for r in rows],
        )
        sizes = [len(first), len(second)]
        per_replica = common.distribute_parts(strategy, common.parts(batch, sizes))
        single_run, mirrored_run = runners["exact"]
        (s_result, s_grad), (m_result, m_grad) = single_run(batch), mirrored_run(per_replica)
        for name in exact.names:
            error = _close(m_result.per_loss[name], s_result.per_loss[name])
            stats["max_loss_error"] = max(stats["max_loss_error"], error)
            assert int(m_result.counts[name]) == int(s_result.counts[name])
        _close(m_result.total, s_result.total)
        error = _close(m_grad, s_grad)
        stats["max_gradient_error"] = max(stats["max_gradient_error"], error)
        # dice: each replica's value weighted by its share of the routed examples
        single_dice, mirrored_dice = runners["dice"]
        m_dice, _ = mirrored_dice(per_replica)
        counts, values = [], []
        for part in common.parts(batch, sizes):
            if len(part["x"]):
                result, _ = single_dice(part)
                counts.append(int(result.counts["dice"]))
                values.append(float(result.per_loss["dice"]))
        total = sum(counts)
        share = sum(c * v for c, v in zip(counts, values)) / total if total else 0.0
        _close(m_dice.per_loss["dice"], share)
        stats["dice_checked"] += 1
        masks = [np.sum(p["label"] != -1) for p in common.parts(batch, sizes)]
        stats["routed_counts_differ"] += int(masks[0] != masks[1])
        stats["examples"] += 1

    try:
        property_()
        stats["failure"] = None
    except Exception:
        stats["failure"] = traceback.format_exc()
    stats["tracing_counts"] = {
        k: [r.experimental_get_tracing_count() for r in pair] for k, pair in runners.items()
    }
    del tf
    return stats


def _keras_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    x = keras.Input((common.N_FEATURES,), name="x")
    h = keras.layers.Dense(6, activation="tanh")(x)
    outputs = {
        "label": keras.layers.Dense(3, activation="softmax", name="label")(h),
        "box": keras.layers.Dense(2, name="box")(h),
        "tok": keras.layers.Dense(3, name="tok")(h),
    }
    return keras.Model(x, outputs)


def _training_data():
    """Three global batches (8, 8, 5), with uneven routing between the replicas' halves."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    data = common.make_batch(rng, 21)
    data["label"][4:8] = -1  # the second half of batch 1 has no labels
    data["has_box"][:4] = False
    data["has_box"][4:8] = True
    return data, tf.data.Dataset.from_tensor_slices(data).batch(8)


def section_routed_model(strategy):
    """`fs.keras.RoutedModel.fit`: 3 steps on one device vs under the strategy."""
    import keras

    import funcsplit as fs

    compiled = fs.compile(common.exact_split())
    _, ds = _training_data()
    init = _keras_model(0).get_weights()
    out = {}
    for where in ("single", "mirrored"):
        scope = strategy.scope() if where == "mirrored" else _null()
        with scope:
            routed = fs.keras.RoutedModel(_keras_model(0), compiled)
            routed.model.set_weights(init)
            routed.compile(optimizer=keras.optimizers.SGD(0.2))
        history = routed.fit(compiled.apply(ds), epochs=2, verbose=0)
        evaluated = routed.evaluate(compiled.apply(ds), return_dict=True, verbose=0)
        out[where] = {
            "weights": routed.model.get_weights(),
            "history": history.history,
            "evaluate": evaluated,
        }
    return out


def section_train_step(strategy):
    """`fs.keras.train_step` with two groups and two optimizers, one device vs strategy."""
    import keras
    import tensorflow as tf

    import funcsplit as fs

    compiled = fs.compile(common.grouped_split())
    _, ds = _training_data()

    def models():
        keras.utils.set_random_seed(1)
        a = keras.Sequential(
            [keras.Input((common.N_FEATURES,)), keras.layers.Dense(3, activation="softmax")]
        )
        x = keras.Input((common.N_FEATURES,))
        h = keras.layers.Dense(5, activation="tanh")(x)
        b = keras.Model(x, {"box": keras.layers.Dense(2)(h), "tok": keras.layers.Dense(3)(h)})
        return {"a": _labelled(a), "b": b}

    def optimizers():
        return {"a": keras.optimizers.SGD(0.3), "b": keras.optimizers.SGD(0.1, momentum=0.9)}

    init = {g: m.get_weights() for g, m in models().items()}
    out = {}
    for where in ("single", "mirrored"):
        scope = strategy.scope() if where == "mirrored" else _null()
        with scope:
            ms, opts = models(), optimizers()
            for g, m in ms.items():
                m.set_weights(init[g])
            step = fs.keras.train_step(compiled, ms, opts)
        totals = []
        for _ in range(2):
            if where == "single":
                for element in compiled.apply(ds):
                    totals.append(step(element))
            else:
                dist = fs.distribute.distribute_dataset(strategy, compiled, ds)
                for element in dist:
                    totals.append(_distributed_step(strategy, step)(element))
        out[where] = {
            "weights": {g: m.get_weights() for g, m in ms.items()},
            "totals": [float(r.total) for r in totals],
            "per_loss": [{k: float(v) for k, v in r.per_loss.items()} for r in totals],
        }
    del tf
    return out


_STEPS: dict = {}


def _distributed_step(strategy, step):
    import tensorflow as tf

    import funcsplit as fs

    if id(step) not in _STEPS:

        @tf.function
        def run(element):
            return fs.distribute.reduce_result(strategy, strategy.run(step, args=(element,)))

        _STEPS[id(step)] = run
    return _STEPS[id(step)]


def _labelled(model):
    """A Keras model returning ``{"label": model(x)}``."""
    import keras

    x = keras.Input((common.N_FEATURES,))
    return keras.Model(x, {"label": model(x)})


def section_keras_difference(strategy):
    """Keras ``compile(loss=...)`` with masking sample weights vs funcsplit, 2 replicas."""
    import keras
    import tensorflow as tf

    import funcsplit as fs

    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, common.N_FEATURES)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    w = np.array([1, 1, 1, 1, 1, 0, 0, 0], "float32")  # 4 examples kept on replica 0, 1 on 1
    kernel = rng.normal(size=(common.N_FEATURES, 1)).astype("float32")
    bias = np.array([0.1], "float32")
    spec = fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, (None, common.N_FEATURES)),
            "y": fs.Leaf(tf.float32, (None, 1)),
            "w": fs.Leaf(tf.float32, (None,)),
        }
    )
    compiled = fs.compile(
        fs.SplitSpec(
            spec, inputs="x", losses=(fs.LossBinding("y", "mse", target="y", sample_weight="w"),)
        )
    )
    halves = [{"x": x[:4], "y": y[:4], "w": w[:4]}, {"x": x[4:], "y": y[4:], "w": w[4:]}]

    def dense():
        model = keras.Sequential([keras.Input((common.N_FEATURES,)), keras.layers.Dense(1)])
        model.set_weights([kernel, bias])
        return model

    with strategy.scope():
        model = dense()
    keras_losses = {
        "keras_mean_with_sample_weight": keras.losses.MeanSquaredError(
            reduction="mean_with_sample_weight"
        ),
        "keras_default": keras.losses.MeanSquaredError(),
    }

    def replica(part):
        pred = model(part["x"])
        values = {k: fn(part["y"], pred, sample_weight=part["w"]) for k, fn in keras_losses.items()}
        _, targets, weights = compiled.split(part)
        values["funcsplit"] = compiled.loss(targets, pred, weights).total
        return values

    @tf.function
    def run(per_replica):
        values = strategy.run(replica, args=(per_replica,))
        return {k: strategy.reduce(SUM, v, axis=None) for k, v in values.items()}

    out = {"x": x, "y": y, "w": w, "kernel": kernel, "bias": bias}
    out["values"] = run(common.distribute_parts(strategy, halves))
    # one fit step each, with the same global batch of 8
    keras_ds = tf.data.Dataset.from_tensors((x, y, w))
    fs_ds = compiled.apply(tf.data.Dataset.from_tensors({"x": x, "y": y, "w": w}))
    with strategy.scope():
        plain = dense()
        plain.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.MeanSquaredError(reduction="mean_with_sample_weight"),
        )
        routed = fs.keras.RoutedModel(dense(), compiled)
        routed.compile(optimizer=keras.optimizers.SGD(0.1))
    plain.fit(keras_ds, epochs=1, verbose=0)
    routed.fit(fs_ds, epochs=1, verbose=0)
    out["keras_fit"] = plain.get_weights()
    out["funcsplit_fit"] = routed.model.get_weights()
    return out


def section_distribute_dataset(strategy):
    """`fs.distribute.distribute_dataset`: per-replica parts are the split of each half."""
    import tensorflow as tf

    import funcsplit as fs

    compiled = fs.compile(common.exact_split())
    data, ds = _training_data()
    out = {"batches": []}
    for element in fs.distribute.distribute_dataset(strategy, compiled, ds):
        local = strategy.experimental_local_results(element)
        inputs = [part[0] for part in local]
        routes = [part[2]["label"]["route"] for part in local]
        out["batches"].append(
            {
                "sizes": [int(i.shape[0]) for i in inputs],
                "x": tf.concat(inputs, 0),
                "label": tf.concat(routes, 0),
                "devices": [i.device for i in inputs],
            }
        )
    out["x"] = data["x"]
    out["label"] = data["label"]
    return out


def _service_element(i):
    """One example of the service test: a tuple element, every value derived from ``i``."""
    import tensorflow as tf

    image = tf.fill([2, 2], tf.cast(i, tf.float32))
    label = tf.where(i % 4 == 0, -1, tf.cast(i % 3, tf.int32))
    meta = {
        "id": i,
        "mask": tf.reshape(tf.cast(i % 2, tf.float32), [1]),
        "weight": tf.cast(i, tf.float32) / 10.0,
        "name": tf.strings.as_string(i),
    }
    return image, label, meta


def section_service(strategy):
    """tf.data service: dispatcher and two workers on localhost, the split run by workers."""
    import tensorflow as tf

    import funcsplit as fs

    del strategy
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
    address = dispatcher.target.split("://")[1]
    workers = [
        service.WorkerServer(service.WorkerConfig(dispatcher_address=address)) for _ in range(2)
    ]
    ds = tf.data.Dataset.range(20).map(_service_element)
    spec = fs.ElementSpec.from_dataset(ds)
    compiled = fs.compile(
        fs.SplitSpec(
            spec,
            inputs={"image": "0", "id": "2/id"},
            losses=(
                fs.LossBinding(
                    "label",
                    "sparse_categorical_crossentropy",
                    target="1",
                    output="label",
                    route=fs.route("1", not_equal=-1),
                ),
                fs.LossBinding(
                    "mask",
                    "binary_crossentropy",
                    target="2/mask",
                    output="mask",
                    sample_weight="2/weight",
                ),
            ),
            drop=("2/name",),
        )
    )

    def rows(dataset, batched):
        found = []
        for inputs, targets, weights in dataset:
            ids = inputs["id"].numpy().reshape(-1)
            for k, i in enumerate(ids):
                pick = (lambda v: v[k]) if batched else (lambda v: v)
                found.append(
                    {
                        "id": int(i),
                        "image": pick(inputs["image"]).numpy().tolist(),
                        "label": int(pick(targets["label"])),
                        "route": int(pick(weights["label"]["route"])),
                        "mask": pick(targets["mask"]).numpy().tolist(),
                        "weight": float(pick(weights["mask"]["sample_weight"])),
                    }
                )
        return found

    out = {"workers": len(workers)}
    out["distributed_epoch"] = rows(
        fs.distribute.apply_with_service(
            compiled,
            ds.batch(3),
            service=dispatcher.target,
            job_name="split_batches",
            processing_mode="distributed_epoch",
        ),
        batched=True,
    )
    raw = compiled.apply(ds).apply(
        service.distribute(processing_mode="parallel_epochs", service=dispatcher.target)
    )
    out["parallel_epochs"] = rows(raw, batched=False)
    out["local"] = rows(compiled.apply(ds), batched=False)
    return out


def page_blocks(text: str) -> list[tuple[int, str, str, str]]:
    """``(line, lang, code, marker)`` for each fenced block; the marker is the comment line
    (``<!-- skip -->`` / ``<!-- expected-output -->``) just above the fence, if any."""
    lines = text.splitlines()
    found, i, previous = [], 0, ""
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            lang, start, body = stripped[3:].strip(), i + 1, []
            i += 1
            while not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            marker = previous if previous.startswith("<!--") else ""
            found.append((start, lang, "\n".join(body) + "\n", marker))
        elif stripped:
            previous = stripped
        i += 1
    return found


_DOCS_NAMESPACE: dict = {}


def section_docs(strategy):
    """Runs the python blocks of ``docs/scaling.md`` in order (one namespace), except those
    marked ``<!-- skip -->``, and compares each ``<!-- expected-output -->`` text block with
    what the python block before it printed. Runs first: the page configures the devices."""
    import contextlib
    import io
    from pathlib import Path

    del strategy
    page = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"
    namespace = _DOCS_NAMESPACE
    namespace["__name__"] = "scaling_md"
    out = {"ran": 0, "skipped": 0, "checked": 0, "mismatches": []}
    printed = ""
    for line, lang, code, marker in page_blocks(page.read_text()):
        if lang == "python":
            if "skip" in marker:
                compile(code, f"scaling.md:{line}", "exec")  # recipes must at least parse
                out["skipped"] += 1
                continue
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile(code, f"scaling.md:{line}", "exec"), namespace)
            printed = buffer.getvalue()
            out["ran"] += 1
        elif lang == "text" and "expected-output" in marker:
            out["checked"] += 1
            if printed.strip() != code.strip():
                out["mismatches"].append({"line": line, "expected": code, "found": printed})
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


SECTIONS = {
    "docs": section_docs,
    "core": section_core,
    "property": section_property,
    "distribute_dataset": section_distribute_dataset,
    "keras_difference": section_keras_difference,
    "routed_model": section_routed_model,
    "train_step": section_train_step,
    "service": section_service,
}


def main(argv: list[str]) -> None:
    common.quiet()
    names = argv[1:] or list(SECTIONS)
    payload: dict = {"errors": {}}

    def run(name, strategy):
        try:
            payload[name] = SECTIONS[name](strategy)
        except Exception:
            payload["errors"][name] = traceback.format_exc()

    if "docs" in names:  # first: the page sets up two logical CPUs itself
        run("docs", None)
    common.logical_cpus(2)
    import tensorflow as tf

    # one MirroredStrategy per process: two would share collective keys
    strategy = _DOCS_NAMESPACE.get("strategy") or tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"]
    )
    payload["replicas"] = strategy.num_replicas_in_sync
    for name in names:
        if name != "docs":
            run(name, strategy)
    common.write(argv[0], payload)


if __name__ == "__main__":
    main(sys.argv[1:])
