"""A plan applied to values, as both lowerings apply it: an element's parts, a binding's
arguments, and the part of the predictions a binding's ``output`` names."""

from __future__ import annotations

from typing import Any

from funcsplit._src import paths
from funcsplit._src import structure
from funcsplit._src.errors import SpecError
from funcsplit._src.paths import Path
from funcsplit._src.plan import BoundLoss
from funcsplit._src.plan import Plan


def split_parts(plan: Plan, element: Any) -> tuple[Any, dict, dict]:
    """``(inputs, targets, weights)`` of one element by the plan's paths (for both lowerings).

    ``inputs`` has the structure of the spec's inputs; ``targets`` maps each binding to its
    target; ``weights`` maps each binding that has route or sample-weight leaves to them.
    """

    def get(path: Path) -> Any:
        return structure.get(element, path.keys)

    inputs = structure.map_leaves(get, plan.inputs, is_leaf=lambda v: isinstance(v, Path))
    targets = {b.name: get(b.target) for b in plan.losses}
    weights = {
        b.name: {role: get(path) for role, path in b.weight_leaves.items()}
        for b in plan.losses
        if b.weight_leaves
    }
    return inputs, targets, weights


def binding_arguments(bound: BoundLoss, targets: Any, weights: Any, where: str) -> tuple[Any, dict]:
    """The target and the weight leaves that `split` gave one binding (for both lowerings).

    Raises:
        SpecError: naming the binding when its target or a weight leaf is missing.
    """
    if bound.name not in targets:
        raise SpecError.single(
            f"{where} targets",
            bound.name,
            f"a target for binding {bound.name!r}",
            f"keys {sorted(targets)}",
            "pass the targets that split() returned",
        )
    extra = weights.get(bound.name, {})
    missing = [k for k in bound.weight_leaves if k not in extra]
    if missing:
        raise SpecError.single(
            f"{where} weights",
            bound.name,
            f"the {missing} leaves",
            f"{sorted(extra)}",
            "pass the weights that split() returned",
        )
    return targets[bound.name], extra


def select_output(bound: BoundLoss, predictions: Any) -> Any:
    """The part of ``predictions`` a binding's ``output`` names (within its group, if any)."""
    binding = bound.binding
    where = f"binding {binding.name!r} output"
    if binding.group is not None:
        if not isinstance(predictions, dict) or binding.group not in predictions:
            found = (
                sorted(predictions) if isinstance(predictions, dict) else type(predictions).__name__
            )
            raise SpecError.single(
                where,
                binding.group,
                f"predictions keyed by group, with {binding.group!r}",
                str(found),
                "pass predictions={group: model_output, ...}",
            )
        predictions = predictions[binding.group]
    if binding.output is None:
        return predictions
    keys = paths.resolve(predictions, binding.output, where, predictions=True)
    return structure.get(predictions, keys)
