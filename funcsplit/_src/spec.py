"""Element specs: `Leaf` (one tensor of a batch) and `ElementSpec` (the nested element)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import tensorflow as tf

from funcsplit._src import batching
from funcsplit._src import paths
from funcsplit._src import structure
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.paths import Path

_KINDS = ("dense", "ragged", "sparse")


def _to_shape(shape: object) -> tuple[int | None, ...]:
    if isinstance(shape, tf.TensorShape):
        if shape.rank is None:
            raise SpecError.single("Leaf", None, "a shape of known rank", "unknown rank")
        return tuple(shape.as_list())
    if isinstance(shape, int) or not isinstance(shape, (tuple, list)):
        raise SpecError.single("Leaf", None, "a shape such as (None, 64)", repr(shape))
    dims = tuple(structure.python_scalar(dim) for dim in shape)
    for dim in dims:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 0):
            raise SpecError.single(
                "Leaf", None, "dimensions that are ints >= 0 or None", repr(shape)
            )
    return dims


def _to_dtype(dtype: object) -> tf.DType:
    try:
        return tf.dtypes.as_dtype(dtype)
    except TypeError:
        raise SpecError.single("Leaf", None, "a TensorFlow dtype", repr(dtype)) from None


@attrs.frozen(repr=False)
class Leaf:
    """One tensor of a batched element: dtype, shape (batch dimension first) and kind.

    Args:
        dtype: a TensorFlow dtype (or its name).
        shape: the batched shape; ``None`` for unknown dimensions. Default ``(None,)``.
        kind: ``"dense"``, ``"ragged"`` or ``"sparse"``.
        ragged_rank: for ragged leaves, the number of ragged dimensions (default: rank - 1).

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> fs.Leaf(tf.int32, (None,))
        Leaf(int32, (None,))
        >>> fs.Leaf("float32", (None, None), kind="ragged").type_spec().ragged_rank
        1
    """

    dtype: tf.DType = attrs.field(converter=_to_dtype)
    shape: tuple[int | None, ...] = attrs.field(default=(None,), converter=_to_shape)
    kind: str = attrs.field(default="dense", validator=attrs.validators.in_(_KINDS))
    ragged_rank: int | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.kind == "ragged":
            rank = self.ragged_rank if self.ragged_rank is not None else len(self.shape) - 1
            if not 1 <= rank < len(self.shape):
                raise SpecError.single(
                    "Leaf",
                    None,
                    "a ragged leaf of rank >= 2 with 1 <= ragged_rank < rank",
                    f"shape {self.shape}, ragged_rank {self.ragged_rank}",
                )
            object.__setattr__(self, "ragged_rank", rank)
        elif self.ragged_rank is not None:
            raise SpecError.single("Leaf", None, "ragged_rank only for kind='ragged'", self.kind)

    @classmethod
    def from_type_spec(cls, spec: tf.TypeSpec) -> Leaf:
        """Builds a leaf from a `tf.TensorSpec`, `tf.RaggedTensorSpec` or `tf.SparseTensorSpec`."""
        if isinstance(spec, tf.RaggedTensorSpec):
            if spec.ragged_rank == 0:
                return cls(spec.dtype, spec.shape)
            return cls(spec.dtype, spec.shape, "ragged", spec.ragged_rank)
        if isinstance(spec, tf.SparseTensorSpec):
            return cls(spec.dtype, spec.shape, "sparse")
        if isinstance(spec, tf.TensorSpec):
            return cls(spec.dtype, spec.shape)
        raise SpecError.single(
            "Leaf", None, "a TensorSpec, RaggedTensorSpec or SparseTensorSpec", repr(spec)
        )

    @property
    def rank(self) -> int:
        """The number of dimensions, batch dimension included."""
        return len(self.shape)

    def with_shape(self, shape: tuple[int | None, ...]) -> Leaf:
        """Returns the same leaf with another shape."""
        ragged_rank = self.ragged_rank
        if ragged_rank is not None:
            ragged_rank = min(ragged_rank, len(shape) - 1)
        return attrs.evolve(self, shape=shape, ragged_rank=ragged_rank)

    def type_spec(self, *, relax_batch: bool = False) -> tf.TypeSpec:
        """The TensorFlow type spec of this leaf (batch dimension ``None`` if ``relax_batch``)."""
        shape = self.shape
        if relax_batch and shape:
            shape = (None, *shape[1:])
        if self.kind == "ragged":
            return tf.RaggedTensorSpec(shape, self.dtype, self.ragged_rank)
        if self.kind == "sparse":
            return tf.SparseTensorSpec(shape, self.dtype)
        return tf.TensorSpec(shape, self.dtype)

    def describe(self) -> str:
        """A short text such as ``int32[None, 10]`` (ragged and sparse marked)."""
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        mark = "" if self.kind == "dense" else f" {self.kind}"
        return f"{self.dtype.name}[{dims}]{mark}"

    def __repr__(self) -> str:
        extra = "" if self.kind == "dense" else f", kind={self.kind!r}"
        return f"Leaf({self.dtype.name}, {self.shape!r}{extra})"


def _is_leaf(value: object) -> bool:
    return isinstance(value, (Leaf, tf.TypeSpec))


def _to_leaf(value: object) -> Leaf:
    return value if isinstance(value, Leaf) else Leaf.from_type_spec(value)


_TENSOR_SPECS = (tf.TensorSpec, tf.RaggedTensorSpec, tf.SparseTensorSpec)


def _not_a_tensor(keys: tuple, spec: tf.TypeSpec) -> Problem:
    """The problem of a type spec that is not a tensor's (a nested dataset, an optional)."""
    path = paths.render(keys)
    if isinstance(spec, tf.data.DatasetSpec):
        return Problem(
            "ElementSpec",
            path,
            "a tensor (dense, ragged or sparse): funcsplit routes the tensors of an element",
            "a nested dataset (DatasetSpec), as RLDS 'steps' are",
            "drop it from the element in a map before funcsplit, or flatten it first "
            f"(ds.flat_map(lambda ex: ex[{keys[-1]!r}]) for one element per step)"
            if keys
            else "flatten it first: ds.flat_map(lambda ex: ex)",
        )
    return Problem(
        "ElementSpec",
        path,
        "a tensor (dense, ragged or sparse): funcsplit routes the tensors of an element",
        f"a {type(spec).__name__}",
        "drop it from the element in a map before funcsplit, or turn it into tensors there",
    )


def _convert_structure(value: object) -> Any:
    problems = []
    for keys, leaf in structure.iter_paths(value):
        if isinstance(leaf, tf.TypeSpec) and not isinstance(leaf, _TENSOR_SPECS):
            problems.append(_not_a_tensor(keys, leaf))
        elif not _is_leaf(leaf):
            problems.append(
                Problem(
                    "ElementSpec",
                    paths.render(keys),
                    "a Leaf, tf.TensorSpec, tf.RaggedTensorSpec or tf.SparseTensorSpec "
                    "inside dicts, lists, tuples and namedtuples",
                    f"{leaf!r} of type {type(leaf).__name__}",
                    "describe each tensor with fs.Leaf(dtype, shape) or a tf.TensorSpec",
                )
            )
    for keys, node in structure.iter_paths(value, leaves_only=False):
        if isinstance(node, Mapping):
            bad = [k for k in node if not isinstance(k, str) and not isinstance(k, int)]
            if bad:
                problems.append(Problem("ElementSpec", paths.render(keys), "str keys", repr(bad)))
    if not structure.is_container(value) and not _is_leaf(value):
        problems = problems or [Problem("ElementSpec", None, "a structure of leaves", repr(value))]
    raise_if_any(problems)
    return structure.map_leaves(_to_leaf, value, is_leaf=_is_leaf)


def _freeze(value: object) -> object:
    return structure.freeze(value, lambda v: isinstance(v, Leaf))


@attrs.frozen(repr=False)
class ElementSpec:
    """The structure of a batched dataset element: a nested structure of `Leaf` values.

    Dicts (any key order; keys may contain ``/``), lists, tuples and namedtuples nest to any
    depth. Two specs that differ only in dict key order are equal. Leaf shapes are batched
    shapes (batch dimension first).

    Args:
        structure: a nested structure of `Leaf` or `tf.TypeSpec` values.

    Raises:
        SpecError: naming each path whose value is not a leaf description.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure(
        ...     {"image": tf.TensorSpec((None, 8, 8, 3), tf.float32),
        ...      "label_dict": {"category_1": fs.Leaf(tf.int32, (None,))}})
        >>> [str(p) for p in spec.paths]
        ['image', 'label_dict/category_1']
        >>> spec["label_dict/category_1"]
        Leaf(int32, (None,))
    """

    structure: Any = attrs.field(converter=_convert_structure, eq=_freeze)

    @classmethod
    def from_structure(cls, value: Any, *, batched: bool = True) -> ElementSpec:
        """Builds a spec from a nested structure of leaves or type specs.

        Args:
            value: nested dicts / lists / tuples / namedtuples of `Leaf` or `tf.TypeSpec`.
            batched: whether the shapes include the batch dimension. With ``False`` a
                leading ``None`` is added to each leaf.
        """
        spec = cls(value)
        return spec if batched else spec.batched()

    @classmethod
    def from_dataset(cls, ds: tf.data.Dataset, *, batched: bool | None = None) -> ElementSpec:
        """Builds a spec from ``ds.element_spec``.

        Args:
            ds: a `tf.data.Dataset` (or its ``element_spec``).
            batched: whether ``ds`` yields batches. ``None`` infers it, never guessing: from
                the pipeline when it says so (``batch``, ``padded_batch``, ``ragged_batch``
                and ``tfds.load(batch_size=...)`` yield batches; ``unbatch`` and
                ``from_tensor_slices`` examples; ``map``, ``filter``, ``shuffle``,
                ``prefetch``, ... keep what their input yields), else from the shapes when
                they are clear (a scalar leaf: examples). Otherwise (every leaf a sequence
                of unknown length and a pipeline that does not say, as ``tfds.load``
                without ``batch_size`` of conll2003) a `SpecError` asks for ``batched=``.

        Returns:
            The spec of the batches (an unbatched dataset gets a leading ``None``).

        Raises:
            SpecError: when it cannot tell batches from examples, or for a scalar leaf of a
                batched dataset (naming its path).

        Examples:
            >>> import funcsplit as fs, tensorflow as tf
            >>> sentences = tf.data.Dataset.from_generator(
            ...     lambda: iter([{"tokens": [1, 2]}, {"tokens": [3]}]),
            ...     output_signature={"tokens": tf.TensorSpec((None,), tf.int32)})
            >>> fs.ElementSpec.from_dataset(sentences.padded_batch(2))
            ElementSpec(tokens: int32[None, None])
            >>> fs.ElementSpec.from_dataset(sentences, batched=False)
            ElementSpec(tokens: int32[None, None])
            >>> fs.ElementSpec.from_dataset(sentences)
            Traceback (most recent call last):
            funcsplit.SpecError: ... say which it is: batched=False for examples ...
        """
        element_spec = ds.element_spec if isinstance(ds, tf.data.Dataset) else ds
        spec = cls(element_spec)
        leaves = list(structure.iter_paths(spec.structure))
        where = "ElementSpec.from_dataset"
        if batched is None:
            batched = batching.infer(ds, leaves, where)
        if batched:
            batching.check_batched(leaves, where)
        return spec if batched else spec.batched()

    def batched(self) -> ElementSpec:
        """Returns the spec of batches of elements described by this spec."""

        def add_batch(leaf: Leaf) -> Leaf:
            out = leaf.with_shape((None, *leaf.shape))
            if leaf.kind == "ragged":
                out = attrs.evolve(out, ragged_rank=leaf.ragged_rank + 1)
            return out

        return ElementSpec(structure.map_leaves(add_batch, self.structure, is_leaf=_is_leaf))

    @property
    def leaves(self) -> tuple[tuple[Path, Leaf], ...]:
        """Every ``(path, leaf)`` pair, in `tf.nest` order."""
        return tuple((Path(keys), leaf) for keys, leaf in structure.iter_paths(self.structure))

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every leaf path, in `tf.nest` order."""
        return tuple(path for path, _ in self.leaves)

    def resolve(self, path: str | Path | tuple, where: str = "path") -> Path:
        """Resolves a path-like to the canonical `Path` of a leaf or subtree.

        Raises:
            SpecError: if it names nothing or, for a string, several nodes.
        """
        path = paths.check_path_like(path, where)
        return Path(paths.resolve(self.structure, path, where))

    def __getitem__(self, path: str | Path | tuple) -> Leaf | ElementSpec:
        node = structure.get(self.structure, tuple(self.resolve(path)))
        return node if isinstance(node, Leaf) else ElementSpec(node)

    def type_spec(self, *, relax_batch: bool = True) -> Any:
        """The nested TensorFlow type spec (batch dimension ``None`` by default)."""
        return structure.map_leaves(
            lambda leaf: leaf.type_spec(relax_batch=relax_batch), self.structure, is_leaf=_is_leaf
        )

    def check(self, ds: Any, *, batched: bool | None = None) -> None:
        """Checks that a dataset (or an element spec) fits this spec.

        Batched datasets are checked against the batched shapes (any batch size); unbatched
        ones against the shapes without the batch dimension, where one example of a ragged
        leaf is dense or ragged with one ragged dimension fewer (what ``ragged_batch``
        batches). With ``batched=None`` the interpretation with fewer mismatches is reported.

        Raises:
            SpecError: naming every path whose structure, dtype, kind or shape differs.
        """
        found = ds.element_spec if isinstance(ds, tf.data.Dataset) else ds
        raise_if_any(self.problems_with(found, batched=batched))

    def problems_with(self, element_spec: Any, *, batched: bool | None = None) -> list[Problem]:
        """The problems `check` would raise, as a list (empty when it fits)."""
        try:
            other = ElementSpec(element_spec)
        except SpecError as error:
            return list(error.problems)
        if batched is None:
            as_batch = self._mismatches(other, batched=True)
            if not as_batch:
                return []
            as_example = self._mismatches(other, batched=False)
            return as_example if len(as_example) < len(as_batch) else as_batch
        return self._mismatches(other, batched=batched)

    def _mismatches(self, other: ElementSpec, *, batched: bool) -> list[Problem]:
        mine = dict(structure.iter_paths(self.structure))
        theirs = dict(structure.iter_paths(other.structure))
        problems = []
        missing = [k for k in mine if k not in theirs]
        extra = [k for k in theirs if k not in mine]
        if missing or extra:
            drawn = (
                f"spec {structure.draw(self.structure, _is_leaf)} vs dataset "
                f"{structure.draw(other.structure, _is_leaf)}"
            )
            for keys in missing:
                problems.append(
                    Problem(
                        "dataset",
                        paths.render(keys),
                        f"a {mine[keys].describe()} leaf",
                        "no such leaf in the dataset (" + drawn + ")",
                        "map the dataset to the spec's structure, or rebuild the spec with "
                        "ElementSpec.from_dataset(ds)",
                        paths.close_matches(paths.render(keys), map(paths.render, extra)),
                    )
                )
            for keys in extra:
                problems.append(
                    Problem(
                        "dataset",
                        paths.render(keys),
                        "only the spec's leaves",
                        f"an extra {theirs[keys].describe()} leaf",
                        "add it to the spec (and use or drop it), or remove it from the dataset",
                    )
                )
        for keys, leaf in mine.items():
            if keys in theirs:
                problem = _leaf_mismatch(keys, leaf, theirs[keys], batched)
                if problem is not None:
                    problems.append(problem)
        return problems

    def __repr__(self) -> str:
        inner = ", ".join(f"{p}: {leaf.describe()}" for p, leaf in self.leaves)
        return f"ElementSpec({inner})"


def _kind_mismatch(mine: Leaf, theirs: Leaf, batched: bool) -> tuple[str, str] | None:
    """``(expected, found)`` when ``theirs`` is not of the kind a batch (or an example) has.

    A batch has the spec's kind (and ragged rank). One example of a ragged leaf with ragged
    rank ``r`` is dense (``ragged_batch`` makes it ragged) or, for ``r >= 2``, ragged with
    ragged rank ``r - 1`` (``ragged_batch`` adds the batch dimension as one more).
    """
    found = theirs.kind if theirs.kind != "ragged" else f"ragged (ragged_rank {theirs.ragged_rank})"
    if batched or mine.kind != "ragged":
        if theirs.kind != mine.kind:
            return f"a {mine.kind} tensor", found
        if mine.kind == "ragged" and theirs.ragged_rank != mine.ragged_rank:
            return f"a ragged tensor with ragged_rank {mine.ragged_rank}", found
        return None
    rank = mine.ragged_rank - 1
    if theirs.kind == "dense" or (theirs.kind == "ragged" and theirs.ragged_rank == rank >= 1):
        return None
    ragged = f" or a ragged tensor with ragged_rank {rank}" if rank >= 1 else ""
    return f"one example of a ragged leaf: a dense tensor{ragged}", found


def _leaf_mismatch(keys: tuple, mine: Leaf, theirs: Leaf, batched: bool) -> Problem | None:
    expected_shape = mine.shape if batched else mine.shape[1:]
    expected = mine if batched else Leaf(mine.dtype, expected_shape)
    where = "dataset (batched)" if batched else "dataset (unbatched)"
    fix = "cast or reshape it in a map before funcsplit, or fix the spec"
    if theirs.dtype != mine.dtype:
        return Problem(
            where, paths.render(keys), f"dtype {mine.dtype.name}", theirs.dtype.name, fix
        )
    kind = _kind_mismatch(mine, theirs, batched)
    if kind is not None:
        return Problem(where, paths.render(keys), kind[0], kind[1], fix)
    shape_ok = len(theirs.shape) == len(expected_shape) and all(
        a is None or b is None or a == b
        for i, (a, b) in enumerate(zip(expected_shape, theirs.shape))
        if not (batched and i == 0)
    )
    if not shape_ok:
        return Problem(
            where, paths.render(keys), f"shape {expected.describe()}", theirs.describe(), fix
        )
    return None
