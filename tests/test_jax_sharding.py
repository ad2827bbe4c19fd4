"""funcsplit.jax on two host devices: a sharded batch gives the one-device loss and gradients.

The test runs this file as a script in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (the flag must be set before JAX starts).
Routes are deliberately uneven across the two shards (one holds nearly all labelled examples).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

RTOL, ATOL = 1e-5, 1e-6


def _split(with_dice: bool):
    import tensorflow as tf

    import funcsplit as fs

    spec = fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, (None, 3)),
            "label": fs.Leaf(tf.int32, (None,)),
            "w": fs.Leaf(tf.float32, (None,)),
            "mask": fs.Leaf(tf.int32, (None, 4, 4)),
            "has_mask": fs.Leaf(tf.bool, (None,)),
        }
    )
    losses = [
        fs.LossBinding(
            "label",
            "sparse_categorical_crossentropy",
            target="label",
            output="cls",
            route=fs.route("label", not_equal=-1),
            sample_weight="w",
        ),
        fs.LossBinding("x", "mse", target="x", output="x", weight=0.5),
    ]
    if with_dice:
        losses.append(
            fs.LossBinding("mask", "dice", target="mask", output="mask", route=fs.route("has_mask"))
        )
    drop = () if with_dice else ("mask", "has_mask")
    return fs.SplitSpec(spec, inputs="x", losses=tuple(losses), drop=drop)


def _data(batch: int = 8):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, batch).astype(np.int32)
    label[batch // 2 + 1 :] = -1  # the second shard holds one labelled example
    has_mask = np.zeros(batch, bool)
    has_mask[[1, 5, 6]] = True
    element = {
        "x": rng.normal(size=(batch, 3)).astype(np.float32),
        "label": label,
        "w": rng.uniform(0.5, 2.0, batch).astype(np.float32),
        "mask": rng.integers(0, 2, (batch, 4, 4)).astype(np.int32),
        "has_mask": has_mask,
    }
    params = {
        "cls": rng.normal(size=(3, 5)).astype(np.float32),
        "x": rng.normal(size=(3, 3)).astype(np.float32),
        "mask": rng.normal(size=(3, 16)).astype(np.float32),
    }
    return element, params


def _value_and_grad(compiled):
    import jax

    def total(params, element):
        inputs, targets, weights = compiled.split(element)
        predictions = {
            "cls": jax.nn.softmax(inputs @ params["cls"]),
            "x": inputs @ params["x"],
            "mask": jax.nn.sigmoid(inputs @ params["mask"]).reshape(-1, 4, 4),
        }
        result = compiled.loss(targets, predictions, weights)
        return result.total, result

    return jax.value_and_grad(total, has_aux=True)


def _max_rel(a, b) -> float:
    import jax

    diffs = jax.tree.map(
        lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)) / (np.abs(v) + ATOL))),
        a,
        b,
    )
    return max(jax.tree.leaves(diffs))


def main() -> None:
    """Compares one device with two; prints a JSON report (run by the test in a subprocess)."""
    import funcsplit

    lazy = "funcsplit.jax" not in sys.modules
    import jax
    from jax.sharding import Mesh
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import funcsplit.jax as fsj

    assert funcsplit.jax is fsj
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("batch",))
    element, params = _data()
    report = {"devices": len(devices), "lazy_import": lazy}

    # jit over a batch sharded across the devices: the global batch, exactly.
    compiled = fsj.compile(_split(with_dice=True))
    step = jax.jit(_value_and_grad(compiled))
    one = jax.device_put(element, devices[0])
    (_, single), single_grads = step(params, one)
    sharded_element = jax.device_put(element, NamedSharding(mesh, P("batch")))
    replicated = jax.device_put(params, NamedSharding(mesh, P()))
    (_, sharded), sharded_grads = step(replicated, sharded_element)
    report["shards"] = len(sharded_element["x"].sharding.device_set)
    report["jit_loss"] = _max_rel(sharded, single)
    report["jit_grads"] = _max_rel(sharded_grads, single_grads)
    report["counts"] = {k: int(v) for k, v in sharded.counts.items()}

    # shard_map with axis_name: per-shard values and gradients summed over the axis are global.
    per_example = fsj.compile(_split(with_dice=False), axis_name="batch")
    reference = jax.jit(_value_and_grad(fsj.compile(_split(with_dice=False))))
    (_, expected), expected_grads = reference(params, one)

    def shard_step(params, element, compiled=per_example):
        (_, result), grads = _value_and_grad(compiled)(params, element)
        return jax.lax.psum((result.total, result.per_loss, grads), "batch")

    mapped = jax.jit(
        jax.shard_map(
            shard_step, mesh=mesh, in_specs=(P(), P("batch")), out_specs=P(), check_vma=False
        )
    )
    total, per_loss, grads = mapped(params, sharded_element)
    report["shard_map_loss"] = _max_rel((total, per_loss), (expected.total, expected.per_loss))
    report["shard_map_grads"] = _max_rel(grads, expected_grads)

    # a batch-level loss under shard_map: each shard's dice weighted by its routed count.
    with_dice = fsj.compile(_split(with_dice=True), axis_name="batch")
    dice_step = jax.jit(
        jax.shard_map(
            lambda p, e: jax.lax.psum(
                _value_and_grad(with_dice)(p, e)[0][1].per_loss["mask"], "batch"
            ),
            mesh=mesh,
            in_specs=(P(), P("batch")),
            out_specs=P(),
            check_vma=False,
        )
    )
    dice_value = float(dice_step(params, sharded_element))
    plain = fsj.compile(_split(with_dice=True))
    halves = [jax.tree.map(lambda v, s=s: v[s], element) for s in (slice(0, 4), slice(4, 8))]
    parts = [jax.jit(_value_and_grad(plain))(params, h)[0][1] for h in halves]
    counts = [float(r.counts["mask"]) for r in parts]
    by_hand = sum(c * float(r.per_loss["mask"]) for c, r in zip(counts, parts)) / sum(counts)
    report["shard_map_dice"] = abs(dice_value - by_hand) / abs(by_hand)
    print("REPORT " + json.dumps(report))


def test_sharded_batch_equals_one_device():
    pytest.importorskip("jax")
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    done = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("REPORT "))
    report = json.loads(line[len("REPORT ") :])
    assert report["devices"] == 2 and report["shards"] == 2
    assert report["lazy_import"]
    assert report["counts"] == {"label": 5, "x": 8, "mask": 3}
    for key in ("jit_loss", "jit_grads", "shard_map_loss", "shard_map_grads", "shard_map_dice"):
        assert report[key] < RTOL, (key, report)


if __name__ == "__main__":
    main()
