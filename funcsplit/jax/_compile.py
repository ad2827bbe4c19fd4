"""`funcsplit.jax.compile`: a `SplitSpec` resolved once and lowered to pure JAX functions."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Mapping
from typing import Any

import attrs

from funcsplit._src import describe as describe_lib
from funcsplit._src.bindings import SplitSpec
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.plan import Plan
from funcsplit._src.plan import resolve
from funcsplit._src.result import LossResult
from funcsplit.jax import _reduction
from funcsplit.jax import _split


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
    problems = _split.carry_problems(plan)
    bound = tuple(
        attrs.evolve(b, fn=_split.jax_loss_fn(i, b, problems)) for i, b in enumerate(plan.losses)
    )
    raise_if_any(problems)
    plan = attrs.evolve(plan, losses=bound)
    return CompiledSplit(
        spec=split,
        plan=plan,
        split=_split.split_function(plan),
        loss=_reduction.loss_function(plan, axis_name),
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
