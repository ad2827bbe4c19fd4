"""The JAX side of compiling: what JAX can carry, Keras losses translated, the split function.

`funcsplit.jax.compile` runs these after the shared resolver: `carry_problems` names the
leaves a split uses that JAX arrays cannot hold (ragged, sparse, string) and route values
outside the 32-bit range JAX narrows 64-bit leaves to; `jax_loss_fn` translates Keras
``Loss`` objects to registry losses; `split_function` routes a pytree batch by path after
checking its structure and shapes against the spec (dtypes are left to JAX).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import keras
import tensorflow as tf

from funcsplit._src import paths
from funcsplit._src import registry
from funcsplit._src import structure
from funcsplit._src.errors import Problem
from funcsplit._src.errors import describe_callable
from funcsplit._src.errors import raise_if_any
from funcsplit._src.plan import Plan
from funcsplit._src.routing import split_parts
from funcsplit._src.spec import Leaf
from funcsplit.jax import _losses as jax_losses


def carry_problems(plan: Plan) -> list[Problem]:
    """Leaves a split uses that JAX cannot carry, and route values its dtypes cannot hold."""
    problems = []
    for path, leaf, roles in plan.roles:
        used = [r for r in roles if r != "dropped"]
        if used and (leaf.kind != "dense" or leaf.dtype == tf.string):
            problems.append(
                Problem(
                    "funcsplit.jax",
                    str(path),
                    "dense numeric or bool leaves (JAX arrays)",
                    f"a {leaf.describe()} leaf used as {', '.join(used)}",
                    "pad ragged leaves to dense (padded_batch, .to_tensor()), map strings to ids, "
                    "or drop the leaf",
                )
            )
    return problems + _route_value_problems(plan)


def _route_value_problems(plan: Plan) -> list[Problem]:
    """Route values that the leaf's JAX dtype cannot hold (64-bit leaves narrowed to 32 bits)."""
    problems = []
    for bound in plan.losses:
        route = bound.route
        leaf = plan.split.element[route.path] if route is not None else None
        if leaf is None or route.op == "truthy" or leaf.dtype in (tf.string, tf.bool):
            continue
        dtype = jax.dtypes.canonicalize_dtype(leaf.dtype.as_numpy_dtype)
        values = route.value if route.op == "one_of" else (route.value,)
        if dtype.kind in "iu":
            info = jnp.iinfo(dtype)
            bad = [v for v in values if not info.min <= v <= info.max]
        else:
            info = jnp.finfo(dtype)
            bad = [v for v in values if abs(v) > info.max or 0 < abs(v) < info.tiny]
        if bad:
            problems.append(
                Problem(
                    f"funcsplit.jax route of {bound.name!r}",
                    str(route.path),
                    f"route values that a {dtype.name} array holds (JAX narrows "
                    f"{leaf.dtype.name} to {dtype.name} unless jax_enable_x64 is set)",
                    ", ".join(repr(v) for v in bad),
                    "enable 64-bit types (jax.config.update('jax_enable_x64', True)) or route "
                    "on values within the 32-bit range",
                )
            )
    return problems


def jax_loss_fn(index: int, bound: Any, problems: list[Problem]) -> Any:
    """A binding's fn for JAX: registry losses as they are, Keras losses translated."""
    fn = bound.fn
    if isinstance(fn, registry.RowWise):  # JAX calls it per binding: the inner loss
        fn = fn.fn
    if not isinstance(fn, keras.losses.Loss):
        return fn
    builtin = jax_losses.from_keras(fn)
    if builtin is None:
        problems.append(
            Problem(
                f"losses[{index}] {bound.name!r} fn",
                str(bound.target),
                "a registry loss or a JAX callable (y_true, y_pred) -> values",
                f"the Keras loss {describe_callable(fn)}, which runs on TensorFlow",
                "use a registry name (fs.losses.*) or a JAX function such as optax.losses.*",
            )
        )
        return fn
    return builtin


def _leaf_problem(keys: tuple, leaf: Leaf, value: Any) -> Problem | None:
    shape = getattr(value, "shape", None)
    where = "funcsplit.jax split element"
    if shape is None:
        return Problem(
            where, paths.render(keys), f"an array {leaf.describe()}", f"{type(value).__name__}"
        )
    fits = len(shape) == leaf.rank and all(
        want is None or want == got for want, got in list(zip(leaf.shape, shape))[1:]
    )
    if not fits:
        return Problem(
            where,
            paths.render(keys),
            f"shape {leaf.describe()}",
            f"shape {tuple(shape)}",
            "reshape it before funcsplit, or fix the spec",
        )
    return None


def _drawn(node: Any) -> str:
    return structure.draw(node, lambda v: isinstance(v, Leaf))


def element_problems(plan: Plan, element: Any) -> list[Problem]:
    """Structure and shape mismatches between ``element`` and the spec (dtypes not checked)."""
    dense_used = {
        path.keys
        for path, leaf, roles in plan.roles
        if leaf.kind == "dense" and any(r != "dropped" for r in roles)
    }
    problems: list[Problem] = []

    def walk(node: Any, value: Any, keys: tuple) -> None:
        if isinstance(node, Leaf):
            problem = _leaf_problem(keys, node, value) if keys in dense_used else None
            problems.extend([problem] if problem else [])
            return
        mine = dict(structure.children(node))
        same_kind = isinstance(value, Mapping) == isinstance(node, Mapping)
        theirs = dict(structure.children(value)) if structure.is_container(value) else None
        if theirs is None or not same_kind:
            problems.append(
                Problem(
                    "funcsplit.jax split element",
                    paths.render(keys) if keys else None,
                    "the structure " + _drawn(node),
                    f"{type(value).__name__} " + structure.draw(value),
                )
            )
            return
        for key, sub in mine.items():
            if key in theirs:
                walk(sub, theirs[key], (*keys, key))
            else:
                problems.append(
                    Problem(
                        "funcsplit.jax split element",
                        paths.render((*keys, key)),
                        "an entry for the spec's "
                        + ("leaf" if isinstance(sub, Leaf) else "subtree " + _drawn(sub)),
                        "no such entry in the element",
                        nearby=tuple(paths.render((*keys, k)) for k in theirs if k not in mine),
                    )
                )
        for key in theirs:
            if key not in mine:
                problems.append(
                    Problem(
                        "funcsplit.jax split element",
                        paths.render((*keys, key)),
                        "only the spec's leaves",
                        "an extra entry",
                        "add it to the spec (and use or drop it), or remove it from the element",
                    )
                )

    walk(plan.split.element.structure, element, ())
    return problems


def split_function(plan: Plan) -> Callable[[Any], tuple[Any, dict, dict]]:
    """The pure ``split(element) -> (inputs, targets, weights)``, checking the element first."""

    def split(element: Any) -> tuple[Any, dict, dict]:
        raise_if_any(element_problems(plan, element))
        return split_parts(plan, element)

    return split
