"""Parity drawn with the public strategies: any structure, split and batch, TF equals JAX.

Structures, split specs, elements and predictions come from `funcsplit.testing.strategies`
(the ones users call). Leaves JAX cannot carry (ragged, sparse, string) must be named by
`funcsplit.jax.compile` when a split uses them; otherwise the JAX per-loss values, totals and
counts equal TensorFlow's. The TF-only `leafwise_squared_error` gets a JAX twin.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
fst = pytest.importorskip("funcsplit.testing.strategies")

import tensorflow as tf  # noqa: E402
from hypothesis import assume  # noqa: E402
from hypothesis import event  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import funcsplit as fs  # noqa: E402
import funcsplit.jax as fsj  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5
_NUMERIC = (tf.float32, tf.float16, tf.float64, tf.int32, tf.int64, tf.uint8, tf.bool)


def jax_leafwise_squared_error(y_true, y_pred):
    """`fst.leafwise_squared_error` in JAX, for targets whose leaves are all numeric."""
    per_leaf = []
    for true, pred in zip(jax.tree.leaves(y_true), jax.tree.leaves(y_pred)):
        true = jnp.asarray(true).astype(jnp.float32)
        error = jnp.square(jnp.asarray(pred).astype(jnp.float32) - true)
        per_leaf.append(jnp.mean(error.reshape(true.shape[0], -1), axis=1))
    return sum(per_leaf) / float(len(per_leaf))


def _jax_twin(split: fs.SplitSpec) -> fs.SplitSpec:
    def twin(binding):
        if binding.fn is fst.leafwise_squared_error:
            return attrs.evolve(binding, fn=jax_leafwise_squared_error)
        return binding

    return attrs.evolve(split, losses=tuple(twin(b) for b in split.losses))


def _carried(value):
    """Dense numeric tensors to NumPy; ragged / sparse / string leaves left as they are."""
    if isinstance(value, tf.Tensor) and value.dtype != tf.string:
        return value.numpy()
    return value


_STRUCTURES = st.one_of(
    fst.structures(max_leaves=5),
    fst.structures(max_leaves=5, leaves=fst.leaves(dtypes=_NUMERIC, kinds=("dense",))),
)


def _narrowing_keeps(value) -> bool:
    """Whether JAX's 32-bit narrowing (x64 off) keeps every value of a 64-bit array exactly."""
    value = np.asarray(value)
    if value.dtype not in (np.float64, np.int64, np.uint64):
        return True
    narrow = value.astype(jax.dtypes.canonicalize_dtype(value.dtype))
    tiny = np.finfo(np.float32).tiny
    denormal = value.dtype.kind == "f" and np.any((value != 0) & (np.abs(value) < tiny))
    return not denormal and np.array_equal(narrow.astype(value.dtype), value)


@given(data=st.data(), x64=st.booleans())
def test_public_strategies_parity(data, x64):
    """With 64-bit types on, exact; off, for elements whose route leaves survive narrowing."""
    # jax.enable_x64 since jax 0.7; jax.experimental.enable_x64 before
    enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    with enable_x64(x64):
        _check_parity(data, x64)


def _check_parity(data, x64: bool) -> None:
    spec = data.draw(_STRUCTURES, label="spec")
    split = data.draw(fst.split_specs(spec, min_bindings=1), label="split")
    try:
        compiled = fsj.compile(_jax_twin(split))
    except fs.SpecError as error:
        allowed = {
            str(path)
            for path, leaf in spec.leaves
            if leaf.kind != "dense" or leaf.dtype == tf.string
        }
        if not x64:  # route values outside the 32-bit range
            allowed |= {str(spec.resolve(b.route.path)) for b in split.losses if b.route}
        assert error.problems and all(p.where.startswith("funcsplit.jax") for p in error.problems)
        assert set(error.paths) <= allowed
        event("compile named leaves JAX cannot carry")
        return
    tf_compiled = fs.compile(split)
    element = data.draw(fst.elements(split, batch_size=st.integers(1, 4), max_magnitude=1e3))
    predictions = data.draw(fst.predictions(split, element, max_magnitude=1e3))
    if not x64:
        route_leaves = [fs.Path(b.route.path).keys for b in compiled.plan.losses if b.route]
        assume(all(_narrowing_keeps(_get(element, keys)) for keys in route_leaves))

    _, tf_targets, tf_weights = tf_compiled.split.python_function(element)
    expected = tf_compiled.loss.python_function(tf_targets, predictions, tf_weights)

    _, targets, weights = compiled.split(tf.nest.map_structure(_carried, element))
    result = jax.jit(compiled.loss)(
        targets, tf.nest.map_structure(np.asarray, predictions), weights
    )
    for name, value in expected.per_loss.items():
        np.testing.assert_allclose(
            result.per_loss[name], value.numpy(), rtol=RTOL, atol=ATOL, err_msg=name
        )
        assert int(result.counts[name]) == int(expected.counts[name])
        assert result.per_loss[name].dtype == jnp.float32
    np.testing.assert_allclose(result.total, expected.total.numpy(), rtol=RTOL, atol=ATOL)
    event(f"parity checked (x64={x64})")


def _get(node, keys):
    for key in keys:
        node = (
            getattr(node, key) if isinstance(key, str) and hasattr(node, "_fields") else node[key]
        )
    return node
