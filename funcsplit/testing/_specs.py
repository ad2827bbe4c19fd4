"""Strategies for element structures: dict keys, leaves and whole `fs.ElementSpec` values."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import funcsplit as fs
from funcsplit.testing import _checks

# Module-level namedtuple types (never defined inside a function), one per arity.
Single = collections.namedtuple("Single", ["value"])
Pair = collections.namedtuple("Pair", ["first", "second"])
Triple = collections.namedtuple("Triple", ["x", "y", "z"])
NAMEDTUPLES = {1: Single, 2: Pair, 3: Triple}

DTYPES = (tf.float32, tf.float64, tf.int32, tf.int64, tf.uint8, tf.bool, tf.string)
KINDS = ("dense", "ragged", "sparse")
CONTAINERS = ("dict", "tuple", "list", "namedtuple")


def dict_keys() -> st.SearchStrategy[str]:
    """Dict keys as real datasets spell them, and as they trip up path handling.

    Identifiers (``label``), TFDS-style keys with ``/`` (``image/filename``), digit-like
    strings (``"0"``, which a string path could confuse with an index), unicode, and odd
    keys such as ``"a/"`` or ``" "``. Keys are non-empty strings, as `fs.Path` requires.

    Returns:
        A strategy of non-empty strings.

    Examples:
        >>> from hypothesis import given, settings
        >>> from funcsplit.testing import strategies as fst
        >>> @settings(max_examples=10, database=None)
        ... @given(fst.dict_keys())
        ... def test(key):
        ...     assert isinstance(key, str) and key
        >>> test()
    """
    identifier = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
    return st.one_of(
        identifier,
        st.tuples(identifier, identifier).map("/".join),
        st.integers(0, 12).map(str),
        st.text(
            st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
            min_size=1,
            max_size=5,
        ),
        st.text("ab/", min_size=1, max_size=4),
    )


def leaves(
    *,
    dtypes: Sequence[tf.DType] = DTYPES,
    kinds: Sequence[str] = ("dense", "ragged"),
    max_rank: int = 4,
    max_dim: int = 3,
    unknown_dims: bool = True,
) -> st.SearchStrategy[fs.Leaf]:
    """Batched leaves: a dtype, a shape whose first (batch) dimension is ``None``, a kind.

    The *per-example* rank (the rank without the batch dimension) is between 0 and
    ``max_rank``: rank 0 gives ``[B]`` leaves, the ones routes and sample weights need.

    Args:
        dtypes: the dtypes to draw from.
        kinds: among ``"dense"``, ``"ragged"`` (per-example rank >= 1, one or two ragged
            dimensions after the batch) and ``"sparse"``.
        max_rank: the largest per-example rank (0 to 4).
        max_dim: the largest fixed dimension (dimensions are >= 1).
        unknown_dims: whether dense non-batch dimensions may be ``None``.

    Returns:
        A strategy of `fs.Leaf` values.

    Raises:
        InvalidArgument: for an empty or unknown dtype / kind list or a bound out of range.

    Examples:
        >>> from hypothesis import given, settings
        >>> import funcsplit as fs
        >>> from funcsplit.testing import strategies as fst
        >>> @settings(max_examples=10, database=None)
        ... @given(fst.leaves(kinds=("dense",), max_rank=1))
        ... def test(leaf):
        ...     assert leaf.shape[0] is None and 1 <= leaf.rank <= 2
        >>> test()
    """
    dtypes = tuple(dtypes) if not isinstance(dtypes, (str, tf.DType)) else (dtypes,)
    if not dtypes:
        raise InvalidArgument("dtypes must not be empty")
    try:
        dtypes = tuple(tf.dtypes.as_dtype(d) for d in dtypes)
    except TypeError as error:
        raise InvalidArgument(f"dtypes must be TensorFlow dtypes: {error}") from None
    kinds = _checks.check_choices("kinds", kinds, KINDS)
    _checks.check_int("max_rank", max_rank, minimum=0)
    if max_rank > 4:
        raise InvalidArgument(f"max_rank must be <= 4, got {max_rank}")
    _checks.check_int("max_dim", max_dim, minimum=1)
    if kinds == ("ragged",) and max_rank < 1:
        raise InvalidArgument("ragged leaves need max_rank >= 1")
    return _leaves(dtypes, kinds, max_rank, max_dim, bool(unknown_dims))


def _default_leaves() -> st.SearchStrategy[fs.Leaf]:
    return leaves()


@st.composite
def _leaves(draw: Any, dtypes, kinds, max_rank, max_dim, unknown_dims) -> fs.Leaf:
    dtype = draw(st.sampled_from(dtypes))
    kind = draw(st.sampled_from([k for k in kinds if k != "ragged" or max_rank >= 1]))
    fixed = st.integers(1, max_dim)
    if kind == "ragged":
        rank = draw(st.integers(1, max_rank))
        ragged = draw(st.integers(1, min(2, rank)))
        inner = draw(st.lists(fixed, min_size=rank - ragged, max_size=rank - ragged))
        return fs.Leaf(dtype, (None, *[None] * ragged, *inner), kind="ragged", ragged_rank=ragged)
    rank = draw(st.integers(0, max_rank))
    dim = st.one_of(fixed, st.none()) if unknown_dims else fixed
    return fs.Leaf(dtype, (None, *draw(st.lists(dim, min_size=rank, max_size=rank))), kind=kind)


def structures(
    *,
    max_depth: int = 3,
    max_leaves: int = 12,
    min_leaves: int = 1,
    leaves: st.SearchStrategy[fs.Leaf] | None = None,
    containers: Sequence[str] = CONTAINERS,
    keys: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[fs.ElementSpec]:
    """Element specs: nested dicts, tuples, lists and namedtuples of batched leaves.

    Dicts come with their keys in any order (``keys`` defaults to `dict_keys`: ``/`` inside
    keys, digit-like strings, unicode). Every container holds at least one child. The
    batch dimension of every leaf is ``None``.

    Args:
        max_depth: the most container levels (0: the element is a single leaf).
        max_leaves: the most leaves.
        min_leaves: the fewest leaves.
        leaves: the leaf strategy (default: `leaves` with its defaults).
        containers: among ``"dict"``, ``"tuple"``, ``"list"``, ``"namedtuple"``.
        keys: the dict key strategy (default: `dict_keys`).

    Returns:
        A strategy of `fs.ElementSpec` values.

    Raises:
        InvalidArgument: for bounds out of order or range, or unknown containers.

    Examples:
        >>> from hypothesis import given, settings
        >>> from funcsplit.testing import strategies as fst
        >>> @settings(max_examples=10, database=None)
        ... @given(fst.structures(max_depth=2, max_leaves=4))
        ... def test(spec):
        ...     assert 1 <= len(spec.paths) <= 4
        ...     assert all(leaf.shape[0] is None for _, leaf in spec.leaves)
        >>> test()
    """
    _checks.check_int("max_depth", max_depth, minimum=0)
    _checks.check_int("min_leaves", min_leaves, minimum=1)
    _checks.check_int("max_leaves", max_leaves, minimum=1)
    _checks.check_order("min_leaves", min_leaves, "max_leaves", max_leaves)
    if max_depth == 0 and min_leaves > 1:
        raise InvalidArgument("max_depth=0 gives one leaf: min_leaves must be 1")
    containers = _checks.check_choices("containers", containers, CONTAINERS)
    leaf_strategy = leaves if leaves is not None else _default_leaves()
    _checks.check_strategy("leaves", leaf_strategy)
    key_strategy = _checks.check_strategy("keys", keys if keys is not None else dict_keys())
    return _structures(max_depth, min_leaves, max_leaves, leaf_strategy, containers, key_strategy)


@st.composite
def _structures(draw: Any, max_depth, min_leaves, max_leaves, leaf_st, containers, key_st):
    if max_depth == 0:
        return fs.ElementSpec(draw(leaf_st))
    count = draw(st.integers(min_leaves, max_leaves))
    return fs.ElementSpec(_container(draw, count, max_depth, leaf_st, containers, key_st))


def _node(draw: Any, count: int, depth: int, leaf_st, containers, key_st) -> Any:
    if count == 1 and (depth == 0 or draw(st.integers(0, 3)) > 0):
        return draw(leaf_st)
    return _container(draw, count, depth, leaf_st, containers, key_st)


def _container(draw: Any, count: int, depth: int, leaf_st, containers, key_st) -> Any:
    """A container of exactly ``count`` leaves, at most ``depth`` levels deep."""
    if depth == 1:
        sizes = [1] * count
    else:
        width = draw(st.integers(1, count))
        cuts = (
            sorted(
                draw(
                    st.lists(
                        st.integers(1, count - 1),
                        min_size=width - 1,
                        max_size=width - 1,
                        unique=True,
                    )
                )
            )
            if width > 1
            else []
        )
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, count])]
    kinds = [c for c in containers if c != "namedtuple" or len(sizes) in NAMEDTUPLES]
    kind = draw(st.sampled_from(kinds or ["tuple"]))
    children = [_node(draw, n, depth - 1, leaf_st, containers, key_st) for n in sizes]
    if kind == "dict":
        names = draw(st.lists(key_st, min_size=len(children), max_size=len(children), unique=True))
        return dict(zip(names, children))
    if kind == "list":
        return children
    if kind == "namedtuple":
        return NAMEDTUPLES[len(children)](*children)
    return tuple(children)
