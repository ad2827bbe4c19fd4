"""TFDS features to element specs: decode, replace, restructure, batch (internal to fs.tfds).

The per-example structure is taken from TFDS itself: the features' own ``deserialize_example``
is traced in a `tf.data` map over an empty string (no data is read), so the result is the
``element_spec`` that ``tfds.load`` / ``builder.as_dataset`` produce, ragged sequences of
sequences and ``decoders`` included. Batching rules are pure Python and follow `tf.data`'s
``batch`` / ``padded_batch`` and ``ragged_batch``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

from funcsplit._src import paths
from funcsplit._src import structure
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any

Source = Any  # a DatasetBuilder, a DatasetInfo, a FeaturesDict or a tf.data.Dataset


def features_of(source: Source, where: str) -> tfds.features.FeatureConnector:
    """The top-level feature of a builder, a `DatasetInfo` or a feature.

    TFDS allows any top-level feature: a ``FeaturesDict`` (most datasets), a ``Sequence``
    (bair_robot_pushing_small's frames), a ``Translation``, ...; every one of them decodes
    with ``deserialize_example``.
    """
    if isinstance(source, tfds.core.DatasetBuilder):
        source = source.info
    if isinstance(source, tfds.core.DatasetInfo):
        source = source.features
    if isinstance(source, tfds.features.FeatureConnector):
        if hasattr(source, "deserialize_example"):
            return source
        raise SpecError.single(
            where,
            None,
            "a top-level feature (FeaturesDict, Sequence, Dataset, ...), as DatasetInfo has",
            f"a feature of type {type(source).__name__} on its own",
            "wrap it: tfds.features.FeaturesDict({'name': feature}), or pass the builder",
        )
    if isinstance(source, Mapping) and all(isinstance(v, tf.data.Dataset) for v in source.values()):
        raise SpecError.single(
            where,
            None,
            "one dataset",
            f"a dict of splits {sorted(source)}",
            "pass one split: tfds.load(name, split='train'), or the builder",
        )
    raise SpecError.single(
        where,
        None,
        "a tfds DatasetBuilder, DatasetInfo, top-level feature or tf.data.Dataset",
        f"{type(source).__name__}",
        "pass tfds.builder(name), builder.info, info.features or the dataset tfds.load returns",
    )


def supervised_keys_of(source: Source, where: str) -> Any:
    """The ``supervised_keys`` of a builder or `DatasetInfo`; a `SpecError` if it has none."""
    info = source.info if isinstance(source, tfds.core.DatasetBuilder) else source
    is_info = isinstance(info, tfds.core.DatasetInfo)
    keys = info.supervised_keys if is_info else None
    if not keys:
        name = getattr(info, "name", type(source).__name__)
        raise SpecError.single(
            where,
            None,
            "a dataset with supervised_keys for as_supervised=True",
            f"{name} has no supervised_keys",
            "use the feature dict (as_supervised=False) and name the paths",
        )
    return keys


def example_type_spec(features: tfds.features.FeatureConnector, decoders: Any = None) -> Any:
    """The per-example element spec of decoded examples (as ``tfds.load`` yields them)."""
    empty = tf.data.Dataset.from_tensors(tf.constant(b""))

    def decode(serialized: tf.Tensor) -> Any:
        return features.deserialize_example(serialized, decoders=decoders)

    return empty.map(decode).element_spec


_TENSORS = (tf.TensorSpec, tf.RaggedTensorSpec, tf.SparseTensorSpec)


def unsupported(tree: Any, where: str) -> list[Problem]:
    """A `Problem` for every decoded feature that is not a tensor, naming its path.

    A nested ``tfds.features.Dataset`` (RLDS ``steps``) decodes to a dataset per example:
    funcsplit routes tensors, so it is removed (``replace={path: None}``) or flattened first.
    """
    problems = []
    for keys, spec in structure.iter_paths(tree):
        if isinstance(spec, _TENSORS):
            continue
        path = paths.render(keys)
        if isinstance(spec, tf.data.DatasetSpec):
            inner = _inner_features(keys)
            problems.append(
                Problem(
                    where,
                    path,
                    "tensor features (funcsplit routes the tensors of one example)",
                    "a nested tfds.features.Dataset (a dataset per example, as RLDS 'steps')",
                    f"drop it: replace={{{path!r}: None}} (and remove it in your map), or "
                    f"flatten it first: ds.flat_map(lambda ex: ex[{keys[-1]!r}]) and describe "
                    f"one step with fs.tfds.element_spec({inner})",
                )
            )
        else:
            problems.append(
                Problem(
                    where,
                    path,
                    "tensor features: dense, ragged or sparse",
                    f"{type(spec).__name__}",
                    f"drop it with replace={{{path!r}: None}}, or replace it with the "
                    "tf.TypeSpec your map makes of it",
                )
            )
    return problems


def _inner_features(keys: tuple) -> str:
    """How to name the per-step features of a nested dataset feature, for a message."""
    if not keys:
        return "info.features.feature"
    return "info.features" + "".join(f"[{key!r}]" for key in keys) + ".feature"


def _is_spec(value: object) -> bool:
    return isinstance(value, tf.TypeSpec)


def replace_leaves(tree: Any, replace: Mapping[Any, tf.TypeSpec | None], where: str) -> Any:
    """Replaces (or, for ``None``, removes) the per-example specs at the given feature paths."""
    problems: list[Problem] = []
    plain = structure.map_leaves(lambda v: v, tree, is_leaf=_is_spec)
    for path, spec in replace.items():
        path_like = paths.check_path_like(path, where)
        problem = paths.problem(plain, path_like, where)
        if problem is not None:
            problems.append(problem)
            continue
        if spec is not None and not _is_spec(spec):
            problems.append(
                Problem(
                    where,
                    str(path_like),
                    "a per-example tf.TypeSpec (or None to remove the feature)",
                    f"{spec!r} of type {type(spec).__name__}",
                    "describe the feature as your map leaves it, e.g. tf.TensorSpec((32, 32, 3), "
                    "tf.float32)",
                )
            )
            continue
        keys = paths.resolve(plain, path_like, where)
        if not keys:
            problems.append(Problem(where, "<root>", "a feature path", "the root"))
            continue
        parent = structure.get(plain, keys[:-1])
        if not isinstance(parent, dict):
            problems.append(
                Problem(
                    where,
                    str(path_like),
                    "a feature of a feature dict",
                    f"an element of a {type(parent).__name__}",
                )
            )
        elif spec is None:
            del parent[keys[-1]]
        else:
            parent[keys[-1]] = spec
    raise_if_any(problems)
    return plain


def supervised(tree: Any, keys: Any, where: str, removed: tuple = ()) -> Any:
    """Restructures a feature dict as TFDS's ``as_supervised`` does: ``keys`` name features.

    TFDS looks each key up among the top-level features only (``features[key]``), so a key
    naming a nested feature (duke_ultrasound's ``das/dB``) fails in ``tfds.load`` as well.
    """
    if not isinstance(tree, Mapping):
        raise SpecError.single(
            where,
            None,
            "a dict of features at the top, for supervised_keys to name",
            f"{type(tree).__name__} at the top",
            "use the features as they are (as_supervised=False)",
        )
    missing = [key for key in tf.nest.flatten(keys) if key not in tree]
    if missing:
        raise SpecError.single(
            where,
            missing[0],
            "supervised_keys naming top-level features",
            f"no feature {missing[0]!r} (features: {sorted(tree)})",
            "do not remove a supervised feature with replace="
            if missing[0] in removed
            else "TFDS's as_supervised looks keys up among the top-level features only "
            "(tfds.load(..., as_supervised=True) raises a KeyError here too): use the "
            "features (as_supervised=False) and name the path",
            paths.close_matches(str(missing[0]), map(str, tree)),
        )
    return tf.nest.map_structure(lambda key: tree[key], keys)


def ragged_batched(spec: tf.TypeSpec, keys: tuple = ()) -> tf.TypeSpec:
    """The spec of a batch made by ``ds.ragged_batch`` from elements of ``spec`` (at ``keys``).

    Dense tensors with unknown dimensions become ragged up to their last unknown dimension;
    ragged tensors gain one ragged dimension; fully known tensors stay dense.
    """
    shape = [None, *spec.shape.as_list()]
    if isinstance(spec, tf.RaggedTensorSpec):
        return tf.RaggedTensorSpec(shape, spec.dtype, spec.ragged_rank + 1, spec.row_splits_dtype)
    if isinstance(spec, tf.TensorSpec):
        unknown = [i for i, dim in enumerate(shape) if i > 0 and dim is None]
        if unknown:
            return tf.RaggedTensorSpec(shape, spec.dtype, unknown[-1])
        return tf.TensorSpec(shape, spec.dtype)
    raise SpecError.single(
        "fs.tfds.element_spec(ragged=True)",
        paths.render(keys),
        "dense or ragged features (ragged_batch batches those)",
        f"{type(spec).__name__} {spec!r}",
        "batch with ds.batch (ragged=False) instead, or replace the feature",
    )


def map_specs(fn: Any, tree: Any, keys: tuple = ()) -> Any:
    """Maps ``fn(spec, keys)`` over the type specs of a nested structure."""
    if _is_spec(tree) or not structure.is_container(tree):
        return fn(tree, keys)
    pairs = [(key, map_specs(fn, value, (*keys, key))) for key, value in structure.children(tree)]
    if isinstance(tree, Mapping):
        return dict(pairs)
    if structure.is_namedtuple(tree):
        return type(tree)(*(value for _, value in pairs))
    return type(tree)(value for _, value in pairs)


def class_counts(features: Any, prefix: tuple = ()) -> dict[str, int]:
    """``{path: num_classes}`` for every `ClassLabel` feature, paths drawn as ``a/b``."""
    found: dict[str, int] = {}
    if isinstance(features, tfds.features.FeaturesDict):
        for key in sorted(features.keys()):
            found.update(class_counts(features[key], (*prefix, key)))
    elif isinstance(features, (tfds.features.Sequence, tfds.features.Dataset)):
        found.update(class_counts(features.feature, prefix))
    elif isinstance(features, tfds.features.ClassLabel) and features.num_classes is not None:
        found[paths.render(prefix)] = int(features.num_classes)
    return found


_UNSAFE = re.compile(r"[^0-9A-Za-z_.\-]+")


def safe_name(keys: tuple) -> str:
    """Joins keys with ``_`` and replaces characters unfit for a metric name with ``_``."""
    return _UNSAFE.sub("_", "_".join(str(k) for k in keys)).strip("_") or "loss"
