"""The JAX examples run: seed example 1 with two optax optimizers, and TFDS -> optax."""

from __future__ import annotations

import importlib.util
import math
import pathlib

import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_groups_example_trains_two_models_with_two_optimizers():
    history = _load("jax_groups").main(steps=2)
    assert len(history) == 2
    assert all(math.isfinite(v) for step in history for v in step)


def test_tfds_example_routes_only_labelled_examples():
    pytest.importorskip("tensorflow_datasets")
    history = _load("jax_tfds").main(steps=3)
    assert len(history) == 3
    for step in history:
        assert step["counts"] == {"label": 8.0, "pixels": 32.0}
        assert math.isfinite(step["total"])
        expected = step["per_loss"]["label"] + 10.0 * step["per_loss"]["pixels"]
        assert step["total"] == pytest.approx(expected, rel=1e-5)
