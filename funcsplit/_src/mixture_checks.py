"""The checks of a mixture: sources, rates, aligned leaves, fill values (pure Python).

`plan_mixture` collects every mistake of an ``fs.mix`` call into one `SpecError`, before any
TensorFlow op is built, and returns the `MixturePlan`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from funcsplit._src import paths
from funcsplit._src import structure
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import close_matches
from funcsplit._src.errors import raise_if_any
from funcsplit._src.mixture import PER
from funcsplit._src.mixture import PROPORTIONAL
from funcsplit._src.mixture import SOURCE
from funcsplit._src.mixture import Aligned
from funcsplit._src.mixture import MixturePlan
from funcsplit._src.mixture import proportional_rates
from funcsplit._src.paths import Path
from funcsplit._src.spec import ElementSpec
from funcsplit._src.spec import Leaf


def _number(value: object) -> float | None:
    value = structure.python_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _check_names(names: tuple, problems: list[Problem]) -> None:
    seen = set()
    for name in names:
        if not isinstance(name, str) or not name or "/" in name or name == SOURCE:
            problems.append(
                Problem(
                    "fs.mix sources",
                    None,
                    f"source names that are non-empty strings without '/', other than {SOURCE!r}",
                    repr(name),
                    "rename the source: its leaves appear under '<name>/<path>'",
                )
            )
        elif name in seen:
            problems.append(
                Problem("fs.mix sources", None, "unique source names", f"{name!r} twice")
            )
        seen.add(name)


def _fixed_rates(names: tuple, rates: Mapping, problems: list[Problem]) -> tuple[float, ...]:
    for key in rates:
        if key not in names:
            problems.append(
                Problem(
                    "fs.mix rates",
                    None,
                    f"rates only for the sources {list(names)}",
                    f"a rate for {key!r}",
                    "remove it, or add the source",
                    close_matches(str(key), names),
                )
            )
    out = []
    for name in names:
        value = _number(rates.get(name))
        if name not in rates or value is None or value <= 0:
            found = "no rate" if name not in rates else repr(rates[name])
            problems.append(
                Problem(
                    f"fs.mix rates[{name!r}]",
                    None,
                    "a positive, finite rate for every source",
                    found,
                    "give it a rate > 0 (a source with rate 0 is a source to leave out)",
                )
            )
        out.append(value or 1.0)
    return tuple(out)


_CARDINALITY = {-1: "INFINITE (a repeat()?)", -2: "UNKNOWN (a filter() or a generator?)"}


def _rates(
    names: tuple, rates: Any, sizes: Mapping | None, temperature: Any, maximum: Any, problems: list
) -> tuple[tuple[float, ...], str]:
    if rates != PROPORTIONAL:
        options = (("temperature", temperature), ("maximum", maximum), ("sizes", sizes))
        for option, value in options:
            if value is not None:
                problems.append(
                    Problem(
                        "fs.mix",
                        None,
                        f"{option}= only with rates='proportional'",
                        f"{option}={value!r} with rates={rates!r}",
                        "scale the fixed rates yourself, or use rates='proportional'",
                    )
                )
    if rates is None:
        return (1.0,) * len(names), "equal"
    if isinstance(rates, Mapping):
        return _fixed_rates(names, rates, problems), "fixed"
    if rates != PROPORTIONAL:
        problems.append(
            Problem("fs.mix rates", None, "{source: rate} or 'proportional'", repr(rates))
        )
        return (1.0,) * len(names), "equal"
    sizes = sizes or {}
    for key in sizes:
        if key not in names:
            problems.append(
                Problem(
                    "fs.mix sizes",
                    None,
                    f"sizes only for the sources {list(names)}",
                    repr(key),
                    nearby=close_matches(str(key), names),
                )
            )
    t = 1.0 if temperature is None else _number(temperature)
    cap = None if maximum is None else _number(maximum)
    if t is None or t <= 0:
        problems.append(Problem("fs.mix", None, "a positive temperature", repr(temperature)))
        t = 1.0
    if maximum is not None and (cap is None or cap <= 0):
        problems.append(Problem("fs.mix", None, "a positive maximum (size cap)", repr(maximum)))
        cap = None
    counts = []
    for name in names:
        size = structure.python_scalar(sizes.get(name))
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            found = _CARDINALITY.get(size, repr(size))
            problems.append(
                Problem(
                    f"fs.mix rates='proportional' for {name!r}",
                    None,
                    "a known, positive number of examples (the dataset's cardinality)",
                    found,
                    f"pass sizes={{{name!r}: n}}, or fixed rates",
                )
            )
            size = 1
        counts.append(size)
    rule = f"proportional (temperature {t:g}" + (f", maximum {cap:g})" if cap else ")")
    return proportional_rates(tuple(counts), t, cap), rule


def _align(
    names: tuple, items: tuple, align: Mapping, problems: list[Problem]
) -> tuple[Aligned, ...]:
    out, used = [], {}
    for name, entry in align.items():
        where = f"fs.mix align[{name!r}]"
        if not isinstance(name, str) or not name or "/" in name or name in (*names, SOURCE):
            problems.append(
                Problem(
                    where,
                    None,
                    "a name without '/' that is not a source name nor 'source'",
                    repr(name),
                    "rename the aligned leaf",
                )
            )
            continue
        if not isinstance(entry, Mapping) or not entry:
            problems.append(Problem(where, None, "{source: path, ...}", repr(entry)))
            continue
        found: dict[int, tuple] = {}
        for source, path in entry.items():
            if source not in names:
                problems.append(
                    Problem(
                        where,
                        None,
                        f"one of the sources {list(names)}",
                        repr(source),
                        nearby=close_matches(str(source), names),
                    )
                )
                continue
            i = names.index(source)
            keys = _leaf_keys(items[i], path, f"{where} {source!r}", problems)
            if keys is None:
                continue
            if (i, keys) in used:
                problems.append(
                    Problem(
                        where,
                        f"{source}/{paths.render(keys)}",
                        "each leaf aligned once",
                        f"also aligned as {used[(i, keys)]!r}",
                    )
                )
                continue
            used[(i, keys)] = name
            found[i] = keys
        if found:
            out.append(_agreeing(name, names, items, found, problems))
    return tuple(out)


def _leaf_keys(item: ElementSpec, path: Any, where: str, problems: list) -> tuple | None:
    try:
        keys = item.resolve(path, where).keys
    except SpecError as error:
        problems.extend(error.problems)
        return None
    node = structure.get(item.structure, keys)
    if not isinstance(node, Leaf):
        problems.append(
            Problem(
                where,
                paths.render(keys),
                "a leaf",
                "a subtree " + structure.draw(node),
                "align each leaf on its own",
            )
        )
        return None
    return keys


def _agreeing(name: str, names: tuple, items: tuple, found: dict, problems: list) -> Aligned:
    first = min(found)
    leaf = structure.get(items[first].structure, found[first])
    for i, keys in sorted(found.items()):
        other = structure.get(items[i].structure, keys)
        differs = [
            what
            for what, a, b in (
                ("dtype", leaf.dtype, other.dtype),
                ("shape", leaf.shape, other.shape),
                ("kind", (leaf.kind, leaf.ragged_rank), (other.kind, other.ragged_rank)),
            )
            if a != b
        ]
        if differs:
            here = f"{names[first]}/{paths.render(found[first])}"
            there = f"{names[i]}/{paths.render(keys)}"
            problems.append(
                Problem(
                    f"fs.mix align[{name!r}]",
                    there,
                    f"the {' and '.join(differs)} of {here}: {leaf.describe()}",
                    f"{other.describe()}",
                    "make them agree in a map before mixing: resize images to one size "
                    "(tf.image.resize), cast to one dtype (tf.cast), or do not align them",
                )
            )
    paths_by_source = tuple(Path(found[i]) if i in found else None for i in range(len(names)))
    return Aligned(name, leaf, paths_by_source)


def _batch_items(items: tuple, names: tuple, problems: list) -> tuple:
    out = []
    for name, item in zip(names, items):
        scalars = [str(p) for p, leaf in item.leaves if leaf.rank == 0]
        if scalars:
            problems.append(
                Problem(
                    f"fs.mix per='batch' source {name!r}",
                    scalars[0],
                    "batched sources: every leaf with a batch dimension",
                    f"scalar leaves {scalars[:4]}",
                    "batch each source first (ds.batch(B), padded_batch or ragged_batch), "
                    "or mix per='example'",
                )
            )
            out.append(item)
            continue
        out.append(_relaxed(item))
    return tuple(out)


def _relaxed(item: ElementSpec) -> ElementSpec:
    return ElementSpec(
        structure.map_leaves(
            lambda leaf: leaf.with_shape((None, *leaf.shape[1:])),
            item.structure,
            is_leaf=lambda v: isinstance(v, Leaf),
        )
    )


def _fits(value: object, leaf: Leaf) -> bool:
    if leaf.dtype.name == "string":
        return isinstance(value, (str, bytes))
    if isinstance(value, (str, bytes)) or _number(value) is None:
        return False
    if leaf.dtype.is_bool:
        return isinstance(value, bool) or value in (0, 1)
    if leaf.dtype.is_integer:
        return float(value).is_integer() and leaf.dtype.min <= value <= leaf.dtype.max
    return True


def _fill(union: dict, fill: Mapping, problems: list[Problem]) -> tuple:
    out = []
    for path, value in fill.items():
        where = "fs.mix fill"
        try:
            keys = paths.resolve(union, paths.check_path_like(path, where), where)
        except SpecError as error:
            problems.extend(error.problems)
            continue
        value = structure.python_scalar(value)
        leaves = [leaf for _, leaf in structure.iter_paths(structure.get(union, keys))]
        if keys[0] == SOURCE:
            problems.append(Problem(where, SOURCE, "a source's leaf", "the source index"))
        elif not all(_fits(value, leaf) for leaf in leaves):
            problems.append(
                Problem(
                    where,
                    paths.render(keys),
                    "a value that fits " + ", ".join(leaf.describe() for leaf in leaves[:3]),
                    repr(value),
                )
            )
        else:
            out.append((tuple(keys), value))
    return tuple(out)


def plan_mixture(
    names: tuple[str, ...],
    items: tuple[ElementSpec, ...],
    *,
    rates: Any = None,
    sizes: Mapping[str, int] | None = None,
    align: Mapping[str, Mapping[str, Any]] | None = None,
    per: str = "example",
    seed: int | None = None,
    temperature: float | None = None,
    maximum: float | None = None,
    stop_on_empty: bool = False,
    fill: Mapping[Any, Any] | None = None,
) -> MixturePlan:
    """Checks a mixture's sources and options and plans its element (see ``fs.mix``).

    Args:
        names: the source names.
        items: each source's `ElementSpec` of what its dataset yields (one example, or one
            batch for ``per="batch"``).
        rates: None (equal), ``{name: rate}`` or ``"proportional"``.
        sizes: each source's number of examples (batches for ``per="batch"``), for
            ``"proportional"``; negative values are tf.data's INFINITE / UNKNOWN cardinality.
        align: ``{name: {source: path}}``: leaves stored once, under ``name``.
        per: ``"example"`` or ``"batch"``.
        seed: the sampling seed (an int) or None.
        temperature: T5's temperature for ``"proportional"`` (default 1).
        maximum: T5's size cap for ``"proportional"`` (default none).
        stop_on_empty: end at the first exhausted source instead of continuing.
        fill: ``{path in the mixture: value}`` for parts filled with something other than 0.

    Returns:
        The `MixturePlan`.

    Raises:
        SpecError: with every problem found: names, rates, aligned leaves that disagree in
            dtype or shape (both paths named), per, seed, fill values.
    """
    problems: list[Problem] = []
    names = tuple(names)
    if not names:
        problems.append(Problem("fs.mix", None, "at least one source", "none"))
    _check_names(names, problems)
    if per not in PER:
        problems.append(Problem("fs.mix", None, f"per in {PER}", repr(per)))
    elif per == "batch":
        items = _batch_items(items, names, problems)
    seed = structure.python_scalar(seed)
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63
    ):
        problems.append(Problem("fs.mix", None, "seed: an int (int64) or None", repr(seed)))
    if not isinstance(stop_on_empty, bool):
        problems.append(Problem("fs.mix", None, "stop_on_empty: a bool", repr(stop_on_empty)))
    rate_values, rule = _rates(names, rates, sizes, temperature, maximum, problems)
    if align is not None and not isinstance(align, Mapping):
        problems.append(Problem("fs.mix align", None, "{name: {source: path}}", repr(align)))
        align = None
    aligned = _align(names, tuple(items), align or {}, problems)
    raise_if_any(problems)
    plan = MixturePlan(names, tuple(items), aligned, rate_values, rule, per, seed, stop_on_empty)
    if fill is not None and not isinstance(fill, Mapping):
        raise SpecError.single("fs.mix fill", None, "{path in the mixture: value}", repr(fill))
    if fill:
        plan = attrs.evolve(plan, fill=_fill(plan.structure, fill, problems))
        raise_if_any(problems)
    return plan
