"""A small structure layer over Python containers: walk, flatten with paths, get, map.

funcsplit addresses leaves by path and keeps specs out of `tf.nest` (which walks into attrs
classes). These helpers follow `tf.nest`'s order (dict keys sorted, sequences in order) and its
container types (dict, list, tuple, namedtuple), and treat everything else as a leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

import numpy as np

from funcsplit._src.errors import SpecError

Key = str | int


def python_scalar(value: object) -> object:
    """A NumPy scalar (``np.float32(1.0)``, ``np.int64(3)``, a 0-d array) as the Python value
    it holds; anything else unchanged. Specs accept NumPy scalars wherever they take numbers.

    Examples:
        >>> import numpy as np
        >>> python_scalar(np.int64(3)), python_scalar(np.array(0.5)), python_scalar("a")
        (3, 0.5, 'a')
    """
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    return value


def is_namedtuple(value: object) -> bool:
    """Whether ``value`` is a namedtuple instance (a tuple with ``_fields``)."""
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def is_container(value: object) -> bool:
    """Whether ``value`` is a container funcsplit walks into: dict, list, tuple, namedtuple."""
    return isinstance(value, (Mapping, list, tuple))


def children(node: Any, prefix: tuple[Key, ...] = ()) -> list[tuple[Key, Any]]:
    """Returns the ``(key, child)`` pairs of a container, in `tf.nest` order.

    Dict keys come sorted (as `tf.nest` sorts them), namedtuples by field name in field order,
    lists and tuples by index.

    Raises:
        SpecError: for a dict whose keys cannot be sorted (``{1: ..., "a": ...}``; `tf.nest`
            refuses it too), naming the dict's path (``prefix``).
    """
    if isinstance(node, Mapping):
        try:
            keys = sorted(node)
        except TypeError:
            raise SpecError.single(
                "structure",
                "/".join(map(str, prefix)) or None,
                "dict keys that sort together, as tf.nest sorts them (all str or all int)",
                f"keys {sorted(map(repr, node))} of types "
                f"{sorted({type(k).__name__ for k in node})}",
                "use keys of one type (e.g. str(key) for each)",
            ) from None
        return [(key, node[key]) for key in keys]
    if is_namedtuple(node):
        return list(zip(type(node)._fields, node))
    if isinstance(node, (list, tuple)):
        return list(enumerate(node))
    return []


def child(node: Any, key: Key) -> Any:
    """Returns ``node``'s child at ``key`` (a field name for namedtuples)."""
    if is_namedtuple(node) and isinstance(key, str):
        return getattr(node, key)
    return node[key]


def get(node: Any, keys: tuple[Key, ...]) -> Any:
    """Returns the value at ``keys`` inside ``node``."""
    for key in keys:
        node = child(node, key)
    return node


def iter_paths(
    node: Any, prefix: tuple[Key, ...] = (), *, leaves_only: bool = True
) -> Iterator[tuple[tuple[Key, ...], Any]]:
    """Yields ``(keys, value)`` for every leaf (and, if asked, every subtree) in order.

    An empty container counts as a leaf-less subtree: it yields nothing with ``leaves_only``.
    """
    if is_container(node):
        if not leaves_only and prefix:
            yield prefix, node
        for key, value in children(node, prefix):
            yield from iter_paths(value, (*prefix, key), leaves_only=leaves_only)
    else:
        yield prefix, node


def flatten_with_paths(node: Any) -> list[tuple[tuple[Key, ...], Any]]:
    """Returns ``[(keys, leaf), ...]`` in `tf.nest` order."""
    return list(iter_paths(node))


def map_leaves(fn: Callable[[Any], Any], node: Any, *, is_leaf: Callable[[Any], bool]) -> Any:
    """Maps ``fn`` over the leaves of ``node``, keeping container types and dict key order.

    Args:
        fn: applied to each leaf.
        node: a nested structure of dicts, lists, tuples and namedtuples.
        is_leaf: says which values are leaves (checked before containers).

    Returns:
        A structure of the same shape whose leaves are ``fn(leaf)``.
    """
    if is_leaf(node):
        return fn(node)
    if isinstance(node, Mapping):
        return type(node)((k, map_leaves(fn, v, is_leaf=is_leaf)) for k, v in node.items())
    if is_namedtuple(node):
        return type(node)(*(map_leaves(fn, v, is_leaf=is_leaf) for v in node))
    if isinstance(node, (list, tuple)):
        return type(node)(map_leaves(fn, v, is_leaf=is_leaf) for v in node)
    return fn(node)


def freeze(node: Any, is_leaf: Callable[[Any], bool] = lambda _: False) -> Any:
    """Returns a hashable value equal for structures equal up to dict key order."""
    if is_leaf(node):
        return node
    if isinstance(node, Mapping):
        return ("dict", frozenset((k, freeze(v, is_leaf)) for k, v in node.items()))
    if is_namedtuple(node):
        return (type(node), tuple(freeze(v, is_leaf) for v in node))
    if isinstance(node, (list, tuple)):
        return (type(node).__name__, tuple(freeze(v, is_leaf) for v in node))
    return node


def draw(node: Any, is_leaf: Callable[[Any], bool] = lambda _: False) -> str:
    """Draws a structure with its leaves as ``.`` (as dm-tree does in its errors)."""
    if is_leaf(node) or not is_container(node):
        return "."
    if isinstance(node, Mapping):
        inner = ", ".join(f"{k!r}: {draw(v, is_leaf)}" for k, v in children(node))
        return "{" + inner + "}"
    inner = ", ".join(draw(v, is_leaf) for v in node)
    if is_namedtuple(node):
        return f"{type(node).__name__}({inner})"
    if isinstance(node, list):
        return f"[{inner}]"
    return f"({inner}{',' if len(node) == 1 else ''})"
