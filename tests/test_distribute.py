"""Tests of `funcsplit.distribute` and of exact losses under `tf.distribute` and tf.data service.

The distributed runs need two logical CPU devices (configured before TensorFlow initialises
its devices) or several processes, so they run in subprocesses started once for this module:
``distribute_mirrored.py`` (a 2-replica MirroredStrategy, the hypothesis property, Keras,
tf.data service) and two ``distribute_multiworker.py`` workers (MultiWorkerMirroredStrategy on
127.0.0.1), all at the same time. They write the single-device and the distributed numbers to
JSON; the tests here compare them with each other and with NumPy references written by hand.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import distribute_common as common
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import settings

import funcsplit as fs

HERE = Path(__file__).parent
TIMEOUT_S = 600
RTOL = 1e-5


# --- the subprocesses ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


class _Runs:
    """The three subprocesses, started together; each result is read when first needed."""

    def __init__(self, tmp: Path):
        self._tmp = tmp
        self._results: dict[str, object] = {}
        self._procs = {
            "mirrored": [self._start("distribute_mirrored.py", "mirrored", _env())],
        }
        ports = [_free_port(), _free_port()]
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        self._procs["multiworker"] = [
            self._start(
                "distribute_multiworker.py",
                f"worker{i}",
                _env(
                    TF_CONFIG=json.dumps(
                        {"cluster": cluster, "task": {"type": "worker", "index": i}}
                    )
                ),
            )
            for i in range(2)
        ]

    def _start(self, script: str, name: str, env: dict):
        out = self._tmp / f"{name}.json"
        log = open(self._tmp / f"{name}.log", "w")  # noqa: SIM115 - closed in _wait
        proc = subprocess.Popen(
            [sys.executable, str(HERE / script), str(out)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=HERE.parent,
        )
        return proc, out, log

    def _wait(self, kind: str) -> list[dict]:
        if kind not in self._results:
            procs = self._procs[kind]
            deadline = time.monotonic() + TIMEOUT_S
            # a worker that fails leaves its peer waiting for it: stop them all then
            while time.monotonic() < deadline and any(p.poll() is None for p, _, _ in procs):
                if any(p.poll() not in (None, 0) for p, _, _ in procs):
                    break
                time.sleep(0.2)
            results = []
            for proc, out, log in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
                text = Path(log.name).read_text()[-4000:]
                assert proc.returncode == 0 and out.exists(), f"{kind} failed:\n{text}"
                results.append(json.loads(out.read_text()))
            self._results[kind] = results
        return self._results[kind]

    def mirrored(self, section: str) -> dict:
        (payload,) = self._wait("mirrored")
        assert payload["replicas"] == 2
        error = payload["errors"].get(section)
        assert error is None, f"section {section!r} raised in the subprocess:\n{error}"
        return payload[section]

    def multiworker(self) -> list[dict]:
        return self._wait("multiworker")

    def close(self) -> None:
        for procs in self._procs.values():
            for proc, _, log in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    started = _Runs(tmp_path_factory.mktemp("distribute"))
    yield started
    started.close()


# --- NumPy references, written by hand -------------------------------------------------------

CLASS_WEIGHT = np.array([2.0, 1.0, 0.5])  # distribute_common.CLASS_WEIGHT, class 1 unlisted
BINDING_WEIGHTS = {
    "label": 1.0,
    "box": 0.5,
    "box_sum": 1.0,
    "tok": 1.0,
    "tok_task": 2.0,
    "tok_sum": 0.25,
}


def np_heads(w, x):
    h = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    logits = h[:, 0:3]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {
        "label": e / e.sum(axis=1, keepdims=True),
        "box": h[:, 3:5],
        "tok": h[:, 5:8],
        "mask": 1.0 / (1.0 + np.exp(-h[:, 8:11])),
    }


def weighted_mean(values, weights):
    return float(np.sum(weights * values) / np.sum(weights)) if np.sum(weights) else 0.0


def np_exact_losses(batch, w):
    """Every binding of ``distribute_common.exact_bindings`` on the whole (global) batch."""
    b = {k: np.asarray(v) for k, v in batch.items()}
    p = np_heads(w, b["x"])
    n = len(b["x"])
    label = b["label"]
    routed = label != -1
    safe = np.where(routed, label, 0)
    picked = np.clip(p["label"][np.arange(n), safe], 1e-7, 1 - 1e-7)
    has_box, sw = b["has_box"].astype(float), b["sw"].astype(float)
    box_error = p["box"] - b["box"]
    tok_error = p["tok"] - b["tok"]
    huber = np.where(np.abs(tok_error) <= 1.0, 0.5 * tok_error**2, np.abs(tok_error) - 0.5)
    task = (b["task"] == 1).astype(float)
    losses = {
        "label": weighted_mean(-np.log(picked), routed * sw * CLASS_WEIGHT[safe]),
        "box": weighted_mean(np.mean(box_error**2, axis=1), has_box),
        "box_sum": float(np.sum(has_box * sw * np.mean(np.abs(box_error), axis=1)) / n),
        "tok": float(np.mean(huber)),
        "tok_task": weighted_mean(np.mean(tok_error**2, axis=1), task * sw),
        "tok_sum": float(np.sum(np.mean(tok_error**2, axis=1)) / n),
    }
    return losses, sum(BINDING_WEIGHTS[k] * v for k, v in losses.items())


def np_dice(batch, w):
    """Dice over the routed (``has_box``) examples, and how many there are."""
    b = {k: np.asarray(v) for k, v in batch.items()}
    routed = b["has_box"].astype(bool)
    y, p = b["mask"][routed], np_heads(w, b["x"])["mask"][routed]
    if not routed.any():
        return 0.0, 0
    return float(1 - 2 * np.sum(y * p) / (np.sum(y) + np.sum(p) + 1e-7)), int(routed.sum())


def np_parts(batch, sizes):
    return common.parts({k: np.asarray(v) for k, v in batch.items()}, sizes)


def assert_close(found, expected, rtol=RTOL):
    """``max |found - expected| <= rtol * max |expected|`` (relative to the largest value)."""
    found, expected = np.asarray(found, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-6)
    error = float(np.max(np.abs(found - expected), initial=0.0))
    assert error <= rtol * scale, f"{found} != {expected} (|diff| {error:.3g}, scale {scale:.3g})"


# --- MirroredStrategy, 2 replicas: the core --------------------------------------------------


def test_fixed_case_is_uneven(runs):
    core = runs.mirrored("core")
    first, second = np_parts(core["batch"], core["sizes"])
    assert core["sizes"] == [7, 4]
    assert (first["label"] != -1).sum() == 6 and (second["label"] != -1).sum() == 0
    assert first["has_box"].sum() == 1 and second["has_box"].sum() == 4


def test_every_reduction_is_exact_across_replicas(runs):
    core = runs.mirrored("core")
    expected, expected_total = np_exact_losses(core["batch"], core["w0"])
    single, mirrored = core["exact"]["single"][0], core["exact"]["mirrored"][0]
    for name, value in expected.items():
        assert_close(single["per_loss"][name], value)
        assert_close(mirrored["per_loss"][name], value)
    assert_close(single["total"], expected_total)
    assert_close(mirrored["total"], expected_total)
    assert (
        mirrored["counts"]
        == single["counts"]
        == {"label": 6, "box": 5, "box_sum": 5, "tok": 11, "tok_task": 4, "tok_sum": 11}
    )


def test_gradients_summed_over_replicas_equal_single_device(runs):
    core = runs.mirrored("core")
    single_gradient = np.asarray(core["exact"]["single"][1])
    assert np.abs(single_gradient).max() > 0.1
    assert_close(core["exact"]["mirrored"][1], single_gradient)


def test_per_replica_denominators_would_be_wrong(runs):
    """The reference is sensitive: per-replica means averaged differ from the exact values."""
    core = runs.mirrored("core")
    parts = np_parts(core["batch"], core["sizes"])
    local = [np_exact_losses(part, core["w0"])[0] for part in parts]
    exact, _ = np_exact_losses(core["batch"], core["w0"])
    for name in ("label", "box", "tok_task"):
        averaged = np.mean([values[name] for values in local])
        assert abs(averaged - exact[name]) > 0.05 * abs(exact[name]), name


def test_rank1_heads_are_exact_across_replicas(runs):
    """Issue 13 item 1: [B] targets and predictions are per-example values, routed and
    weighted exactly when the replicas hold different numbers of routed examples."""
    core = runs.mirrored("core")
    b = {k: np.asarray(v) for k, v in core["batch"].items()}
    h = b["x"].astype(np.float64) @ np.asarray(core["w0"], np.float64)
    task, routed = (b["task"] == 1).astype(float), (b["label"] != -1).astype(float)
    sw, has_box = b["sw"].astype(float), b["has_box"].astype(float)
    p = np.clip(1.0 / (1.0 + np.exp(-h[:, 8])), 1e-7, 1 - 1e-7)
    bce = -(has_box * np.log(p) + (1 - has_box) * np.log(1 - p))
    expected = {
        "reg": weighted_mean((h[:, 3] - sw) ** 2, task),
        "reg_bce": weighted_mean(bce, routed * sw),
    }
    single, mirrored = core["rank1"]["single"], core["rank1"]["mirrored"]
    for name, value in expected.items():
        assert_close(single[0]["per_loss"][name], value)
        assert_close(mirrored[0]["per_loss"][name], value)
    assert mirrored[0]["counts"] == single[0]["counts"] == {"reg": 4, "reg_bce": 6}
    assert np.abs(np.asarray(single[1])).max() > 0.01
    assert_close(mirrored[1], single[1])


def test_dice_is_weighted_by_routed_share(runs):
    core = runs.mirrored("core")
    parts = np_parts(core["batch"], core["sizes"])
    values = [np_dice(part, core["w0"]) for part in parts]
    share = sum(v * n for v, n in values) / sum(n for _, n in values)
    whole, _ = np_dice(core["batch"], core["w0"])
    assert_close(core["dice"]["single"][0]["per_loss"]["dice"], whole)
    assert_close(core["dice"]["mirrored"][0]["per_loss"]["dice"], share)
    # a batch-level loss is not exact under distribution (documented): the numbers differ
    assert abs(share - whole) > 1e-3


def test_property_two_replicas_equal_one_device(runs):
    stats = runs.mirrored("property")
    assert stats["failure"] is None, stats["failure"]
    assert stats["examples"] >= min(10, settings().max_examples)
    assert stats["dice_checked"] == stats["examples"]
    assert stats["routed_counts_differ"] > 0
    assert stats["max_loss_error"] <= RTOL and stats["max_gradient_error"] <= RTOL
    # the runners traced a handful of times, not once per example
    assert max(max(pair) for pair in stats["tracing_counts"].values()) <= 4


# --- Keras -----------------------------------------------------------------------------------


def _keras_reference(out):
    x, y, w = (np.asarray(out[k], np.float64) for k in ("x", "y", "w"))
    kernel, bias = np.asarray(out["kernel"], np.float64), np.asarray(out["bias"], np.float64)
    error = (x @ kernel + bias - y)[:, 0]
    return x, w, kernel, bias, error


def test_keras_compile_loss_is_not_the_global_masked_mean(runs):
    out = runs.mirrored("keras_difference")
    _, w, _, _, error = _keras_reference(out)
    squared = error**2
    global_mean = weighted_mean(squared, w)
    halves = [slice(0, 4), slice(4, 8)]
    mean_of_replica_means = np.mean([weighted_mean(squared[h], w[h]) for h in halves])
    values = out["values"]
    assert_close(values["funcsplit"], global_mean)
    assert_close(values["keras_mean_with_sample_weight"], mean_of_replica_means)
    assert_close(values["keras_default"], np.sum(w * squared) / 8)
    assert abs(values["keras_mean_with_sample_weight"] - global_mean) > 0.05 * global_mean
    assert abs(values["keras_default"] - global_mean) > 0.05 * global_mean


def test_keras_fit_step_vs_routed_model_step(runs):
    out = runs.mirrored("keras_difference")
    x, w, kernel, bias, error = _keras_reference(out)
    lr, halves = 0.1, [slice(0, 4), slice(4, 8)]
    exact_kernel = kernel - lr * (2 * (w * error) @ x / w.sum())[:, None]
    exact_bias = bias - lr * 2 * np.sum(w * error) / w.sum()
    keras_grad = sum(0.5 * 2 * (w[h] * error[h]) @ x[h] / w[h].sum() for h in halves)
    keras_bias_grad = sum(0.5 * 2 * np.sum(w[h] * error[h]) / w[h].sum() for h in halves)
    assert_close(out["funcsplit_fit"][0], exact_kernel)
    assert_close(out["funcsplit_fit"][1], exact_bias)
    assert_close(out["keras_fit"][0], kernel - lr * keras_grad[:, None])
    assert_close(out["keras_fit"][1], bias - lr * keras_bias_grad)
    assert np.abs(np.asarray(out["keras_fit"][0]) - exact_kernel).max() > 1e-3


def test_routed_model_fit_under_strategy_matches_one_device(runs):
    out = runs.mirrored("routed_model")
    single, mirrored = out["single"], out["mirrored"]
    initial_moved = False
    for a, b in zip(single["weights"], mirrored["weights"]):
        assert_close(b, a)
        initial_moved = initial_moved or np.abs(np.asarray(a)).max() > 0
    assert initial_moved
    assert sorted(single["history"]) == sorted(mirrored["history"])
    assert "label_loss" in single["history"] and "loss" in single["history"]
    for key, values in single["history"].items():
        assert_close(mirrored["history"][key], values)
    assert sorted(single["evaluate"]) == sorted(single["history"])
    for key, value in single["evaluate"].items():
        assert_close(mirrored["evaluate"][key], value)


def test_train_step_with_groups_under_strategy_matches_one_device(runs):
    out = runs.mirrored("train_step")
    single, mirrored = out["single"], out["mirrored"]
    assert len(single["totals"]) == 6  # 2 epochs of 3 batches (8, 8, 5)
    assert_close(mirrored["totals"], single["totals"])
    assert single["totals"][-1] < single["totals"][0] - 1e-3  # training moved
    for group in ("a", "b"):
        for a, b in zip(single["weights"][group], mirrored["weights"][group]):
            assert_close(b, a)


def test_distribute_dataset_gives_each_replica_its_part(runs):
    out = runs.mirrored("distribute_dataset")
    assert [b["sizes"] for b in out["batches"]] == [[4, 4], [4, 4], [3, 2]]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in out["batches"]]), out["x"])
    np.testing.assert_array_equal(
        np.concatenate([b["label"] for b in out["batches"]]), out["label"]
    )
    assert all(b["devices"][0] != b["devices"][1] for b in out["batches"])


# --- tf.data service -------------------------------------------------------------------------


def expected_service_row(i: int) -> dict:
    label = -1 if i % 4 == 0 else i % 3
    return {
        "id": i,
        "image": [[float(i)] * 2] * 2,
        "label": label,
        "route": label,
        "mask": [float(i % 2)],
        "weight": i / 10.0,
    }


def _check_rows(rows, copies):
    ids = sorted(row["id"] for row in rows)
    assert ids == sorted(list(range(20)) * copies)
    for row in rows:
        expected = expected_service_row(row["id"])
        assert row.keys() == expected.keys()
        assert_close(row.pop("weight"), expected.pop("weight"))
        assert row == expected


def test_service_distributed_epoch_splits_every_element_once(runs):
    out = runs.mirrored("service")
    assert out["workers"] == 2
    _check_rows(out["local"], copies=1)
    _check_rows(out["distributed_epoch"], copies=1)


def test_service_parallel_epochs_each_worker_produces_everything(runs):
    out = runs.mirrored("service")
    _check_rows(out["parallel_epochs"], copies=2)


# --- docs/scaling.md ------------------------------------------------------------------------


def test_scaling_page_runs_and_prints_what_it_says(runs):
    """Its python blocks run on 2 replicas in the subprocess; recipes (skip) must parse."""
    out = runs.mirrored("docs")
    assert out["ran"] >= 5 and out["skipped"] >= 2
    assert out["checked"] >= 5
    assert out["mismatches"] == []


# --- MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 --------------------------


def test_multiworker_exact_and_gradients_match_single_device(runs):
    workers = runs.multiworker()
    assert sorted(w["task"] for w in workers) == [0, 1]
    batch, sizes, w0 = common.fixed_case()
    expected, expected_total = np_exact_losses(batch, w0)
    values = [np_dice(part, w0) for part in np_parts(batch, sizes)]
    share = sum(v * n for v, n in values) / sum(n for _, n in values)
    for worker in workers:
        assert worker["replicas"] == 2
        single, distributed = worker["exact"]["single"], worker["exact"]["distributed"]
        for name, value in expected.items():
            assert_close(distributed[0]["per_loss"][name], value)
        assert_close(distributed[0]["total"], expected_total)
        assert np.abs(np.asarray(single[1])).max() > 0.1
        assert_close(distributed[1], single[1])
        assert_close(worker["dice"]["distributed"][0]["per_loss"]["dice"], share)


def test_multiworker_train_step_matches_single_device(runs):
    for worker in runs.multiworker():
        step = worker["train_step"]
        assert_close(step["totals"]["distributed"], step["totals"]["single"])
        for group in ("a", "b"):
            for a, b in zip(step["single"][group], step["distributed"][group]):
                assert_close(b, a)


# --- argument checks, in this process (default strategy) ------------------------------------


def _small():
    spec = fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, (None, 2)),
            "y": fs.Leaf(tf.float32, (None,)),
            "keep": fs.Leaf(tf.bool, (None,)),
        }
    )
    binding = fs.LossBinding("y", "mse", target="y", route=fs.route("keep"))
    return fs.compile(fs.SplitSpec(spec, inputs="x", losses=(binding,)))


def _data(n=6):
    return {
        "x": np.arange(2 * n, dtype="float32").reshape(n, 2),
        "y": np.arange(n, dtype="float32"),
        "keep": np.arange(n) % 2 == 0,
    }


def test_distribute_dataset_default_strategy_yields_the_split():
    compiled = _small()
    ds = tf.data.Dataset.from_tensor_slices(_data()).batch(4)
    got = list(fs.distribute.distribute_dataset(tf.distribute.get_strategy(), compiled, ds))
    assert len(got) == 2
    inputs, targets, weights = got[1]
    np.testing.assert_array_equal(inputs, _data()["x"][4:])
    np.testing.assert_array_equal(targets["y"], _data()["y"][4:])
    np.testing.assert_array_equal(weights["y"]["route"], [True, False])


@pytest.mark.parametrize(
    "make, path",
    [
        (lambda: tf.data.Dataset.from_tensor_slices(_data()), None),  # unbatched
        (
            lambda: tf.data.Dataset.from_tensor_slices(
                {**_data(), "x": np.ones((6, 3), "f4")}
            ).batch(2),
            "x",
        ),
    ],
    ids=["unbatched", "wrong-shape"],
)
def test_distribute_dataset_checks_before_distributing(make, path):
    with pytest.raises(fs.SpecError) as info:
        fs.distribute.distribute_dataset(tf.distribute.get_strategy(), _small(), make())
    if path is not None:
        assert f"'{path}'" in str(info.value)


def test_distribute_helpers_reject_what_is_not_compiled():
    ds = tf.data.Dataset.from_tensor_slices(_data()).batch(2)
    strategy = tf.distribute.get_strategy()
    with pytest.raises(fs.SpecError, match="CompiledSplit"):
        fs.distribute.distribute_dataset(strategy, _small().spec, ds)
    with pytest.raises(fs.SpecError, match="CompiledSplit"):
        fs.distribute.apply_with_service(_small().spec, ds, service="grpc://localhost:1")
    with pytest.raises(fs.SpecError, match="CompiledSplit"):
        fs.distribute.distribute_datasets_from_function(strategy, None, lambda ctx: ds)


def test_distribute_datasets_from_function_checks_each_pipeline():
    strategy = tf.distribute.get_strategy()

    def good(ctx):
        return tf.data.Dataset.from_tensor_slices(_data()).batch(ctx.get_per_replica_batch_size(3))

    inputs, targets, _ = next(
        iter(fs.distribute.distribute_datasets_from_function(strategy, _small(), good))
    )
    np.testing.assert_array_equal(inputs, _data()["x"][:3])
    np.testing.assert_array_equal(targets["y"], [0.0, 1.0, 2.0])
    with pytest.raises(fs.SpecError):
        fs.distribute.distribute_datasets_from_function(
            strategy, _small(), lambda ctx: tf.data.Dataset.from_tensor_slices(_data())
        )


def test_apply_with_service_checks_spec_and_mode():
    compiled = _small()
    good = tf.data.Dataset.from_tensor_slices(_data())
    with pytest.raises(fs.SpecError, match="processing_mode"):
        fs.distribute.apply_with_service(
            compiled, good, service="grpc://x:1", processing_mode="round_robin"
        )
    bad = tf.data.Dataset.from_tensor_slices({"x": np.ones((4, 2), "f4")})
    with pytest.raises(fs.SpecError):
        fs.distribute.apply_with_service(compiled, bad, service="grpc://x:1")


def test_reduce_result_sums_shares_and_counts_outside_replicas():
    result = fs.LossResult(tf.constant(2.5), {"y": tf.constant(2.5)}, {"y": tf.constant(3)})
    reduced = fs.distribute.reduce_result(tf.distribute.get_strategy(), result)
    assert float(reduced.total) == 2.5 and int(reduced.counts["y"]) == 3
    assert fs.distribute.replicas_in_sync() == 1
    assert float(fs.distribute.global_sum(tf.constant(4.0))) == 4.0


def test_public_names():
    assert sorted(fs.distribute.__all__) == [
        "apply_with_service",
        "distribute_dataset",
        "distribute_datasets_from_function",
        "global_sum",
        "reduce_result",
        "replicas_in_sync",
    ]
    for name in fs.distribute.__all__:
        assert getattr(fs.distribute, name).__doc__
