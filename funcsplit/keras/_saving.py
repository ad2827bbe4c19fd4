"""What `RoutedModel` needs to build, save, load and export itself without a batch of data.

Keras builds a model from its first batch; a `RoutedModel` knows its batches before it sees
one: the split's element spec gives the structure, dtypes and shapes of
``(inputs, targets, weights)``. `build_from_split` builds the wrapper, the inner model, the
compiled metrics and the optimizer from that spec, so ``load_weights``, ``BackupAndRestore``
and saving work on a model that has not trained yet. `export_signature` gives the serving
signature of the inner model (one named `tf.TensorSpec` per input).

`config` and `arguments` are ``get_config`` and ``from_config``: the inner model and the
metrics as Keras serializes them, the split as its ``funcsplit.split/1`` document (which holds
no code: user callables are named holes). Loading fills the holes from ``custom_objects``
(Keras's custom object scope), from Keras's registry (``register_keras_serializable``, by the
registered name written at save time) and from `funcsplit.losses.register`; an unfilled hole
is a `SpecError` naming the binding.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import attrs
import keras
import tensorflow as tf
from keras.src import backend

from funcsplit._src import structure
from funcsplit._src.bindings import SplitSpec
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.tf_compiler import CompiledSplit
from funcsplit._src.tf_compiler import compile as compile_split

_LOAD_FIX = (
    "pass the callable when loading: keras.models.load_model(path, custom_objects="
    "{name: fn}) with the name above, or fs.losses.register(name, fn) before loading"
)


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
    with contextlib.nullcontext() if strategy is None else strategy.scope():
        if hasattr(routed, "optimizer"):  # compiled: metrics and optimizer too
            routed._symbolic_build(data_batch=data_batch)
        else:
            inputs = tf.nest.map_structure(
                lambda s: keras.KerasTensor(s.shape, s.dtype.name), data_batch[0]
            )
            backend.compute_output_spec(routed, inputs, training=False)


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


def config(routed: Any) -> dict[str, Any]:
    """``RoutedModel.get_config``: inner model, split document, metrics, Keras names of holes.

    Raises:
        SpecError: for a split part JSON cannot hold (see ``SplitSpec.to_dict``).
    """
    split = routed.compiled_split.spec
    registered = {}
    for hole, fn in split.callables().items():
        name = _keras_registered_name(fn)
        if name is not None:
            registered[hole] = name
    metrics = routed.routed_metrics
    return {
        "name": routed.name,
        "model": keras.saving.serialize_keras_object(routed.model),
        "split": split.to_dict(),
        "keras_registered": registered,
        "metrics": None
        if metrics is None
        else {
            binding: [keras.saving.serialize_keras_object(m) for m in ms]
            for binding, ms in metrics._by_binding.items()
        },
        # A Method is code (closures over its options): the file names it, loading takes it
        # back from custom_objects (see `weighting_arguments`).
        "weighting": None
        if routed.weighting is None
        else {"name": str(routed.weighting.name), "needs_gram": bool(routed.weighting.needs_gram)},
    }


def arguments(config: dict[str, Any]) -> dict[str, Any]:
    """``RoutedModel.from_config``'s constructor arguments, read from ``config``.

    Runs inside Keras's custom object scope (``load_model(custom_objects=...)``), where
    ``keras.saving.get_registered_object`` finds the user's objects.

    Raises:
        SpecError: for a malformed split document or a hole no one filled, naming the
            binding and how to pass the callable.
    """
    document = config.get("split")
    registered = config.get("keras_registered") or {}
    losses = {}
    for hole in _hole_names(document):
        fn = keras.saving.get_registered_object(hole)
        keras_name = registered.get(hole) if isinstance(registered, dict) else None
        if fn is None and isinstance(keras_name, str):
            fn = keras.saving.get_registered_object(keras_name)
        if fn is not None and callable(fn):
            losses[hole] = fn
    try:
        split = SplitSpec.from_dict(document, losses=losses)
    except SpecError as error:
        raise SpecError([_with_load_fix(p) for p in error.problems]) from None
    metrics = config.get("metrics")
    if metrics is not None:
        metrics = {
            binding: [keras.saving.deserialize_keras_object(m) for m in ms]
            for binding, ms in metrics.items()
        }
    return {
        "model": keras.saving.deserialize_keras_object(config["model"]),
        "compiled": compile_split(split),
        "metrics": metrics,
        "name": config.get("name"),
        **weighting_arguments(config.get("weighting")),
    }


def weighting_arguments(saved: Any) -> dict[str, Any]:
    """``weighting`` and ``shared`` of a weighted `RoutedModel`, from ``custom_objects``.

    The file names the method; its options and ``shared`` are code, so loading takes them
    from ``load_model(path, custom_objects={"weighting": method, "shared": fn})`` (the
    state itself is in the weights file).

    Raises:
        SpecError: when the method is missing, has another name, or a Gram method has no
            ``shared``.
    """
    if saved is None:
        return {}
    name = saved.get("name") if isinstance(saved, dict) else None
    method = keras.saving.get_registered_object("weighting")
    shared = keras.saving.get_registered_object("shared")
    fix = (
        f"keras.models.load_model(path, custom_objects={{'weighting': fs.weighting.{name}(...)"
        + (", 'shared': fn" if isinstance(saved, dict) and saved.get("needs_gram") else "")
        + "}) with the options it was trained with"
    )
    if method is None or getattr(method, "name", None) != name:
        found = "no 'weighting' in custom_objects"
        if method is not None:
            found = f"custom_objects['weighting'] named {getattr(method, 'name', method)!r}"
        raise SpecError.single(
            "RoutedModel loading weighting", None, f"method {name!r}", found, fix
        )
    if method.needs_gram and shared is None:
        raise SpecError.single(
            "RoutedModel loading shared",
            None,
            f"the shared variables of the Gram method {name!r}",
            "no 'shared' in custom_objects",
            fix,
        )
    return {"weighting": method, "shared": shared}


def _keras_registered_name(fn: Any) -> str | None:
    """The ``package>name`` under which Keras's registry holds ``fn`` (or its class)."""
    for candidate in (fn, type(fn)):
        try:
            name = keras.saving.get_registered_name(candidate)
        except (AttributeError, TypeError):
            continue
        if isinstance(name, str) and ">" in name:
            return name
    return None


def _hole_names(document: Any) -> list[str]:
    """The names of the callable holes of a split document (shape checks: `from_dict`)."""
    names = []
    losses = document.get("losses") if isinstance(document, dict) else None
    for binding in losses if isinstance(losses, list) else ():
        fn = binding.get("fn") if isinstance(binding, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("row_wise"), dict):
            fn = fn["row_wise"]
        if isinstance(fn, dict) and isinstance(fn.get("callable"), str):
            names.append(fn["callable"])
    return names


def _with_load_fix(problem: Problem) -> Problem:
    if "no such callable" not in problem.found:
        return problem
    return attrs.evolve(problem, fix=_LOAD_FIX)
