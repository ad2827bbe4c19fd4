"""A source's own loss bindings moved into a mixture, and the mixture's table (pure Python).

`bindings_from` rewrites bindings written against one source's element so that they address
the mixture: paths under the source's name (or the aligned leaf's), names prefixed, and each
binding routed to the source's examples only, so the zeros that fill the other sources'
examples never reach its loss and its value is exactly ``Σ w·l / Σ w`` over the source's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from funcsplit._src import paths
from funcsplit._src.bindings import LossBinding
from funcsplit._src.bindings import Route
from funcsplit._src.bindings import SplitSpec
from funcsplit._src.describe import table
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.mixture import SOURCE
from funcsplit._src.mixture import MixturePlan
from funcsplit._src.paths import Path


def _holds(route: Route, value: object) -> bool:
    """Whether ``route`` sends an example whose leaf holds ``value`` (a Python scalar)."""
    if isinstance(value, bytes):
        value = value.decode()
    if route.op == "truthy":
        return bool(value)
    if route.op == "one_of":
        return value in route.value
    equal = value == route.value
    return equal if route.op == "equals" else not equal


class _Mover:
    """Moves one source's bindings into the mixture, collecting problems."""

    def __init__(self, plan: MixturePlan, source: str):
        self.plan = plan
        self.source = source
        self.index = plan.index(source, "mix.bindings_from")
        self.item = plan.items[self.index]
        self.problems: list[Problem] = []

    def path(self, path: Any, where: str) -> tuple | None:
        try:
            keys = self.item.resolve(path, where).keys
        except SpecError as error:
            self.problems.extend(error.problems)
            return None
        moved = self.plan.mixture_keys(self.index, keys)
        if moved is None:
            self.problems.append(
                Problem(
                    where,
                    paths.render(keys),
                    "a leaf, or a subtree without aligned leaves",
                    "a subtree that holds an aligned leaf (stored once, outside the source)",
                    "address its leaves one by one",
                )
            )
        return moved

    def route(self, binding: LossBinding, where: str) -> Route | None:
        if binding.route is None:
            return self.plan.route(self.source)
        keys = self.path(binding.route.path, f"{where} route")
        if keys is None:
            return None
        if keys[0] != self.source:
            self.problems.append(
                Problem(
                    f"{where} route",
                    str(binding.route.path),
                    "a route on a leaf of the source's own",
                    f"the aligned leaf {keys[0]!r} (other sources' examples hold real values)",
                    "route by a leaf of the source's own, or leave the route to the mixture",
                )
            )
            return None
        fill = self.plan.fill_value(keys)
        if _holds(binding.route, fill):
            self.problems.append(
                Problem(
                    f"{where} route",
                    paths.render(keys),
                    "a route that is false for the value other sources' examples hold there",
                    f"route {binding.route} is true for the fill value {fill!r}",
                    f"fill the leaf with a value the route rejects: fs.mix(..., "
                    f"fill={{{paths.render(keys)!r}: <value>}}), e.g. the missing-label sentinel",
                )
            )
            return None
        # Other sources' examples hold `fill` there, which the route rejects: the source's
        # own route alone sends exactly the source's examples it sent before.
        return attrs.evolve(binding.route, path=Path(keys))

    def move(self, binding: LossBinding, name: str, output: str) -> LossBinding | None:
        where = f"mix.bindings_from({self.source!r}) {binding.name!r}"
        target = self.path(binding.target, f"{where} target")
        weight = None
        if binding.sample_weight is not None:
            weight = self.path(binding.sample_weight, f"{where} sample_weight")
        route = self.route(binding, where)
        weight_lost = binding.sample_weight is not None and weight is None
        if target is None or route is None or weight_lost:
            return None
        fields = {"source": self.source, "name": binding.name}
        new_name = name.format(**fields)
        old = "" if binding.output is None else str(binding.output)
        new_output = output.format(output=old, **{**fields, "name": new_name}) or None
        return attrs.evolve(
            binding,
            name=new_name,
            target=Path(target),
            output=new_output,
            sample_weight=None if weight is None else Path(weight),
            route=route,
        )


def bindings_from(
    plan: MixturePlan,
    source: str,
    bindings: Iterable[LossBinding] | SplitSpec,
    *,
    name: str = "{source}_{name}",
    output: str = "{output}",
) -> tuple[LossBinding, ...]:
    """A source's bindings, rewritten for the mixture (see ``Mixture.bindings_from``)."""
    if isinstance(bindings, SplitSpec):
        bindings = bindings.losses
    if isinstance(bindings, LossBinding):
        bindings = (bindings,)
    mover = _Mover(plan, source)
    moved = []
    for binding in bindings:
        if not isinstance(binding, LossBinding):
            raise SpecError.single("mix.bindings_from", None, "LossBinding values", repr(binding))
        moved.append(mover.move(binding, name, output))
    raise_if_any(mover.problems)
    return tuple(moved)


def describe(plan: MixturePlan) -> str:
    """The mixture as text: one row per source (rate, probability, route), then every leaf of
    the element with the source it comes from."""
    head = (
        f"mixture of {len(plan.names)} sources, per {plan.per}, rates {plan.rule}, "
        f"seed {plan.seed}, stop_on_empty={plan.stop_on_empty}"
    )
    sources = [
        (name, f"{rate:g}", f"{p:.4f}", str(plan.route(name)))
        for name, rate, p in zip(plan.names, plan.rates, plan.probabilities)
    ]
    leaves = []
    aligned = {a.name: a for a in plan.aligned}
    for path, leaf in plan.element.leaves:
        top = path.keys[0]
        if top == SOURCE:
            origin = "every source: its index (routes)"
        elif top in aligned:
            shared = aligned[top]
            parts = [f"{n}:{p}" for n, p in zip(plan.names, shared.paths) if p is not None]
            missing = [n for n, p in zip(plan.names, shared.paths) if p is None]
            origin = "aligned " + ", ".join(parts)
            origin += f"; zeros in {', '.join(missing)}" if missing else ""
        else:
            fill = plan.fill_value(path.keys)
            sequence = None in leaf.shape[1:] or leaf.kind != "dense"
            other = "empty" if sequence else "zeros" if fill == 0 else repr(fill)
            origin = f"{top} ({other} elsewhere)"
        leaves.append((str(path), leaf.describe(), origin))
    return "\n\n".join(
        [
            head,
            table(("source", "rate", "probability", "route"), sources),
            table(("leaf", "spec", "from"), leaves),
        ]
    )
