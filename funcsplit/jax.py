"""The same `SplitSpec`, compiled to pure JAX functions over pytrees.

``fs.jax.compile(split)`` resolves the split with the same resolver as `funcsplit.compile`
(one resolver, two lowerings) and lowers it to JAX: ``split(element)`` routes a batch (a
pytree of NumPy or JAX arrays, e.g. from ``tfds.as_numpy``) to ``(inputs, targets,
weights)``; ``loss(targets, predictions, weights)`` returns a `funcsplit.LossResult` (a
NamedTuple, hence a pytree) with ``.total``, ``.per_loss`` and ``.counts``, equal in value to
the TensorFlow functions. Both are pure and jittable (the routing structure is static; routes
are masks, never value-dependent shapes), differentiable, and work on a batch sharded across
devices (the reductions are over the global batch).

Registry names (``"sparse_categorical_crossentropy"``, ``fs.losses.dice()``, …) resolve to
JAX implementations of Keras's math (`registry_loss`); Keras ``Loss`` objects of the matching
classes translate to them. Other ``fn`` values must be JAX callables ``(y_true, y_pred)``,
e.g. ``optax.losses.squared_error``.

Limits (what JAX cannot carry, and what jit cannot do):

* Ragged, sparse and string leaves do not exist in JAX: a split that uses one (as an input,
  target, sample weight or route) is a `SpecError` at compile time naming its path. Pad
  ragged leaves to dense (``padded_batch``), map strings to ids, or drop them. Dropped leaves
  may stay in the element, but pass the element to ``split`` outside `jax.jit` then (a jitted
  function cannot take string arrays as arguments), or remove them first.
* A user ``fn`` that returns one batch-level scalar cannot be computed over the routed
  examples only under `jax.jit` (gathering them gives a value-dependent shape). Give it a
  ``mask`` keyword (``fn(y_true, y_pred, *, mask)``, a ``[B]`` bool array: a static-shape
  formulation, as ``fs.losses.dice`` has) and it is called with the route; otherwise a routed
  scalar loss works eagerly (the routed examples are gathered, as in TensorFlow) and raises a
  `SpecError` under jit. Without a route a scalar loss is computed over the whole batch.
* A routed sparse label out of range gives a NaN loss (TensorFlow raises; jit cannot).
  Routed-away labels never reach the loss: they are replaced by zeros first.
* JAX narrows 64-bit leaves to 32 bits unless ``jax_enable_x64`` is set: a route on an int64
  or float64 leaf then compares 32-bit values (a route value outside the 32-bit range is a
  `SpecError` at compile time; data values that differ only beyond float32 precision, or
  int64 ids beyond the int32 range, may route differently than in TensorFlow). Losses and
  weights are computed in float32 either way, as in TensorFlow.
* Registry losses compute in float32, as Keras's losses do; Keras's trick of reading the
  logits behind a softmax layer's output does not exist here: pass ``from_logits=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Mapping
from typing import Any

import attrs

try:
    import jax  # noqa: F401 - checked here for a clear message; used by funcsplit._src.jax_*
except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        f"funcsplit.jax needs JAX and optax: pip install 'funcsplit[jax]' ({error})",
        name=error.name,
    ) from error

from funcsplit._src import describe as describe_lib
from funcsplit._src import jax_losses
from funcsplit._src import jax_reduction
from funcsplit._src import jax_split
from funcsplit._src.bindings import SplitSpec
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.plan import Plan
from funcsplit._src.plan import resolve
from funcsplit._src.reduction import LossResult

__all__ = [
    "CompiledSplit",
    "LossResult",
    "compile",
    "group_optimizer",
    "registry_loss",
]

registry_loss = jax_losses.registry_loss


@attrs.frozen(eq=False)
class CompiledSplit:
    """A split compiled to JAX: pure ``split`` and ``loss`` functions, and their plan.

    Attributes:
        spec: the `SplitSpec` compiled.
        plan: the resolved plan (the same resolver as `funcsplit.compile`).
        split: ``split(element) -> (inputs, targets, weights)``: pure routing of a pytree
            batch (dicts and tuples out); checks the element's structure and shapes.
        loss: ``loss(targets, predictions, weights=None) -> LossResult``: pure, jittable and
            differentiable; ``total`` and ``per_loss`` float32 scalars, ``counts`` int32.

    Examples:
        >>> import numpy as np, tensorflow as tf, funcsplit as fs
        >>> import funcsplit.jax as fsj
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None, 1))})
        >>> c = fsj.compile(fs.SplitSpec(spec, inputs="x",
        ...                              losses=(fs.LossBinding("y", "mse", target="y"),)))
        >>> inputs, targets, weights = c.split({"x": np.ones((4, 2)), "y": np.zeros((4, 1))})
        >>> float(c.loss(targets, np.ones((4, 1)), weights).total)
        1.0
    """

    spec: SplitSpec
    plan: Plan
    split: Callable[[Any], tuple[Any, dict, dict]]
    loss: Callable[..., LossResult]

    @property
    def names(self) -> tuple[str, ...]:
        """The binding names, in declaration order."""
        return tuple(b.name for b in self.plan.losses)

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups of the bindings (empty without groups)."""
        return self.spec.groups

    def describe(self) -> str:
        """A readable routing table: every leaf -> input / loss / weight / route / dropped."""
        return describe_lib.describe(self.plan)


def compile(  # noqa: A001 - the public contract's name
    split: SplitSpec, *, axis_name: Hashable | None = None
) -> CompiledSplit:
    """Compiles a `SplitSpec` to pure JAX ``split`` and ``loss`` functions.

    Args:
        split: the declaration (the same value `funcsplit.compile` takes).
        axis_name: for a loss called per shard inside ``jax.shard_map`` or ``jax.pmap``: the
            mapped batch axis. Denominators (and batch-level losses' routed counts) are then
            summed over it, so the per-shard values and gradients, summed over the axis,
            equal those of the global batch. Not needed under `jax.jit` with sharded arrays.

    Returns:
        A `CompiledSplit` whose functions are not jitted: jit the training step around them.

    Raises:
        SpecError: every problem the resolver finds, plus leaves JAX cannot carry (ragged,
            sparse, string) and Keras losses without a JAX equivalent, each naming its path.

    Examples:
        >>> import tensorflow as tf, funcsplit as fs
        >>> import funcsplit.jax as fsj
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "words": fs.Leaf(tf.int32, (None, None),
        ...                                                        kind="ragged")})
        >>> fsj.compile(fs.SplitSpec(spec, inputs={"x": "x", "words": "words"}))
        Traceback (most recent call last):
        ...
        funcsplit._src.errors.SpecError: funcsplit found 1 problem:
          1. funcsplit.jax at path 'words'
        ...
    """
    if not isinstance(split, SplitSpec):
        raise SpecError.single("funcsplit.jax.compile", None, "a SplitSpec", type(split).__name__)
    plan = resolve(split)
    problems = jax_split.carry_problems(plan)
    bound = tuple(
        attrs.evolve(b, fn=jax_split.jax_loss_fn(i, b, problems)) for i, b in enumerate(plan.losses)
    )
    raise_if_any(problems)
    plan = attrs.evolve(plan, losses=bound)
    return CompiledSplit(
        spec=split,
        plan=plan,
        split=jax_split.split_function(plan),
        loss=jax_reduction.loss_function(plan, axis_name),
    )


def group_optimizer(compiled: CompiledSplit, transforms: Mapping[str, Any]) -> Any:
    """One optax optimizer that updates each group's parameters with its own transform.

    The parameters are a dict keyed by the bindings' groups (``{"image": ..., "text": ...}``),
    as the predictions are; ``transforms[g]`` updates ``params[g]`` only
    (``optax.partition`` with labels from the groups).

    Args:
        compiled: a compiled split whose bindings have groups.
        transforms: ``{group: optax.GradientTransformation}``, one per group.

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        SpecError: if the transforms' keys are not the groups, or (when initialised) the
            parameters are not a dict keyed by the groups.

    Examples:
        >>> import jax.numpy as jnp, optax, tensorflow as tf, funcsplit as fs
        >>> import funcsplit.jax as fsj
        >>> spec = fs.ElementSpec.from_structure({"a": fs.Leaf(tf.float32, (None, 1)),
        ...                                       "b": fs.Leaf(tf.float32, (None, 1))})
        >>> c = fsj.compile(fs.SplitSpec(spec, inputs={"ga": "a", "gb": "b"}, losses=(
        ...     fs.LossBinding("a", "mse", target="a", group="ga"),
        ...     fs.LossBinding("b", "mse", target="b", group="gb"))))
        >>> tx = fsj.group_optimizer(c, {"ga": optax.sgd(1.0), "gb": optax.sgd(0.0)})
        >>> params = {"ga": jnp.ones(()), "gb": jnp.ones(())}
        >>> updates, _ = tx.update({"ga": jnp.ones(()), "gb": jnp.ones(())}, tx.init(params))
        >>> float(updates["ga"]), float(updates["gb"])
        (-1.0, -0.0)
    """
    import jax
    import optax

    groups = compiled.groups
    if not groups or set(transforms) != set(groups):
        raise SpecError.single(
            "funcsplit.jax.group_optimizer",
            None,
            f"one transform per group: {list(groups)}" if groups else "a split with groups",
            f"transforms for {sorted(transforms)}",
            "give LossBinding(group=...) to every binding and one transform per group",
        )

    def labels(params: Any) -> Any:
        if not isinstance(params, Mapping) or set(params) != set(groups):
            found = sorted(params) if isinstance(params, Mapping) else type(params).__name__
            raise SpecError.single(
                "funcsplit.jax.group_optimizer params",
                None,
                f"a dict of parameters keyed by the groups {list(groups)}",
                str(found),
                "keep each group's model parameters under its group name",
            )
        return {g: jax.tree.map(lambda _, g=g: g, params[g]) for g in params}

    return optax.partition(dict(transforms), labels)
