"""Strategies for concrete batches: `elements` of a spec, `predictions` for a split."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp
from keras.src import backend as keras_backend

import funcsplit as fs
from funcsplit.testing import _checks


def rebuild(node: Any, fn: Any, keys: tuple = ()) -> Any:
    """Maps ``fn(keys, leaf)`` over a spec structure, keeping container types and key order."""
    if isinstance(node, Mapping):
        return type(node)((k, rebuild(v, fn, (*keys, k))) for k, v in node.items())
    if isinstance(node, tuple) and hasattr(type(node), "_fields"):
        return type(node)(*(rebuild(v, fn, (*keys, f)) for f, v in zip(node._fields, node)))
    if isinstance(node, (list, tuple)):
        return type(node)(rebuild(v, fn, (*keys, i)) for i, v in enumerate(node))
    return fn(keys, node)


def get(node: Any, keys: tuple) -> Any:
    """The value at ``keys`` (dict keys, namedtuple field names, indices) inside ``node``."""
    for key in keys:
        node = getattr(node, key) if isinstance(key, str) and isinstance(node, tuple) else node[key]
    return node


def elements(
    spec: fs.ElementSpec | fs.SplitSpec,
    *,
    batch_size: int | st.SearchStrategy[int],
    max_magnitude: float | None = None,
    max_dim: int = 3,
    as_numpy: bool = False,
) -> st.SearchStrategy[Any]:
    """Concrete batched elements that fit ``spec``: what ``compiled.split`` is called on.

    An element has the spec's containers (same types, same dict key order) and, at each
    leaf, a `tf.Tensor`, `tf.RaggedTensor` or `tf.SparseTensor` (what a `tf.data` pipeline
    yields). Values are extreme but valid: zeros, the largest finite magnitudes of the dtype
    (or of ``max_magnitude``; no subnormal floats, which TensorFlow flushes to zero on the
    CPU), negative ints, empty and unicode strings, empty ragged rows;
    never NaN or infinity. Unknown (``None``) non-batch dimensions get a size from 1 to
    ``max_dim`` per leaf; ragged rows have 0 to ``max_dim`` items.

    Given a `fs.SplitSpec`, the elements also suit its bindings: sample-weight leaves are
    non-negative, and route leaves often hold the values their routes test for.

    Args:
        spec: the element spec, or a split spec (its ``element``).
        batch_size: the batch size (an int >= 0) or a strategy of them.
        max_magnitude: a bound on the absolute value of numbers (None: the dtype's range).
        max_dim: the largest size drawn for an unknown dimension.
        as_numpy: dense leaves as NumPy arrays of the leaf's dtype (strings as ``bytes``
            arrays), as ``tfds.as_numpy`` yields them; ragged and sparse leaves stay tensors.

    Returns:
        A strategy of nested structures of tensors (or arrays).

    Raises:
        InvalidArgument: for a spec that is not an `fs.ElementSpec` / `fs.SplitSpec` or a
            bad bound.

    Examples:
        >>> from hypothesis import given, settings
        >>> import funcsplit as fs, tensorflow as tf
        >>> from funcsplit.testing import strategies as fst
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "id": fs.Leaf(tf.string, (None,))})
        >>> @settings(max_examples=5, database=None)
        ... @given(fst.elements(spec, batch_size=3))
        ... def test(element):
        ...     assert element["x"].shape == (3, 2) and element["id"].dtype == tf.string
        >>> test()
    """
    split = spec if isinstance(spec, fs.SplitSpec) else None
    element_spec = _checks.check_element_spec("spec", split.element if split else spec)
    sizes = _checks.batch_sizes(batch_size)
    bound = _checks.check_magnitude("max_magnitude", max_magnitude, optional=True)
    _checks.check_int("max_dim", max_dim, minimum=1)
    nonnegative, route_values = _roles(split) if split is not None else (set(), {})
    drawn = _elements(element_spec, sizes, bound, max_dim, frozenset(nonnegative), route_values)
    return drawn.map(_as_numpy) if as_numpy else drawn


def examples(
    spec: fs.ElementSpec | fs.SplitSpec,
    *,
    max_magnitude: float | None = None,
    max_dim: int = 3,
    as_numpy: bool = False,
) -> st.SearchStrategy[Any]:
    """One unbatched example that fits ``spec``: what an unbatched dataset yields.

    Each leaf is one rank short of the spec's (the batch dimension gone): a scalar for a
    ``[B]`` leaf, a dense tensor (or a ragged one with one ragged dimension fewer) for a
    ragged leaf, as ``next(iter(tf.data.Dataset.from_tensor_slices(batch)))`` gives it. The
    values are those of `elements` (the first example of a batch).

    Args:
        spec: the element spec, or a split spec (its ``element``).
        max_magnitude: as in `elements`.
        max_dim: as in `elements`.
        as_numpy: as in `elements`.

    Returns:
        A strategy of nested structures of tensors (or arrays).

    Examples:
        >>> from hypothesis import given, settings
        >>> import funcsplit as fs, tensorflow as tf
        >>> from funcsplit.testing import strategies as fst
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.int32, (None,))})
        >>> @settings(max_examples=5, database=None)
        ... @given(fst.examples(spec))
        ... def test(example):
        ...     assert example["x"].shape == (2,) and example["y"].shape == ()
        >>> test()
    """
    batches = elements(spec, batch_size=1, max_magnitude=max_magnitude, max_dim=max_dim)
    first = batches.map(lambda batch: tf.nest.map_structure(_first_example, batch))
    return first.map(_as_numpy) if as_numpy else first


def _first_example(value: Any) -> Any:
    """Row 0 of a batched leaf, as `tf.data` unbatches it (a ragged row of ragged rank 1 is
    dense, a sparse row keeps the other dimensions)."""
    if isinstance(value, tf.SparseTensor):
        rest = value.dense_shape[1:]
        row = tf.sparse.slice(value, tf.zeros_like(value.dense_shape), tf.concat([[1], rest], 0))
        return tf.sparse.reshape(row, rest)
    return value[0]


def _as_numpy(element: Any) -> Any:
    def convert(value: Any) -> Any:
        return value.numpy() if isinstance(value, tf.Tensor) else value

    return tf.nest.map_structure(convert, element)


def _roles(split: fs.SplitSpec) -> tuple[set, dict]:
    """Leaves that hold sample weights, and the values each route leaf is tested for."""
    element = split.element
    nonnegative, route_values = set(), {}
    for binding in split.losses:
        if binding.sample_weight is not None:
            nonnegative.add(tuple(element.resolve(binding.sample_weight)))
        if binding.route is not None:
            keys = tuple(element.resolve(binding.route.path))
            value = binding.route.value
            values = value if binding.route.op == "one_of" else (value,)
            route_values.setdefault(keys, []).extend(v for v in values if v is not None)
    return nonnegative, {k: tuple(v) for k, v in route_values.items()}


@st.composite
def _elements(draw: Any, spec, sizes, bound, max_dim, nonnegative, route_values) -> Any:
    batch = draw(sizes)

    def leaf_value(keys: tuple, leaf: fs.Leaf) -> Any:
        return _leaf_value(
            draw, leaf, batch, bound, max_dim, keys in nonnegative, route_values.get(keys, ())
        )

    return rebuild(spec.structure, leaf_value)


def _scalars(dtype: tf.DType, bound: float | None, nonnegative: bool, extra: tuple):
    """A strategy of single values of ``dtype`` (as numpy scalars or str)."""
    if dtype == tf.string:
        base = st.text(st.characters(codec="utf-8"), max_size=4)
        extra = tuple(v for v in extra if isinstance(v, str))
    elif dtype == tf.bool:
        base = st.booleans()
    else:
        np_dtype = np.dtype(dtype.as_numpy_dtype) if dtype != tf.bfloat16 else np.float32
        if dtype.is_integer:
            low, high = dtype.min, dtype.max
            if bound is not None:
                low, high = max(low, -math.floor(bound)), min(high, math.floor(bound))
            base = hnp.from_dtype(
                np_dtype, min_value=max(low, 0) if nonnegative else low, max_value=high
            )
            extra = tuple(v for v in extra if low <= v <= high and (v >= 0 or not nonnegative))
        else:
            limit = float(np.finfo(np_dtype).max) if np_dtype.kind == "f" else None
            if bound is not None and limit is not None:
                limit = min(limit, bound)
            # No subnormals: TensorFlow flushes them to zero on the CPU (eager, traced and
            # XLA alike), so 3.9e-41 == 0.0 there and a NumPy reference would disagree.
            subnormal = {"allow_subnormal": False} if np_dtype.kind == "f" else {}
            base = hnp.from_dtype(
                np_dtype,
                allow_nan=False,
                allow_infinity=False,
                min_value=0.0 if nonnegative else None if limit is None else -limit,
                max_value=limit,
                **subnormal,
            )
            extra = tuple(
                v
                for v in extra
                if (not nonnegative or v >= 0) and (limit is None or abs(float(v)) <= limit)
            )
    return st.one_of(base, st.sampled_from(extra)) if extra else base


def _tensor(draw: Any, dtype: tf.DType, shape: list[int], scalars: Any) -> tf.Tensor:
    count = math.prod(shape)
    values = draw(st.lists(scalars, min_size=count, max_size=count))
    if dtype == tf.string:
        return tf.reshape(tf.constant(values, dtype=tf.string, shape=[count]), shape)
    if dtype == tf.bool:
        return tf.constant(np.array(values, dtype=bool).reshape(shape))
    source = tf.bfloat16 if dtype == tf.bfloat16 else dtype
    array = np.array(values, dtype=np.float32 if dtype == tf.bfloat16 else source.as_numpy_dtype)
    return tf.cast(tf.constant(array.reshape(shape)), dtype)


def _leaf_value(draw, leaf, batch, bound, max_dim, nonnegative, route_values) -> Any:
    scalars = _scalars(leaf.dtype, bound, nonnegative, route_values)
    size = st.integers(1, max_dim)
    if leaf.kind == "ragged":
        lengths, rows = [], batch
        for dim in leaf.shape[1 : leaf.ragged_rank + 1]:
            level = [dim if dim is not None else draw(st.integers(0, max_dim)) for _ in range(rows)]
            lengths.append(np.array(level, dtype=np.int64))
            rows = sum(level)
        inner = [d if d is not None else draw(size) for d in leaf.shape[leaf.ragged_rank + 1 :]]
        flat = _tensor(draw, leaf.dtype, [rows, *inner], scalars)
        return tf.RaggedTensor.from_nested_row_lengths(flat, lengths)
    shape = [batch, *(d if d is not None else draw(size) for d in leaf.shape[1:])]
    if leaf.kind == "sparse":
        present = np.array(
            draw(st.lists(st.booleans(), min_size=math.prod(shape), max_size=math.prod(shape))),
            dtype=bool,
        ).reshape(shape)
        indices = np.argwhere(present).astype(np.int64).reshape(-1, len(shape))
        values = _tensor(draw, leaf.dtype, [len(indices)], scalars)
        return tf.SparseTensor(indices, values, np.array(shape, dtype=np.int64))
    return _tensor(draw, leaf.dtype, shape, scalars)


def leafwise_squared_error(y_true: Any, y_pred: Any) -> tf.Tensor:
    """A loss for any target: per-example mean squared error, averaged over numeric leaves.

    ``y_true`` is a tensor or a nested structure (a subtree target); ``y_pred`` has the same
    structure with float predictions of the same shapes. For each numeric dense leaf it
    takes the per-example mean of ``(y_pred - y_true)²`` over the non-batch axes; the value
    of an example is the mean of those over the leaves. String, ragged and sparse leaves
    contribute nothing (their predictions are ignored); with no numeric leaf it is 0.
    `loss_fns` offers it for every target; `predictions` knows its outputs.

    Returns:
        A float32 tensor of shape ``[B]``.

    Examples:
        >>> import tensorflow as tf
        >>> from funcsplit.testing import strategies as fst
        >>> fst.leafwise_squared_error({"a": tf.constant([1.0, 2.0])},
        ...                            {"a": tf.constant([1.0, 4.0])}).numpy().tolist()
        [0.0, 4.0]
    """
    trues, preds = tf.nest.flatten(y_true), tf.nest.flatten(y_pred)
    per_leaf, batch = [], None
    for true, pred in zip(trues, preds):
        if isinstance(true, tf.RaggedTensor):
            batch = true.nrows(out_type=tf.int32)
        elif isinstance(true, tf.SparseTensor):
            batch = tf.cast(true.dense_shape[0], tf.int32)
        elif true.dtype == tf.string:
            batch = tf.shape(true)[0]
        else:
            true = tf.cast(true, tf.float32)
            error = tf.square(tf.cast(pred, tf.float32) - true)
            per_leaf.append(tf.reduce_mean(tf.reshape(error, [tf.shape(true)[0], -1]), axis=1))
    if not per_leaf:
        return tf.zeros([batch], tf.float32)
    return tf.add_n(per_leaf) / float(len(per_leaf))


_SAME_SHAPE = {"mse": "mse", "mae": "mae", "huber": "huber"}
_KERAS = (
    (keras.losses.MeanSquaredError, "mse"),
    (keras.losses.MeanAbsoluteError, "mae"),
    (keras.losses.Huber, "huber"),
)


def loss_kind(fn: Any) -> str | None:
    """The kind of prediction a loss wants: ``"mse"``/``"mae"``/``"huber"``, ``"leafwise"``."""
    if fn is leafwise_squared_error:
        return "leafwise"
    if isinstance(fn, str):
        return _SAME_SHAPE.get(fn)
    if isinstance(fn, fs.losses.BuiltinLoss):
        return _SAME_SHAPE.get(fn.name)
    return next((name for cls, name in _KERAS if isinstance(fn, cls)), None)


def _output_keys(binding: fs.LossBinding) -> tuple:
    output = binding.output
    keys = (
        ()
        if output is None
        else tuple(fs.Path.parse(output) if isinstance(output, str) else output)
    )
    if binding.group is not None:
        keys = (binding.group, *keys)
    if not all(isinstance(k, str) for k in keys):
        raise InvalidArgument(
            f"predictions() builds dicts: binding {binding.name!r} has output "
            f"{binding.output!r} with a non-string key"
        )
    return keys


def predictions(
    split: fs.SplitSpec, element: Any, *, max_magnitude: float = 1e3, masked: bool = False
) -> st.SearchStrategy[Any]:
    """Model predictions that fit ``split``'s bindings for one concrete ``element``.

    Each binding's output path (with its group first, if any) becomes nested dict keys; the
    whole predictions when the path is empty. The prediction has the target's shape, float32
    values within ``max_magnitude``; a ``[B]`` target of ``"mse"``, ``"mae"``, ``"huber"``
    gets a ``[B, 1]`` prediction (as Keras's losses align them) or a rank-1 ``[B]`` one (a
    squeezed ``Dense(1)``: one value per example). Supported losses: ``"mse"``, ``"mae"``,
    ``"huber"`` (names, `fs.losses` values or Keras ``Loss`` objects) and
    `leafwise_squared_error`.

    With ``masked=True``, the predictions of those registry losses carry a Keras mask at
    times (as ``Embedding(mask_zero=True)`` or ``Masking`` leave on a model's output): a
    random bool mask over the loss's values, of shape ``prediction.shape[:-1]`` (``[B]`` for
    a ``[B]`` prediction). Pass them to ``compiled.loss`` eagerly or inside your own trace
    (a mask lives on the tensor object).

    Args:
        split: the split spec whose bindings need predictions.
        element: a batch that fits ``split.element`` (e.g. drawn from `elements`).
        max_magnitude: a bound on the absolute value of predictions.
        masked: whether predictions may carry Keras masks.

    Returns:
        A strategy of predictions for ``compiled.loss(targets, predictions, weights)``.

    Raises:
        InvalidArgument: for an unsupported loss, an output path with index keys, or two
            bindings with the same output.

    Examples:
        >>> from hypothesis import given, settings
        >>> import funcsplit as fs, tensorflow as tf
        >>> from funcsplit.testing import strategies as fst
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None,))})
        >>> split = fs.SplitSpec(spec, inputs="x",
        ...                      losses=(fs.LossBinding("y", "mse", target="y", output="y"),))
        >>> element = {"x": tf.zeros((2, 2)), "y": tf.zeros((2,))}
        >>> @settings(max_examples=5, database=None)
        ... @given(fst.predictions(split, element))
        ... def test(predictions):
        ...     assert predictions["y"].shape in ((2, 1), (2,))
        >>> test()
    """
    if not isinstance(split, fs.SplitSpec):
        raise InvalidArgument(f"split must be an fs.SplitSpec, got {type(split).__name__}")
    bound = _checks.check_magnitude("max_magnitude", max_magnitude, optional=False)
    plan, seen = [], {}
    for binding in split.losses:
        kind = loss_kind(binding.fn)
        if kind is None:
            raise InvalidArgument(
                f"predictions() does not know the outputs of binding {binding.name!r}'s loss "
                f"{binding.fn!r}: it supports mse, mae, huber and leafwise_squared_error"
            )
        keys = _output_keys(binding)
        clash = [k for k in seen if k[: len(keys)] == keys or keys[: len(k)] == k]
        if clash:
            raise InvalidArgument(
                f"bindings {seen[clash[0]]!r} and {binding.name!r} have overlapping outputs"
            )
        seen[keys] = binding.name
        target = get(element, tuple(split.element.resolve(binding.target)))
        plan.append((keys, kind, target))
    if not isinstance(masked, bool):
        raise InvalidArgument(f"masked must be a bool, got {masked!r}")
    return _predictions(tuple(plan), bound, masked)


def _prediction_shape(target: Any, kind: str, rank1: bool) -> list[int] | None:
    if isinstance(target, (tf.RaggedTensor, tf.SparseTensor)) or target.dtype == tf.string:
        return None
    shape = target.shape.as_list()
    return [*shape, 1] if len(shape) == 1 and kind != "leafwise" and not rank1 else shape


def _with_mask(draw: Any, prediction: tf.Tensor) -> tf.Tensor:
    """The prediction carrying a random Keras mask over its loss values (a new tensor)."""
    shape = prediction.shape.as_list()
    mask_shape = shape[:-1] if len(shape) > 1 else shape
    mask = draw(hnp.arrays(np.bool_, mask_shape))
    masked = tf.identity(prediction)
    keras_backend.set_keras_mask(masked, tf.constant(mask))
    return masked


@st.composite
def _predictions(draw: Any, plan: tuple, bound: float, masked: bool) -> Any:
    values = st.floats(-bound, bound, width=32, allow_nan=False, allow_infinity=False)

    def one(kind: str, target: Any) -> Any:
        rank1 = kind != "leafwise" and draw(st.booleans())
        shape = _prediction_shape(target, kind, rank1)
        if shape is None:
            if kind != "leafwise":
                raise InvalidArgument(f"predictions(): {kind} needs a numeric dense target")
            batch = (
                target.nrows()
                if isinstance(target, tf.RaggedTensor)
                else target.dense_shape[0]
                if isinstance(target, tf.SparseTensor)
                else tf.shape(target)[0]
            )
            return tf.zeros([int(batch)], tf.float32)
        prediction = _tensor(draw, tf.float32, shape, values)
        if masked and kind != "leafwise" and draw(st.booleans()):
            return _with_mask(draw, prediction)
        return prediction

    out: Any = None
    for keys, kind, target in plan:
        value = (
            rebuild(target, lambda _, leaf: one(kind, leaf))
            if kind == "leafwise"
            else one(kind, target)
        )
        if not keys:
            return value
        out = {} if out is None else out
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return {} if out is None else out
