"""Mixtures planned: several sources' structures as one element (pure Python, no TF ops).

A mixture's element is a dict: each source's own leaves under its name (``"digits/label"``),
the aligned leaves once under their own names (``"image"``), and a per-example int32
``"source"`` leaf (the index of the source the example came from). `MixturePlan` holds it;
``mixture_checks.plan_mixture`` builds one after checking everything, and the TF lowering
(``tf_mixture``) builds the `tf.data` pipeline from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from funcsplit._src import structure
from funcsplit._src.bindings import Route
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import close_matches
from funcsplit._src.paths import Path
from funcsplit._src.spec import ElementSpec
from funcsplit._src.spec import Leaf

PER = ("example", "batch")
SOURCE = "source"  # the per-example leaf that holds the source index
PROPORTIONAL = "proportional"
_GONE = object()  # what `without` leaves of a removed node


@attrs.frozen
class Aligned:
    """Leaves of several sources that feed one shared input: stored once, under ``name``.

    Attributes:
        name: the key of the leaf in the mixture's element.
        leaf: the leaf (per item: one example, or one batch with batch dimension ``None``).
        paths: for each source, in source order, the canonical path of its leaf, or None
            when the source has none (its examples then carry zeros there).
    """

    name: str
    leaf: Leaf
    paths: tuple[Path | None, ...]


@attrs.frozen
class MixturePlan:
    """The checked mixture: sources, aligned leaves, sampling, and the union structure.

    Attributes:
        names: the source names, in order; ``"source" == i`` marks examples of ``names[i]``.
        items: each source's `ElementSpec` of what its dataset yields (one example for
            ``per="example"``, one batch, batch dimension ``None``, for ``per="batch"``).
        aligned: the `Aligned` leaves.
        rates: the unnormalised rate of each source (after the proportional rule, if asked).
        rule: how the rates were chosen: ``"equal"``, ``"fixed"`` or ``"proportional ..."``.
        per: ``"example"`` or ``"batch"``.
        seed: the sampling seed, or None (not deterministic).
        stop_on_empty: stop at the first exhausted source (True) or continue with the others.
        fill: ``((keys in the mixture, value), ...)``: fill values other than zero.
    """

    names: tuple[str, ...]
    items: tuple[ElementSpec, ...]
    aligned: tuple[Aligned, ...]
    rates: tuple[float, ...]
    rule: str
    per: str
    seed: int | None
    stop_on_empty: bool
    fill: tuple[tuple[tuple, Any], ...] = ()

    @property
    def probabilities(self) -> tuple[float, ...]:
        """The probability of each source (per example, or per batch with ``per="batch"``)."""
        total = sum(self.rates)
        return tuple(r / total for r in self.rates)

    def removed(self, index: int) -> frozenset[tuple]:
        """The keys of source ``index``'s leaves that are aligned (stored once, elsewhere)."""
        return frozenset(a.paths[index].keys for a in self.aligned if a.paths[index] is not None)

    def residual(self, index: int, item: Any) -> Any:
        """A source's item (leaves, type specs or tensors) without its aligned leaves.

        A sequence that loses a leaf becomes a dict keyed by its indices as strings (field
        names for namedtuples), so the other leaves keep their paths. None when no leaf is left.
        """
        out = without(item, self.removed(index))
        return None if out is _GONE else out

    def assemble(self, parts: Mapping[int, Any], aligned: Mapping[str, Any], source: Any) -> dict:
        """The mixture's element from each source's residual part, the aligned values and the
        source leaf (for leaves, type specs or tensors alike)."""
        out = {name: parts[i] for i, name in enumerate(self.names) if parts[i] is not None}
        out.update({a.name: aligned[a.name] for a in self.aligned})
        out[SOURCE] = source
        return out

    @property
    def structure(self) -> dict:
        """The mixture's item structure of `Leaf` values."""
        parts = {i: self.residual(i, item.structure) for i, item in enumerate(self.items)}
        source = Leaf("int32", (None,) if self.per == "batch" else ())
        return self.assemble(parts, {a.name: a.leaf for a in self.aligned}, source)

    @property
    def element(self) -> ElementSpec:
        """The `ElementSpec` of the mixture's batches (``ds.batch`` / ``padded_batch`` of the
        examples for ``per="example"``; the batches themselves for ``per="batch"``)."""
        spec = ElementSpec(self.structure)
        return spec.batched() if self.per == "example" else spec

    def index(self, name: str, where: str = "mixture") -> int:
        """The index of a source (its ``"source"`` value). Raises `SpecError` if unknown."""
        if name not in self.names:
            raise SpecError.single(
                where,
                None,
                f"one of the sources {list(self.names)}",
                repr(name),
                nearby=close_matches(str(name), self.names),
            )
        return self.names.index(name)

    def route(self, name: str) -> Route:
        """``route("source", equals=<index of name>)``: the examples of one source."""
        return Route(SOURCE, "equals", self.index(name, "mix.route"))

    def fill_value(self, keys: tuple) -> Any:
        """The value other sources' examples carry at ``keys`` (zero unless ``fill`` says)."""
        for fill_keys, value in self.fill:
            if keys[: len(fill_keys)] == fill_keys:
                return value
        return 0

    def mixture_keys(self, index: int, keys: tuple) -> tuple | None:
        """Where the leaf (or subtree) at ``keys`` of source ``index`` is in the mixture.

        Returns the keys in the mixture, or None for a subtree that holds an aligned leaf.
        """
        removed = self.removed(index)
        for a in self.aligned:
            if a.paths[index] is not None and a.paths[index].keys == keys:
                return (a.name,)
        if any(r[: len(keys)] == keys for r in removed):
            return None
        out, node = [self.names[index]], self.items[index].structure
        for depth, key in enumerate(keys):
            touched = any(r[:depth] == keys[:depth] and len(r) > depth for r in removed)
            sequence = isinstance(node, (list, tuple))
            out.append(str(key) if touched and sequence and isinstance(key, int) else key)
            node = structure.child(node, key)
        return tuple(out)


def without(node: Any, removed: frozenset[tuple], prefix: tuple = ()) -> Any:
    """``node`` without the leaves at ``removed`` (see `MixturePlan.residual`)."""
    if prefix in removed:
        return _GONE
    if not any(len(r) > len(prefix) and r[: len(prefix)] == prefix for r in removed):
        return node
    kept = {}
    for key, value in structure.children(node):
        rest = without(value, removed, (*prefix, key))
        if rest is not _GONE:
            kept[key if isinstance(node, Mapping) else str(key)] = rest
    return kept if kept else _GONE


def proportional_rates(
    sizes: tuple[int, ...], temperature: float = 1.0, maximum: float | None = None
) -> tuple[float, ...]:
    """Examples-proportional rates as T5 / seqio define them: ``min(n, maximum) ** (1 / T)``.

    Args:
        sizes: the number of examples of each source.
        temperature: ``T``: 1 keeps the rates proportional, larger values flatten them.
        maximum: the size cap ``K`` (T5's "artificial dataset size limit"), or None.

    Examples:
        >>> proportional_rates((100, 10_000), maximum=1_000)
        (100.0, 1000.0)
        >>> [round(r, 1) for r in proportional_rates((100, 10_000), temperature=2.0)]
        [10.0, 100.0]
    """
    capped = [float(n) if maximum is None else min(float(n), maximum) for n in sizes]
    return tuple(c ** (1.0 / temperature) for c in capped)
