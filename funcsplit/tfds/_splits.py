"""Element specs, bindings and splits from TFDS builders, infos, features and datasets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from funcsplit._src import structure
from funcsplit._src.bindings import LossBinding
from funcsplit._src.bindings import Route
from funcsplit._src.bindings import SplitSpec
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.paths import Path
from funcsplit._src.spec import ElementSpec
from funcsplit._src.spec import Leaf
from funcsplit.tfds import _features


def element_spec(
    source: Any,
    *,
    as_supervised: bool = False,
    ragged: bool = False,
    replace: Mapping[Any, tf.TypeSpec | None] | None = None,
    decoders: Any = None,
    batched: bool | None = None,
) -> ElementSpec:
    """The `ElementSpec` of batches of a TFDS dataset, from its builder or its dataset.

    From a builder, a ``DatasetInfo`` or a top-level feature the per-example structure is what
    TFDS's own decoding produces (traced on no data, nothing is read or downloaded); a
    builder's examples are single examples, so the spec adds the batch dimension. Keys keep
    TFDS's names, ``/`` included (coco's ``image/filename``: the string path
    ``"image/filename"`` names it, ``fs.Path(("image/filename",))`` always does). Any
    top-level feature works: a ``Sequence`` of a dict (bair_robot_pushing_small's frames)
    gives the dict's paths, each leaf with its time axis after the batch axis.

    Args:
        source: a ``tfds.core.DatasetBuilder``, a ``tfds.core.DatasetInfo``, a top-level
            feature (``tfds.features.FeaturesDict``, ``Sequence``, ...), or a
            `tf.data.Dataset` that ``tfds.load`` returned (batched or not; its
            ``element_spec`` is read as it is).
        as_supervised: the ``(input, target)`` tuples of ``tfds.load(as_supervised=True)``,
            from the builder's ``supervised_keys`` (builders and infos only).
        ragged: batches made with ``ds.ragged_batch`` (variable-length features such as
            coco's ``objects`` are ragged). Otherwise ``ds.batch`` / ``ds.padded_batch`` /
            ``tfds.load(batch_size=...)``: dense, unknown dimensions ``None``.
        replace: ``{feature path: per-example tf.TypeSpec}`` for the features your
            preprocessing map changes (a resized float image), ``None`` for one it removes.
            Applied to the feature dict before ``as_supervised``.
        decoders: the ``decoders=`` passed to ``tfds.load`` (e.g. ``SkipDecoding``).
        batched: whether the dataset source yields batches (a builder's yield examples:
            ``False`` or ``None``). ``None`` infers it
            as `ElementSpec.from_dataset` does: ``tfds.load(batch_size=...)`` and datasets
            batched in a map chain are known; ``tfds.load`` without ``batch_size`` is known
            only by its shapes (a scalar feature), so a dataset whose features are all
            sequences (conll2003, wikiann) needs ``batched=False``.

    Returns:
        The spec of the batches (batch dimension ``None``), for `SplitSpec`.

    Raises:
        SpecError: for an unknown source, a path in ``replace`` that names no feature (with
            the nearby paths), ``as_supervised`` on a dataset without ``supervised_keys``,
            a dataset that does not say whether it is batched, or a feature that is not a
            tensor (a nested ``tfds.features.Dataset``, RLDS ``steps``: drop it with
            ``replace={"steps": None}``, or flatten it first), each naming its path.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf, tensorflow_datasets as tfds
        >>> features = tfds.features.FeaturesDict({
        ...     "image": tfds.features.Image(shape=(28, 28, 1)),
        ...     "label": tfds.features.ClassLabel(num_classes=10)})
        >>> fs.tfds.element_spec(features)
        ElementSpec(image: uint8[None, 28, 28, 1], label: int64[None])
        >>> fs.tfds.element_spec(features, replace={"image": tf.TensorSpec((8, 8, 1), tf.float32)})
        ElementSpec(image: float32[None, 8, 8, 1], label: int64[None])
        >>> frames = tfds.features.Sequence({"action": tfds.features.Tensor(shape=(4,),
        ...     dtype=tf.float32)}, length=30)
        >>> fs.tfds.element_spec(frames)
        ElementSpec(action: float32[None, 30, 4])
    """
    where = "fs.tfds.element_spec"
    if isinstance(source, tf.data.Dataset):
        if as_supervised or ragged or replace or decoders is not None:
            raise SpecError.single(
                where,
                None,
                "only batched= with a tf.data.Dataset (its element_spec is final)",
                "as_supervised / ragged / replace / decoders",
                "pass the builder (tfds.builder(name)) to describe a dataset before loading it",
            )
        return ElementSpec.from_dataset(source, batched=batched)
    if batched:
        raise SpecError.single(
            where,
            None,
            "batched=True only with a tf.data.Dataset source that yields batches",
            f"batched=True with a {type(source).__name__}, whose datasets yield examples",
            "leave batched out: the spec is that of the batches you make of them",
        )
    features = _features.features_of(source, where)
    tree = _features.example_type_spec(features, decoders)
    if replace:
        tree = _features.replace_leaves(tree, replace, f"{where} replace")
    raise_if_any(_features.unsupported(tree, where))
    if as_supervised:
        keys = _features.supervised_keys_of(source, where)
        removed = tuple(key for key, spec in (replace or {}).items() if spec is None)
        tree = _features.supervised(tree, keys, where, removed)
    if ragged:
        return ElementSpec(_features.map_specs(_features.ragged_batched, tree))
    return ElementSpec.from_structure(tree, batched=False)


def _as_spec(source: Any) -> ElementSpec:
    return source if isinstance(source, ElementSpec) else element_spec(source)


def binding_name(path: str | Path | tuple) -> str:
    """A metric-safe binding name for a feature path: keys joined by ``_``, ``/`` replaced.

    Keras shows each binding as ``<name>_loss``; names with ``/`` or spaces read badly there.

    Examples:
        >>> import funcsplit as fs
        >>> fs.tfds.binding_name(fs.Path(("image/filename",)))
        'image_filename'
        >>> fs.tfds.binding_name("objects/label")
        'objects_label'
    """
    keys = Path.parse(path).keys if isinstance(path, str) else Path(path).keys
    return _features.safe_name(keys)


def feature_bindings(
    source: Any,
    under: str | Path | tuple,
    fn: Any,
    *,
    name: str = "{key}",
    output: str | None = "{name}",
    weight: float = 1.0,
    route: Route | None = None,
    sample_weight: str | Path | tuple | None = None,
    group: str | None = None,
) -> tuple[LossBinding, ...]:
    """One `LossBinding` per feature (leaf) under a path: celeb_a's 40 attributes at once.

    Args:
        source: an `ElementSpec`, or anything `element_spec` takes.
        under: the path of a feature dict (``"attributes"``) or of one feature.
        fn: the loss of every binding (a registry name, a callable or a Keras ``Loss``).
        name: each binding's name, a format string: ``{key}`` is the feature's path below
            ``under`` made metric-safe by `binding_name` (the feature's own name for a leaf).
        output: each binding's path into the predictions, a format string with ``{name}``
            (the binding's name) and ``{key}``; ``None`` for the whole predictions.
        weight: the static weight of each binding.
        route: an optional `route` shared by every binding.
        sample_weight: an optional per-example weight leaf shared by every binding.
        group: an optional model / optimizer group for every binding.

    Returns:
        The bindings, in the features' `tf.nest` order (sorted keys), with targets given as
        exact `Path` values.

    Raises:
        SpecError: if ``under`` names nothing in the spec (with the nearby paths).

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"image": fs.Leaf(tf.float32, (None, 4)),
        ...     "attributes": {"Smiling": fs.Leaf(tf.bool), "Bald": fs.Leaf(tf.bool)}})
        >>> bindings = fs.tfds.feature_bindings(spec, "attributes", "binary_crossentropy")
        >>> [(b.name, str(b.target), str(b.output)) for b in bindings]
        [('Bald', 'attributes/Bald', 'Bald'), ('Smiling', 'attributes/Smiling', 'Smiling')]
    """
    spec = _as_spec(source)
    root = spec.resolve(under, "fs.tfds.feature_bindings under")
    node = structure.get(spec.structure, root.keys)
    below = [keys for keys, _ in structure.iter_paths(node)]
    bindings = []
    for keys in below:
        key = _features.safe_name(keys or root.keys[-1:])
        label = name.format(key=key)
        out = None if output is None else output.format(name=label, key=key)
        bindings.append(
            LossBinding(
                label,
                fn,
                target=Path((*root.keys, *keys)),
                output=out,
                weight=weight,
                route=route,
                sample_weight=sample_weight,
                group=group,
            )
        )
    return tuple(bindings)


def supervised_split(
    source: Any,
    fn: Any,
    *,
    name: str | None = None,
    output: str | None = None,
    ragged: bool = False,
    replace: Mapping[Any, tf.TypeSpec | None] | None = None,
    batched: bool | None = None,
) -> SplitSpec:
    """The `SplitSpec` of an ``as_supervised`` dataset: input ``0``, one loss on target ``1``.

    With a third supervised key (TFDS's ``(input, target, sample_weight)``), that leaf is the
    binding's sample weight when it is one (a number per example, shape ``[B]`` or ``[B, 1]``);
    anything else there (places365_small's string ``filename``) is dropped, so that the split
    always compiles.

    Args:
        source: a builder or ``DatasetInfo`` with ``supervised_keys`` (or a tuple dataset).
        fn: the loss of the target.
        name: the binding's name (default: the target feature's name, else ``"target"``).
        output: path into the predictions (default ``None``: a single-output model).
        ragged: as in `element_spec`.
        replace: as in `element_spec` (feature paths, before ``as_supervised``).
        batched: for a dataset source, as in `element_spec`.

    Returns:
        A `SplitSpec` for `funcsplit.compile`.

    Raises:
        SpecError: if the source has no supervised structure.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> ds = tf.data.Dataset.from_tensor_slices((tf.zeros((4, 3)), tf.zeros((4, 1)))).batch(2)
        >>> split = fs.tfds.supervised_split(ds, "mse", name="depth")
        >>> print(fs.compile(split).describe().splitlines()[2])
        0     float32[None, 3]  input
    """
    if isinstance(source, tf.data.Dataset):
        spec = element_spec(source, batched=batched)
        keys: Any = None
    else:
        spec = element_spec(
            source, as_supervised=True, ragged=ragged, replace=replace, batched=batched
        )
        keys = _features.supervised_keys_of(source, "fs.tfds.supervised_split")
    parts = spec.structure
    if not isinstance(parts, tuple) or len(parts) not in (2, 3):
        raise SpecError.single(
            "fs.tfds.supervised_split",
            None,
            "(input, target) or (input, target, weight) tuples",
            repr(spec),
            "use element_spec(...) and declare the SplitSpec yourself",
        )
    if name is None:
        target_key = keys[1] if keys is not None else None
        name = _features.safe_name((target_key,)) if isinstance(target_key, str) else "target"
    weight = len(parts) == 3 and _is_sample_weight(spec[Path((2,))])
    binding = LossBinding(
        name,
        fn,
        target=Path((1,)),
        output=output,
        sample_weight=Path((2,)) if weight else None,
    )
    drop = (Path((2,)),) if len(parts) == 3 and not weight else ()
    return SplitSpec(spec, inputs=Path((0,)), losses=(binding,), drop=drop)


def _is_sample_weight(node: Any) -> bool:
    """Whether a supervised tuple's third part can weight examples: one number per example."""
    if not isinstance(node, Leaf) or node.kind != "dense":
        return False
    numeric = node.dtype.is_floating or node.dtype.is_integer
    return numeric and (node.rank == 1 or (node.rank == 2 and node.shape[1] == 1))


def num_classes(source: Any) -> dict[str, int]:
    """The number of classes of every ``ClassLabel`` feature, keyed by its path ``a/b``.

    Sizes the model's heads from the dataset's own metadata.

    Args:
        source: a builder, a ``DatasetInfo`` or a ``FeaturesDict``.

    Returns:
        ``{path: num_classes}`` (features inside a ``Sequence`` keep their dict path:
        coco's ``objects/label``).

    Examples:
        >>> import funcsplit as fs, tensorflow_datasets as tfds
        >>> label = tfds.features.ClassLabel(num_classes=80)
        >>> fs.tfds.num_classes(tfds.features.FeaturesDict({
        ...     "objects": tfds.features.Sequence({"label": label}),
        ...     "label": tfds.features.ClassLabel(names=["cat", "dog"])}))
        {'label': 2, 'objects/label': 80}
    """
    return _features.class_counts(_features.features_of(source, "fs.tfds.num_classes"))
