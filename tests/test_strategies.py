"""Tests for `funcsplit.testing.strategies`: what they draw is valid, bounds hold, bad
arguments fail at once, and the how-to page runs."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import funcsplit as fs
import funcsplit.testing
from funcsplit.testing import strategies as fst

HOWTO = pathlib.Path(__file__).resolve().parents[1] / "docs" / "howto" / "testing.md"


pytestmark = pytest.mark.usefixtures("quiet_retracing_warnings")


def depth(node: Any) -> int:
    if isinstance(node, Mapping):
        return 1 + max(depth(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return 1 + max(depth(v) for v in node)
    return 0


def containers(node: Any) -> list[Any]:
    if isinstance(node, Mapping):
        return [node, *(c for v in node.values() for c in containers(v))]
    if isinstance(node, (list, tuple)):
        return [node, *(c for v in node for c in containers(v))]
    return []


def type_specs(element: Any) -> Any:
    if isinstance(element, Mapping):
        return {k: type_specs(v) for k, v in element.items()}
    if isinstance(element, tuple) and hasattr(type(element), "_fields"):
        return type(element)(*(type_specs(v) for v in element))
    if isinstance(element, (list, tuple)):
        return type(element)(type_specs(v) for v in element)
    return tf.type_spec_from_value(element)


def numbers(element: Any) -> list[np.ndarray]:
    out = []
    for value in tf.nest.flatten(element):
        value = getattr(value, "flat_values", getattr(value, "values", value))  # not row splits
        if value.dtype.is_floating or value.dtype.is_integer:
            out.append(value.numpy())
    return out


# ------------------------------------------------------------------------------ the public face


def test_the_public_names_are_listed_and_documented():
    assert funcsplit.testing.__all__ == ["strategies"]
    assert fs.testing.strategies is fst
    for name in fst.__all__:
        value = getattr(fst, name)
        assert value.__doc__ and ">>>" in value.__doc__, name


# ------------------------------------------------------------------------ structures and leaves


@given(fst.structures(max_depth=2, max_leaves=5, min_leaves=2))
def test_structures_respect_their_bounds(spec):
    assert isinstance(spec, fs.ElementSpec)
    assert 2 <= len(spec.paths) <= 5
    assert 1 <= depth(spec.structure) <= 2
    assert all(len(c) > 0 for c in containers(spec.structure))
    for _, leaf in spec.leaves:
        assert leaf.shape[0] is None and leaf.rank <= 5


@given(fst.structures(containers=("dict",), max_leaves=6, keys=st.sampled_from("abcdefgh")))
def test_structures_use_only_the_containers_and_keys_asked_for(spec):
    for node in containers(spec.structure):
        assert isinstance(node, dict) and set(node) <= set("abcdefgh")


@given(fst.structures(max_depth=0))
def test_a_structure_of_depth_zero_is_one_leaf(spec):
    assert isinstance(spec.structure, fs.Leaf)


@given(fst.leaves(kinds=("ragged",), max_rank=3, dtypes=(tf.string,)))
def test_leaves_respect_kind_rank_and_dtype(leaf):
    assert leaf.kind == "ragged" and leaf.dtype == tf.string
    assert 2 <= leaf.rank <= 4 and 1 <= leaf.ragged_rank < leaf.rank


def test_drawn_keys_include_slashes_digits_and_unicode():
    keys = set()

    @settings(max_examples=300, database=None, derandomize=True)
    @given(fst.dict_keys())
    def collect(key):
        keys.add(key)

    collect()
    assert any("/" in k for k in keys)
    assert any(k.isdigit() for k in keys)
    assert any(not k.isascii() for k in keys)


# ------------------------------------------------------------------------------------ elements


@given(st.data())
def test_elements_fit_their_spec_and_stay_finite(data):
    spec = data.draw(
        fst.structures(max_leaves=6, leaves=fst.leaves(kinds=("dense", "ragged", "sparse")))
    )
    batch = data.draw(st.integers(0, 3))
    element = data.draw(fst.elements(spec, batch_size=batch, max_magnitude=1e6))
    spec.check(type_specs(element), batched=True)
    for path in spec.paths:
        value = element
        for key in path:
            value = (
                getattr(value, key)
                if isinstance(key, str) and isinstance(value, tuple)
                else value[key]
            )
        rows = (
            value.dense_shape[0]
            if isinstance(value, tf.SparseTensor)
            else (value.nrows() if isinstance(value, tf.RaggedTensor) else tf.shape(value)[0])
        )
        assert int(rows) == batch, path
    for array in numbers(element):
        assert np.all(np.isfinite(array)) and np.all(np.abs(array.astype(np.float64)) <= 1e6)


@given(st.data())
def test_elements_of_a_split_give_sample_weights_that_are_not_negative(data):
    spec = data.draw(fst.structures(max_leaves=6))
    split = data.draw(fst.split_specs(spec, min_bindings=1))
    element = data.draw(fst.elements(split, batch_size=3))
    for b in split.losses:
        if b.sample_weight is not None:
            value = element
            for key in b.sample_weight:
                value = (
                    getattr(value, key)
                    if isinstance(key, str) and isinstance(value, tuple)
                    else value[key]
                )
            assert np.all(value.numpy().astype(np.float64) >= 0)


def test_elements_reach_the_extremes():
    spec = fs.ElementSpec.from_structure({"i": fs.Leaf(tf.int32), "s": fs.Leaf(tf.string)})
    seen = {"negative": False, "extreme": False, "empty string": False}

    @settings(max_examples=200, database=None, derandomize=True)  # not flaky
    @given(fst.elements(spec, batch_size=4))
    def collect(element):
        ints = element["i"].numpy()
        seen["negative"] |= bool((ints < 0).any())
        seen["extreme"] |= bool((np.abs(ints.astype(np.int64)) > 2**30).any())
        seen["empty string"] |= bool((element["s"].numpy() == b"").any())

    collect()
    assert all(seen.values()), seen


# ----------------------------------------------------------------- split specs, routes, outputs


@given(st.data())
def test_split_specs_compile_and_account_for_every_leaf(data):
    spec = data.draw(fst.structures(max_leaves=6))
    split = data.draw(fst.split_specs(spec, min_bindings=1, max_bindings=3, max_groups=2))
    assert split.strict and 1 <= len(split.losses) <= 3
    assert len({b.name for b in split.losses}) == len(split.losses)
    groups = {b.group for b in split.losses}
    assert groups == {None} or (None not in groups and set(split.inputs) == groups)
    compiled = fs.compile(split)
    assert all(roles for _, _, roles in compiled.plan.roles)


@given(st.data())
def test_routes_compile_on_their_leaf(data):
    spec = data.draw(fst.structures(max_leaves=5))
    per_example = fst.per_example_paths(spec)
    if not per_example:
        with pytest.raises(InvalidArgument, match="per-example"):
            fst.routes(spec)
        return
    route = data.draw(fst.routes(spec))
    assert route.path in per_example
    binding = fs.LossBinding("b", fst.leafwise_squared_error, target=route.path, route=route)
    fs.compile(fs.SplitSpec(spec, inputs=list(spec.paths), losses=(binding,)))


@given(st.data())
def test_elements_keep_max_magnitude_with_route_values(data):
    """Route values are injected into their leaves, but never beyond ``max_magnitude`` (a float
    route value of 7e12 in a target once overflowed a float32 loss in a property test)."""
    spec = data.draw(fst.structures(max_leaves=5))
    split = data.draw(fst.split_specs(spec, min_bindings=1))
    element = data.draw(fst.elements(split, batch_size=3, max_magnitude=10.0))
    for value in tf.nest.flatten(element):
        value = getattr(value, "flat_values", getattr(value, "values", value))  # not row splits
        if value.dtype.is_floating or value.dtype.is_integer:
            assert np.all(np.abs(tf.cast(value, tf.float64).numpy()) <= 10.0)


@given(st.data())
def test_predictions_fit_the_losses_they_are_for(data):
    spec = data.draw(fst.structures(max_leaves=5))
    split = data.draw(fst.split_specs(spec, min_bindings=1))
    element = data.draw(fst.elements(split, batch_size=2, max_magnitude=1e3))
    predictions = data.draw(fst.predictions(split, element))
    compiled = fs.compile(split)
    _, targets, weights = compiled.split.python_function(element)
    result = compiled.loss.python_function(targets, predictions, weights)
    assert np.isfinite(float(result.total))


# ----------------------------------------------------------------- arguments checked up front

SPEC = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2))})
BAD_ARGUMENTS = {
    "max_depth<0": (fst.structures, {"max_depth": -1}, "max_depth"),
    "min>max leaves": (fst.structures, {"min_leaves": 5, "max_leaves": 2}, "min_leaves"),
    "depth 0, 2 leaves": (fst.structures, {"max_depth": 0, "min_leaves": 2}, "min_leaves"),
    "unknown container": (fst.structures, {"containers": ("set",)}, "containers"),
    "leaves not a strategy": (fst.structures, {"leaves": fs.Leaf(tf.int32)}, "leaves"),
    "no dtypes": (fst.leaves, {"dtypes": ()}, "dtypes"),
    "unknown kind": (fst.leaves, {"kinds": ("dense", "jagged")}, "kinds"),
    "rank 5": (fst.leaves, {"max_rank": 5}, "max_rank"),
    "max_dim 0": (fst.leaves, {"max_dim": 0}, "max_dim"),
    "spec not a spec": (fst.elements, {"spec": {"x": 1}, "batch_size": 2}, "ElementSpec"),
    "negative batch": (fst.elements, {"spec": SPEC, "batch_size": -1}, "batch_size"),
    "bool batch": (fst.elements, {"spec": SPEC, "batch_size": True}, "batch_size"),
    "magnitude inf": (
        fst.elements,
        {"spec": SPEC, "batch_size": 1, "max_magnitude": float("inf")},
        "max_magnitude",
    ),
    "no route leaf": (fst.routes, {"spec": SPEC}, "per-example"),
    "min>max bindings": (
        fst.split_specs,
        {"spec": SPEC, "min_bindings": 3, "max_bindings": 1},
        "min_bindings",
    ),
    "fns not callable": (fst.split_specs, {"spec": SPEC, "fns": "mse"}, "fns"),
    "empty name": (fst.bindings, {"spec": SPEC, "name": " "}, "name"),
    "predictions of a spec": (fst.predictions, {"split": SPEC, "element": {}}, "SplitSpec"),
}


@pytest.mark.parametrize("call", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_fail_when_the_strategy_is_built(call):
    fn, kwargs, fragment = call
    positional = [kwargs.pop(k) for k in ("spec", "split", "element") if k in kwargs]
    with pytest.raises(InvalidArgument, match=fragment):
        fn(*positional, **kwargs)


def test_predictions_reject_losses_they_do_not_know():
    spec = fs.ElementSpec.from_structure({"y": fs.Leaf(tf.int64, (None,))})
    split = fs.SplitSpec(
        spec,
        inputs={},
        losses=(fs.LossBinding("y", "sparse_categorical_crossentropy", target="y", output="y"),),
    )
    with pytest.raises(InvalidArgument, match="sparse_categorical_crossentropy"):
        fst.predictions(split, {"y": tf.zeros([2], tf.int64)})


# ------------------------------------------------------------------------------- the how-to page


def test_the_howto_page_runs():
    """Every ```python block of docs/howto/testing.md, in order; then each test it defines."""
    blocks = re.findall(r"```python\n(.*?)```", HOWTO.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks
    namespace: dict[str, Any] = {"__name__": "howto_testing"}
    for block in blocks:
        exec(compile(block, str(HOWTO), "exec"), namespace)  # our own page
    tests = [v for k, v in namespace.items() if k.startswith("test_") and callable(v)]
    assert tests
    for test in tests:
        test()
