"""Compile: a `SplitSpec` to a `CompiledSplit` (resolve, then lower to `tf.function`s)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import tensorflow as tf

from funcsplit._src import describe as describe_lib
from funcsplit._src import paths
from funcsplit._src import structure
from funcsplit._src import tf_loss
from funcsplit._src.bindings import SplitSpec
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.plan import Plan
from funcsplit._src.plan import resolve
from funcsplit._src.routing import split_parts
from funcsplit._src.tf_losses import has_keras_mask
from funcsplit._src.tf_replicas import replicas_in_sync


class TracedFunction:
    """A pure function and its `tf.function`, with a check of bad calls.

    Called eagerly it runs the traced function; NumPy arrays are checked first (``check``):
    their dtype must be the spec's, as a tensor's must (no silent cast of float64 data to
    float32). When the traced call fails and the arguments are one unbatched example
    (``diagnose`` finds no problem with ``batched=False``), ``one_example`` runs on them
    instead. Called while a `tf.function` (or a
    ``dataset.map``) is being traced, or inside a `tf.distribute` replica context with several
    replicas, it runs the Python function inline, so it joins the caller's trace: a nested
    `tf.function` would hide the batch dimension from XLA (which then recompiles for every
    batch) and cannot hold a cross-replica sum. Inline, the arguments are checked against the
    spec first (once per trace, in Python); when the traced call fails on a structure mismatch,
    they are compared with the spec too, and a `SpecError` names the paths.
    """

    def __init__(
        self,
        python_function: Callable[..., Any],
        traced: Any,
        diagnose: Callable[..., list] | None = None,
        *,
        check: Callable[..., list] | None = None,
        one_example: Callable[..., Any] | None = None,
        inline: Callable[..., bool] | None = None,
    ):
        self.python_function = python_function
        self._traced = traced
        self._diagnose = diagnose
        self._check = check
        self._one_example = one_example
        self._inline = inline  # arguments the traced function would lose something of
        self._concrete = None  # the one concrete function of a traced fn with a signature

    @tf.autograph.experimental.do_not_convert
    def __call__(self, *args: Any) -> Any:
        if (
            tf.inside_function()
            or replicas_in_sync() > 1
            or (self._inline is not None and self._inline(*args))
        ):
            if self._diagnose is not None:
                raise_if_any(self._diagnose(*args, batched=None))
            return self.python_function(*args)
        if self._check is not None:
            raise_if_any(self._check(*args))
        try:
            return self._call_traced(*args)
        except (TypeError, ValueError) as error:
            if isinstance(error, SpecError) or self._diagnose is None:
                raise
            if self._one_example is not None and not self._diagnose(*args, batched=False):
                return self._one_example(*args)
            problems = self._diagnose(*args, batched=True)
            if problems:
                # from None: TensorFlow's own message prints the arguments' values whole.
                raise SpecError(problems) from None
            raise

    def _call_traced(self, *args: Any) -> Any:
        # A tf.function with an input signature has one concrete function: calling it directly
        # skips tf.function's per-call dispatch (trace types of the arguments, cache lookup),
        # ~0.2-0.4 ms per call, with the same argument checks and errors.
        if self._concrete is None:
            if getattr(self._traced, "input_signature", None) is None:
                return self._traced(*args)
            self._concrete = self._traced.get_concrete_function()
        return self._concrete(*args)

    def experimental_get_tracing_count(self) -> int:
        """How many times the `tf.function` has traced."""
        return self._traced.experimental_get_tracing_count()

    def get_concrete_function(self, *args: Any) -> Any:
        """The traced concrete function (see `tf.function`)."""
        return self._traced.get_concrete_function(*args)


def _masked_predictions(targets: Any, predictions: Any = None, weights: Any = None) -> bool:
    return has_keras_mask(predictions)


def _split_function(plan: Plan) -> Callable[[Any], tuple[Any, dict, dict]]:
    def split(element: Any) -> tuple[Any, dict, dict]:
        return split_parts(plan, element)

    return split


def _one_example(plan: Plan, element: Any) -> tuple[Any, dict, dict]:
    """``split`` of one unbatched example: the same parts, each without a batch dimension."""

    def tensor(value: Any) -> Any:
        composite = isinstance(value, (tf.RaggedTensor, tf.SparseTensor))
        return value if composite else tf.convert_to_tensor(value)

    return tf.nest.map_structure(tensor, split_parts(plan, element))


def numpy_dtype_problems(expected: Any, value: Any, where: str) -> list[Problem]:
    """A problem for each NumPy array in ``value`` whose dtype is not its type spec's.

    ``expected`` is a nested structure of `tf.TypeSpec` values; a structure that differs is
    not checked here (the call reports it).
    """
    try:
        pairs = zip(
            structure.flatten_with_paths(expected), structure.flatten_with_paths(value), strict=True
        )
        pairs = list(pairs)
    except ValueError:
        return []
    problems = []
    for (keys, spec), (_, leaf) in pairs:
        if isinstance(leaf, (np.ndarray, np.generic)) and isinstance(spec, tf.TypeSpec):
            found = tf.dtypes.as_dtype(leaf.dtype) if leaf.dtype.kind in "biufc?" else None
            if found is not None and found != spec.dtype:
                problems.append(
                    Problem(
                        where,
                        paths.render(keys),
                        f"dtype {spec.dtype.name} (NumPy arrays are not cast, as tensors are not)",
                        f"a NumPy array of dtype {leaf.dtype}",
                        f"convert it first, e.g. np.asarray(x, np.{spec.dtype.name}), or "
                        "declare the leaf with that dtype",
                    )
                )
    return problems


def _element_problems(plan: Plan, element: Any, *, batched: bool | None) -> list:
    def spec_of(value: Any) -> Any:
        if isinstance(value, tf.TypeSpec):
            return value
        return tf.type_spec_from_value(value)

    try:
        found = structure.map_leaves(
            spec_of, element, is_leaf=lambda v: not structure.is_container(v)
        )
    except (TypeError, ValueError):
        return []
    return plan.split.element.problems_with(found, batched=batched)


@attrs.frozen(eq=False)
class CompiledSplit:
    """The compiled split: pure `split` and `loss` functions, and the plan they came from.

    Attributes:
        spec: the `SplitSpec` compiled.
        plan: the resolved plan (canonical paths, the role of every leaf).
        split: ``split(element) -> (inputs, targets, weights)``, a `tf.function` with an
            input signature from the spec (batch dimension ``None``): it traces once. Given
            one unbatched example (each leaf one rank short: ``next(iter(ds))`` of an
            unbatched dataset), it splits that example. Inputs declared as lists come out
            as tuples (a ``dataset.map`` would stack a list into one tensor).
        loss: ``loss(targets, predictions, weights) -> LossResult``, traced (at most twice:
            ``reduce_retracing``), or run inline inside another trace or a multi-replica
            context, and eagerly for predictions that carry a Keras mask (which a traced call
            would drop; the mask weighs the values, see docs/concepts.md).

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None, 1))})
        >>> c = fs.compile(fs.SplitSpec(spec, inputs="x",
        ...                             losses=(fs.LossBinding("y", "mse", target="y"),)))
        >>> inputs, targets, weights = c.split({"x": tf.ones((4, 2)), "y": tf.zeros((4, 1))})
        >>> float(c.loss(targets, tf.ones((4, 1)), weights).total)
        1.0
    """

    spec: SplitSpec
    plan: Plan
    split: TracedFunction
    loss: TracedFunction

    @property
    def names(self) -> tuple[str, ...]:
        """The binding names, in declaration order."""
        return tuple(b.name for b in self.plan.losses)

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups of the bindings (empty without groups)."""
        return self.spec.groups

    def apply(
        self,
        ds: tf.data.Dataset,
        *,
        num_parallel_calls: int | None = tf.data.AUTOTUNE,
        deterministic: bool | None = None,
    ) -> tf.data.Dataset:
        """Checks ``ds.element_spec`` against the spec, then maps `split` over it in parallel.

        Works on batched datasets and on unbatched ones (batch after the map).

        Raises:
            SpecError: naming every leaf whose structure, dtype, kind or shape differs.
        """
        self.spec.element.check(ds)
        fn = self.split.python_function
        if type(ds.element_spec) is tuple:

            def mapped(*parts: Any) -> Any:
                return fn(parts)

        else:
            mapped = fn
        return ds.map(mapped, num_parallel_calls=num_parallel_calls, deterministic=deterministic)

    def describe(self) -> str:
        """A readable routing table: every leaf -> input / loss / weight / route / dropped."""
        return describe_lib.describe(self.plan)


def compile(split: SplitSpec) -> CompiledSplit:  # noqa: A001 - the public contract's name
    """Compiles a `SplitSpec` into pure, traced split and loss functions.

    Resolving is pure Python: every path is resolved, every binding checked and every leaf
    accounted for, before any TensorFlow op is built. The same spec gives equal results.

    Args:
        split: the declaration.

    Returns:
        A `CompiledSplit`.

    Raises:
        SpecError: with every problem found, each naming its path.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "id": fs.Leaf(tf.string, (None,))})
        >>> fs.compile(fs.SplitSpec(spec, inputs="x"))
        Traceback (most recent call last):
        ...
        funcsplit._src.errors.SpecError: funcsplit found 1 problem:
          1. unaccounted leaf at path 'id'
        ...
    """
    if not isinstance(split, SplitSpec):
        raise SpecError.single("compile", None, "a SplitSpec", f"{type(split).__name__}")
    plan = resolve(split)
    split_fn = _split_function(plan)
    signature = [split.element.type_spec(relax_batch=True)]
    traced_split = tf.function(split_fn, input_signature=signature, autograph=False)
    loss_fn = tf_loss.loss_function(plan)
    traced_loss = tf.function(loss_fn, reduce_retracing=True, autograph=False)
    return CompiledSplit(
        spec=split,
        plan=plan,
        split=TracedFunction(
            split_fn,
            traced_split,
            functools.partial(_element_problems, plan),
            check=lambda element: numpy_dtype_problems(signature[0], element, "split(element)"),
            one_example=functools.partial(_one_example, plan),
        ),
        # predictions carrying a Keras mask run eagerly: a traced call would drop the mask
        loss=TracedFunction(loss_fn, traced_loss, inline=_masked_predictions),
    )
