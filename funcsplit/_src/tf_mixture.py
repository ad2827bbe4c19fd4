"""Mixtures in `tf.data`: each source mapped to the mixture's element, then sampled.

Each source's dataset is mapped to the union structure of the plan (its own leaves under its
name, the aligned leaves once, zeros of the declared shapes for the other sources' parts, and
its index as the ``"source"`` leaf); ``tf.data.Dataset.choose_from_datasets`` then draws from
the mapped sources with the plan's probabilities, the draws stateless samples of the seed
and their position. Every op is a plain `tf.data`
graph op, so the mixture runs under ``compiled.apply``, tf.data service and `tf.distribute`.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import attrs
import tensorflow as tf

from funcsplit._src import mixture_bindings
from funcsplit._src import structure
from funcsplit._src.bindings import LossBinding
from funcsplit._src.bindings import Route
from funcsplit._src.bindings import SplitSpec
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.mixture import PROPORTIONAL
from funcsplit._src.mixture import MixturePlan
from funcsplit._src.mixture_checks import plan_mixture
from funcsplit._src.spec import ElementSpec

_BLOCK = 1024  # draws per stateless sample of the source choices


@attrs.frozen(eq=False)
class Mixture:
    """Several datasets with different structures as one routed stream (built by `mix`).

    Attributes:
        plan: the checked `MixturePlan` (sources, aligned leaves, rates, union structure).
        dataset: the mixture: one `tf.data.Dataset` of dicts holding every source's leaves
            under its name (``"digits/label"``), the aligned leaves once, and the int32
            ``"source"`` leaf. Examples for ``per="example"`` (batch them), batches for
            ``per="batch"``.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> digits = tf.data.Dataset.from_tensor_slices(
        ...     {"image": tf.zeros((6, 4)), "label": tf.range(6)})
        >>> seg = tf.data.Dataset.from_tensor_slices(
        ...     {"image": tf.ones((6, 4)), "mask": tf.ones((6, 4), tf.bool)})
        >>> mix = fs.mix({"digits": digits, "seg": seg}, rates={"digits": 3, "seg": 1},
        ...              align={"image": {"digits": "image", "seg": "image"}}, seed=0)
        >>> [str(p) for p in mix.element.paths]
        ['digits/label', 'image', 'seg/mask', 'source']
        >>> str(mix.route("seg")), mix.probabilities
        ('source == 1', {'digits': 0.75, 'seg': 0.25})
        >>> example = next(iter(mix.dataset))
        >>> int(example["source"]) in (0, 1)
        True
    """

    plan: MixturePlan
    dataset: tf.data.Dataset

    @property
    def element(self) -> ElementSpec:
        """The `ElementSpec` of the mixture's batches, for `SplitSpec` (``per="example"``:
        what ``dataset.batch`` / ``padded_batch`` yields; after ``ragged_batch`` take
        ``ElementSpec.from_dataset`` of the batched dataset)."""
        return self.plan.element

    @property
    def names(self) -> tuple[str, ...]:
        """The source names; ``"source" == i`` marks the examples of ``names[i]``."""
        return self.plan.names

    @property
    def probabilities(self) -> dict[str, float]:
        """``{source: probability}`` of drawing each source (per example, or per batch)."""
        return dict(zip(self.plan.names, self.plan.probabilities))

    def route(self, name: str) -> Route:
        """``fs.route("source", equals=<index of name>)``: the examples of one source.

        Raises:
            SpecError: for a name that is not a source (with the nearby names).
        """
        return self.plan.route(name)

    def bindings_from(
        self,
        source: str,
        bindings: Iterable[LossBinding] | SplitSpec,
        *,
        name: str = "{source}_{name}",
        output: str = "{output}",
    ) -> tuple[LossBinding, ...]:
        """A source's own bindings (written against its element) moved into the mixture.

        Each binding's target, sample weight and route are resolved against the source's
        element and moved under the source's name (or to the aligned leaf's name); a binding
        without a route is routed by ``route(source)``, so the zeros of the other sources'
        examples never reach its loss. A binding with its own route keeps it when the route
        rejects the value other sources' examples hold there (zero, or ``fill=``): then it
        sends exactly the source's examples it sent before.

        Args:
            source: the source's name.
            bindings: its `LossBinding` values (or a `SplitSpec`: its losses).
            name: the new names, a format string with ``{source}`` and ``{name}``.
            output: the new outputs, a format string with ``{output}`` (the binding's own,
                ``""`` for the whole predictions), ``{source}`` and ``{name}`` (the new
                name); an empty result is the whole predictions. ``"{source}/{output}"``
                addresses per-source heads returned as ``{source: {output: ...}}``.

        Returns:
            The moved bindings, in order.

        Raises:
            SpecError: for a path the source does not have, a subtree holding an aligned
                leaf, a route on an aligned leaf, or a route that the fill value passes
                (the fix names ``fill=``).
        """
        return mixture_bindings.bindings_from(self.plan, source, bindings, name=name, output=output)

    def describe(self) -> str:
        """Each source's rate, probability and route, then every leaf and where it comes from."""
        return mixture_bindings.describe(self.plan)


def _zeros(spec: tf.TypeSpec, batch: tf.Tensor | None, value: Any) -> Any:
    """A tensor (or ragged / sparse tensor) of type ``spec``, empty in unknown dimensions
    (``batch`` rows in a per-batch item's first), holding ``value``."""
    dims = spec.shape.as_list()
    sizes = [d if d is not None else 0 for d in dims]
    if batch is not None:
        sizes[0] = batch

    def dense(shape: list) -> tf.Tensor:
        if any(isinstance(d, tf.Tensor) for d in shape):
            shape = tf.stack(shape)
        if value == 0:
            return tf.zeros(shape, spec.dtype)
        return tf.fill(shape, tf.constant(value, spec.dtype))

    if isinstance(spec, tf.SparseTensorSpec):
        return tf.SparseTensor(
            tf.zeros([0, len(dims)], tf.int64),
            tf.zeros([0], spec.dtype),
            tf.cast(tf.stack(sizes), tf.int64),
        )
    if isinstance(spec, tf.RaggedTensorSpec) and spec.ragged_rank > 0:
        counts = [sizes[0]]  # rows at each ragged level, outermost first
        for d in dims[1 : spec.ragged_rank + 1]:
            counts.append(0 if d is None else counts[-1] * d)
        result = dense([counts[-1], *sizes[spec.ragged_rank + 1 :]])
        for level in range(spec.ragged_rank, 0, -1):
            rows, d = counts[level - 1], dims[level]
            if d is None:
                lengths = tf.zeros(tf.stack([rows]), spec.row_splits_dtype)
                result = tf.RaggedTensor.from_row_lengths(result, lengths, validate=False)
            else:
                result = tf.RaggedTensor.from_uniform_row_length(result, d, nrows=rows)
        return result
    return dense(sizes)


def _batch_size(element: Any) -> tf.Tensor:
    first = tf.nest.flatten(element)[0]
    if isinstance(first, tf.RaggedTensor):
        return first.nrows(out_type=tf.int32)
    if isinstance(first, tf.SparseTensor):
        return tf.cast(first.dense_shape[0], tf.int32)
    return tf.shape(first, out_type=tf.int32)[0]


def _filled(node: Any, keys: tuple, plan: MixturePlan, batch: tf.Tensor | None) -> Any:
    """The other-source part ``node`` (type specs) as tensors: zeros, or the fill values."""
    if isinstance(node, Mapping):
        return {k: _filled(v, (*keys, k), plan, batch) for k, v in node.items()}
    if structure.is_namedtuple(node):
        kids = structure.children(node)
        return type(node)(*(_filled(v, (*keys, k), plan, batch) for k, v in kids))
    if isinstance(node, (list, tuple)):
        return type(node)(_filled(v, (*keys, i), plan, batch) for i, v in enumerate(node))
    return _zeros(node, batch, plan.fill_value(keys))


def _to_mixture(plan: MixturePlan, index: int, specs: tuple) -> Any:
    """The map from one source's element to the mixture's element."""
    per_batch = plan.per == "batch"

    def to_mixture(element: Any) -> dict:
        batch = _batch_size(element) if per_batch else None
        parts = {}
        for j, name in enumerate(plan.names):
            if j == index:
                parts[j] = plan.residual(j, element)
            else:
                rest = plan.residual(j, specs[j])
                parts[j] = None if rest is None else _filled(rest, (name,), plan, batch)
        aligned = {}
        for a in plan.aligned:
            keys = a.paths[index]
            if keys is not None:
                aligned[a.name] = structure.get(element, keys.keys)
            else:
                owner = next(i for i, p in enumerate(a.paths) if p is not None)
                spec = structure.get(specs[owner], a.paths[owner].keys)
                aligned[a.name] = _zeros(spec, batch, plan.fill_value((a.name,)))
        source = tf.fill([batch], index) if per_batch else tf.constant(index, tf.int32)
        return plan.assemble(parts, aligned, source)

    if type(specs[index]) is tuple:  # tf.data passes a tuple element's parts as arguments
        return lambda *element: to_mixture(element)
    return to_mixture


def _sources(sources: Any) -> tuple[tuple[str, ...], tuple[tf.data.Dataset, ...]]:
    pairs = list(sources.items()) if isinstance(sources, Mapping) else list(sources)
    problems = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise SpecError.single(
                "fs.mix sources",
                None,
                "{name: dataset} or (name, dataset) pairs",
                repr(pair),
                "pass e.g. fs.mix({'digits': ds_a, 'seg': ds_b})",
            )
        if not isinstance(pair[1], tf.data.Dataset):
            problems.append(
                Problem(f"fs.mix sources[{i}]", None, "a tf.data.Dataset", repr(pair[1]))
            )
    raise_if_any(problems)
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def mix(
    sources: Mapping[str, tf.data.Dataset] | Iterable[tuple[str, tf.data.Dataset]],
    *,
    rates: Mapping[str, float] | str | None = None,
    align: Mapping[str, Mapping[str, Any]] | None = None,
    per: str = "example",
    seed: int | None = None,
    temperature: float | None = None,
    stop_on_empty: bool = False,
    maximum: float | None = None,
    sizes: Mapping[str, int] | None = None,
    fill: Mapping[Any, Any] | None = None,
) -> Mixture:
    """Mixes several datasets with different structures into one routed stream.

    The mixture's element holds every source's leaves under its name (``"digits/label"``,
    ``"seg/mask"``), the aligned leaves once (``"image"``), and an int32 ``"source"`` leaf:
    the index of the source each example came from. A part an example's source does not have
    holds zeros of its declared shape (empty in unknown dimensions; sequence and ragged leaves
    stay as the source declares them); route each source's bindings with `Mixture.route` or
    `Mixture.bindings_from` and those zeros never reach a loss.

    Sampling draws each example (``per="example"``) or each batch (``per="batch"``) from
    one source, with probability proportional to its rate. The draws are stateless samples
    seeded by ``seed`` and their position: a seed gives the same stream on every pass and in
    every process, whatever ``tf.random.set_seed`` says (``seed=None``: tf.data's
    ``sample_from_datasets``, different on every run).
    End of data: with ``stop_on_empty=False`` (the default) an exhausted source is left out
    and the mixture continues with the sources left (their rates renormalised) until all are
    exhausted; with ``True`` it ends when the first source it draws is exhausted.

    Args:
        sources: ``{name: dataset}`` (or ``(name, dataset)`` pairs): unbatched datasets for
            ``per="example"``, batched ones for ``per="batch"``. Names are unique, without
            ``/``, and not ``"source"``.
        rates: ``{name: rate}`` (positive, one per source), ``"proportional"`` (T5's
            examples-proportional mixing: ``min(n, maximum) ** (1 / temperature)`` from each
            dataset's cardinality or ``sizes``), or None for equal rates.
        align: ``{name: {source: path}}``: leaves of several sources that feed one shared
            input, stored once under ``name``. They must agree in dtype, shape and kind.
        per: ``"example"`` (each example drawn on its own) or ``"batch"`` (each batch from one
            source).
        seed: the sampling seed; None samples differently on every run.
        temperature: T5's temperature for ``"proportional"`` (default 1).
        stop_on_empty: end the mixture at the first exhausted source.
        maximum: T5's size cap for ``"proportional"`` (default none).
        sizes: ``{name: number of examples}`` (batches for ``per="batch"``) for
            ``"proportional"`` where a cardinality is unknown or infinite.
        fill: ``{path in the mixture: value}``: what other sources' examples hold there
            instead of zero (a missing-label sentinel such as ``-1`` that a route rejects).

    Returns:
        The `Mixture`: ``.dataset``, ``.element``, ``.route(name)``, ``.bindings_from(...)``.

    Raises:
        SpecError: before any op is built, with every problem found: names, rates (unknown
            sources, non-positive values, unknown sizes), aligned leaves that disagree (both
            paths named, and how to make them agree), per, seed, fill values.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> a = tf.data.Dataset.from_tensor_slices({"image": tf.zeros((4, 8, 8, 1))})
        >>> b = tf.data.Dataset.from_tensor_slices({"image": tf.zeros((4, 28, 28, 1))})
        >>> fs.mix({"a": a, "b": b}, align={"image": {"a": "image", "b": "image"}})
        Traceback (most recent call last):
        ...
        funcsplit._src.errors.SpecError: funcsplit found 1 problem:
          1. fs.mix align['image'] at path 'b/image'
              expected: the shape of a/image: float32[8, 8, 1]
              found:    float32[28, 28, 1]
        ...
    """
    names, datasets = _sources(sources)
    items, problems = [], []
    for name, ds in zip(names, datasets):
        try:
            items.append(ElementSpec(ds.element_spec))
        except SpecError as error:
            problems += [attrs.evolve(p, where=f"fs.mix source {name!r}") for p in error.problems]
    raise_if_any(problems)
    if rates == PROPORTIONAL:
        sizes = dict(sizes or {})
        for name, ds in zip(names, datasets):
            if name not in sizes:
                sizes[name] = int(ds.cardinality())
    plan = plan_mixture(
        names,
        tuple(items),
        rates=rates,
        sizes=sizes,
        align=align,
        per=per,
        seed=seed,
        temperature=temperature,
        maximum=maximum,
        stop_on_empty=stop_on_empty,
        fill=fill,
    )
    specs = tuple(ds.element_spec for ds in datasets)
    mapped = [ds.map(_to_mixture(plan, i, specs)) for i, ds in enumerate(datasets)]
    if len(mapped) == 1:
        return Mixture(plan, mapped[0])
    if plan.seed is None:
        dataset = tf.data.Dataset.sample_from_datasets(
            mapped, weights=list(plan.probabilities), stop_on_empty_dataset=plan.stop_on_empty
        )
    else:
        dataset = tf.data.Dataset.choose_from_datasets(
            mapped, _choices(plan), stop_on_empty_dataset=plan.stop_on_empty
        )
    return Mixture(plan, dataset)


def _choices(plan: MixturePlan) -> tf.data.Dataset:
    """The source of each draw: block ``j`` of `_BLOCK` draws is one stateless categorical
    sample seeded by ``(seed, j)``, so the stream depends on the seed alone (not on
    ``tf.random.set_seed``). One map call per block, not per draw: a per-draw map costs
    more than the draw (a thread-pool hand-off for every element)."""
    logits = tf.math.log(tf.constant([plan.probabilities], tf.float32))
    seed = tf.constant(plan.seed, tf.int64)

    def block(j: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_categorical(logits, _BLOCK, seed=tf.stack([seed, j]))[0]

    return tf.data.Dataset.counter().map(block).unbatch()
