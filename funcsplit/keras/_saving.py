"""What `RoutedModel` needs to build, save and export itself without a batch of data.

Keras builds a model from its first batch; a `RoutedModel` knows its batches before it sees
one: the split's element spec gives the structure, dtypes and shapes of
``(inputs, targets, weights)``. `build_from_split` builds the wrapper, the inner model, the
compiled metrics and the optimizer from that spec, so ``load_weights``, ``BackupAndRestore``
and saving work on a model that has not trained yet. `export_signature` gives the serving
signature of the inner model (one named `tf.TensorSpec` per input).
"""

from __future__ import annotations

import re
from typing import Any

import tensorflow as tf

from funcsplit._src import structure
from funcsplit._src.errors import Problem
from funcsplit._src.errors import raise_if_any
from funcsplit._src.tf_compiler import CompiledSplit


def batch_spec(compiled: CompiledSplit) -> tuple[Any, dict, dict]:
    """The type specs of ``compiled.split``'s ``(inputs, targets, weights)`` (batch ``None``).

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None, 1))})
        >>> c = fs.compile(fs.SplitSpec(spec, inputs="x",
        ...                             losses=(fs.LossBinding("y", "mse", target="y"),)))
        >>> batch_spec(c)[0]
        TensorSpec(shape=(None, 2), dtype=tf.float32, name=None)
    """
    outputs = compiled.split.get_concrete_function().structured_outputs
    return tf.nest.map_structure(tf.type_spec_from_value, outputs)


def unknown_input_dims(compiled: CompiledSplit) -> list[Problem]:
    """A `Problem` for each input leaf with an unknown dimension after the batch one."""
    problems = []
    for path, leaf, roles in compiled.plan.roles:
        if any(role.startswith("input") for role in roles) and None in leaf.shape[1:]:
            problems.append(
                Problem(
                    "RoutedModel build",
                    str(path),
                    "an input whose dimensions after the batch one are known",
                    leaf.describe(),
                    "declare the shape in the ElementSpec (fs.ElementSpec.from_dataset(ds) "
                    "takes it from the data), or call the model on one batch first",
                )
            )
    return problems


def needs_build(routed: Any) -> bool:
    """Whether the wrapper, its layers or its optimizer still lack their variables."""
    layers_unbuilt = not routed.built or not all(layer.built for layer in routed._flatten_layers())
    optimizer = getattr(routed, "optimizer", None)
    return layers_unbuilt or (optimizer is not None and not optimizer.built)


def build_from_split(routed: Any, data_batch: Any = None) -> None:
    """Builds ``routed`` (layers, compiled metrics, optimizer) from its split's batch spec.

    Args:
        routed: the `RoutedModel`.
        data_batch: one batch ``(inputs, targets, weights)`` to build from instead.

    Raises:
        SpecError: if no batch is given and an input has unknown non-batch dimensions.
    """
    if data_batch is None:
        raise_if_any(unknown_input_dims(routed.compiled_split))
        data_batch = batch_spec(routed.compiled_split)
    strategy = routed._distribute_strategy
    if strategy is None:
        routed._symbolic_build(data_batch=data_batch)
    else:
        with strategy.scope():
            routed._symbolic_build(data_batch=data_batch)


def export_signature(compiled: CompiledSplit) -> list[Any]:
    """The serving signature of the inner model: its inputs, one named `tf.TensorSpec` each.

    Each spec is named by its place in the ``inputs`` structure (``image``, ``inputs_0``...),
    so the SavedModel's ``serving_default`` signature has readable argument names.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"a": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "b": fs.Leaf(tf.int32, (None,))})
        >>> c = fs.compile(fs.SplitSpec(spec, inputs={"image": "a", "label": "b"}))
        >>> [s.name for s in tf.nest.flatten(export_signature(c))]
        ['image', 'label']
    """
    inputs = batch_spec(compiled)[0]
    named = [_named(spec, keys) for keys, spec in structure.flatten_with_paths(inputs)]
    return [tf.nest.pack_sequence_as(inputs, named)]


def _named(spec: tf.TypeSpec, keys: tuple) -> tf.TypeSpec:
    if not isinstance(spec, tf.TensorSpec):
        return spec
    parts = [str(k) for k in keys]
    if not parts or not isinstance(keys[0], str):
        parts.insert(0, "inputs")
    return tf.TensorSpec(
        spec.shape, spec.dtype, name=re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))
    )
