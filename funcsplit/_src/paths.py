"""Paths into nested structures, and their resolution against a structure."""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from typing import Union

import attrs

from funcsplit._src import structure
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import close_matches

Key = str | int


def _check_key(key: object) -> Key:
    key = structure.python_scalar(key)
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise SpecError.single(
            "Path",
            None,
            "keys that are strings (dict keys, field names) or non-negative ints (indices)",
            f"{key!r} of type {type(key).__name__}",
            "build the path from str and int keys, e.g. Path(('label_dict', 'category_1'))",
        )
    if key == "" or (isinstance(key, int) and key < 0):
        raise SpecError.single(
            "Path",
            None,
            "non-empty string keys and non-negative indices",
            repr(key),
            "remove the empty key or negative index",
        )
    return key


def _to_keys(keys: object) -> tuple[Key, ...]:
    if isinstance(keys, Path):
        return keys.keys
    if isinstance(keys, str):
        raise SpecError.single(
            "Path",
            keys,
            "a tuple of keys, e.g. Path(('a', 'b'))",
            f"the string {keys!r}",
            f"use Path.parse({keys!r}) for the 'a/b' form, or Path(({keys!r},)) for one key",
        )
    try:
        items = tuple(keys)  # type: ignore[arg-type]
    except TypeError:
        raise SpecError.single(
            "Path", None, "a tuple of keys", repr(keys), "pass a tuple of str / int keys"
        ) from None
    return tuple(_check_key(k) for k in items)


@attrs.frozen(repr=False)
class Path:
    """An immutable, hashable sequence of keys into a nested structure.

    Keys are dict keys (which may contain ``/``), namedtuple field names, or sequence
    indices. ``tuple(path)`` gives the keys; ``str(path)`` draws them as ``a/b/c``.

    Args:
        keys: the keys, outermost first. ``Path(())`` is the root.

    Raises:
        SpecError: if a key is not a non-empty string or a non-negative int.

    Examples:
        >>> import funcsplit as fs
        >>> fs.Path.parse("label_dict/category_1")
        Path(('label_dict', 'category_1'))
        >>> tuple(fs.Path(("image/filename",)))
        ('image/filename',)
        >>> str(fs.Path(("a", 0)) / "b")
        'a/0/b'
    """

    keys: tuple[Key, ...] = attrs.field(converter=_to_keys)

    @classmethod
    def parse(cls, text: str) -> Path:
        """Parses the string form ``"a/b/0"`` into a path of string keys.

        The string form cannot tell a key that contains ``/`` from two keys; a spec resolves
        such strings against its structure (`ElementSpec.resolve`), and the tuple form is
        always exact.

        Raises:
            SpecError: for an empty string or an empty segment (``"a//b"``, ``"/a"``).
        """
        if not isinstance(text, str):
            raise SpecError.single("Path.parse", None, "a string like 'a/b/0'", repr(text))
        segments = text.split("/")
        if not text or any(not s for s in segments):
            raise SpecError.single(
                "Path.parse",
                text,
                "non-empty segments separated by '/', e.g. 'label_dict/category_1'",
                f"{text!r} has an empty segment",
                "remove the leading, trailing or doubled '/'",
            )
        return cls(tuple(segments))

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Key:
        return self.keys[index]

    def __truediv__(self, key: Key) -> Path:
        return Path((*self.keys, key))

    def __str__(self) -> str:
        return "/".join(str(k) for k in self.keys) if self.keys else "<root>"

    def __repr__(self) -> str:
        return f"Path({self.keys!r})"


PathLike = Union[str, Path, tuple]


def check_path_like(value: object, where: str) -> str | Path:
    """Converts a path-like (str, Path or tuple of keys) to a str or `Path`; checks its form."""
    if isinstance(value, str):
        Path.parse(value)
        return value
    if isinstance(value, (Path, tuple)):
        return Path(value)
    raise SpecError.single(
        where,
        None,
        "a path: a string 'a/b', a Path, or a tuple of keys",
        f"{value!r} of type {type(value).__name__}",
    )


def render(keys: tuple[Key, ...]) -> str:
    """Draws keys as ``a/b/c`` (the root as ``<root>``)."""
    return str(Path(keys))


def _index(node: Any, key: Key) -> Key | None:
    """The canonical key of ``node`` named by ``key``, or None if there is none."""
    if isinstance(node, Mapping):
        if key in node:
            return key
        if isinstance(key, int) and str(key) in node:
            return str(key)
        return None
    if isinstance(node, (list, tuple)):
        if structure.is_namedtuple(node) and isinstance(key, str) and key in node._fields:
            return key
        index = int(key) if isinstance(key, str) and key.isdigit() else key
        if isinstance(index, int) and 0 <= index < len(node):
            return type(node)._fields[index] if structure.is_namedtuple(node) else index
    return None


def _string_matches(node: Any, rest: str, prefix: tuple[Key, ...]) -> list[tuple[Key, ...]]:
    """Every way ``rest`` (an 'a/b' string) names a node below ``node``."""
    found = []
    if isinstance(node, Mapping):
        # Fast path (a dict of many keys, e.g. one per binding): the only keys that can match
        # are ``rest`` and its prefixes ending before a "/". When exactly one of them is a str
        # key, no other key can match: a dict that mixes str and other keys is not a valid
        # structure (tf.nest sorts dict keys). Otherwise (non-str keys, several candidates, no
        # match) every key is compared, as below.
        cuts = [i for i, c in enumerate(rest) if c == "/"]
        hits = [text for text in (*(rest[:i] for i in cuts), rest) if text in node]
        if len(hits) == 1 and isinstance(next(iter(node), None), str):
            key = hits[0]
            if key == rest:
                return [(*prefix, key)]
            return _string_matches(node[key], rest[len(key) + 1 :], (*prefix, key))
        for key in node:
            text = str(key)
            if rest == text:
                found.append((*prefix, key))
            elif rest.startswith(text + "/"):
                found += _string_matches(node[key], rest[len(text) + 1 :], (*prefix, key))
    elif isinstance(node, (list, tuple)):
        head, _, tail = rest.partition("/")
        key = _index(node, head)
        if key is not None:
            sub = structure.child(node, key)
            found += [(*prefix, key)] if not tail else _string_matches(sub, tail, (*prefix, key))
    return found


def all_paths(node: Any) -> list[str]:
    """Every subtree and leaf path of ``node``, drawn as strings (for "did you mean")."""
    return [render(keys) for keys, _ in structure.iter_paths(node, leaves_only=False) if keys]


def resolve(
    node: Any, path: str | Path, where: str, *, predictions: bool = False
) -> tuple[Key, ...]:
    """Resolves a path against a structure to its canonical keys.

    Args:
        node: the structure (leaves are anything that is not a container).
        path: a string ``"a/b"`` (resolved, keys may contain ``/``) or a `Path` (exact).
        where: what the path is for, used in error messages.
        predictions: ``node`` is a model's predictions (the fix then lists their paths).

    Returns:
        The canonical keys: dict keys as in the structure, sequence indices as ints,
        namedtuple fields by name.

    Raises:
        SpecError: if the path names nothing, or (string form) names several nodes.
    """
    raise_problem = _problem(node, path, where, predictions=predictions)
    if raise_problem is not None:
        raise SpecError((raise_problem,))
    return _resolved(node, path)


def _resolved(node: Any, path: str | Path) -> tuple[Key, ...]:
    if isinstance(path, str):
        return _string_matches(node, path, ())[0]
    keys: list[Key] = []
    for key in path:
        canonical = _index(node, key)
        keys.append(canonical)
        node = structure.child(node, canonical)
    return tuple(keys)


def _problem(
    node: Any, path: str | Path, where: str, *, predictions: bool = False
) -> Problem | None:
    """The problem with resolving ``path`` in ``node``, or None if it resolves."""
    text = path if isinstance(path, str) else str(path)
    if isinstance(path, str):
        matches = _string_matches(node, path, ())
        if len(matches) == 1:
            return None
        if len(matches) > 1:
            return Problem(
                where,
                text,
                "a string path that names one node",
                "it names several: " + ", ".join(repr(m) for m in matches),
                "use the tuple form, e.g. " + repr(matches[0]),
            )
    else:
        current, walked = node, []
        for key in path:
            canonical = _index(current, key)
            if canonical is None:
                break
            walked.append(canonical)
            current = structure.child(current, canonical)
        else:
            return None
    candidates = all_paths(node)
    if not predictions:
        fix = "use one of the structure's paths (ElementSpec.paths lists the leaves)"
    elif candidates:
        fix = "use one of the model's output paths: " + ", ".join(candidates[:12])
        fix += ", ..." if len(candidates) > 12 else ""
    else:
        fix = "the model returns one tensor: use output=None (the whole predictions)"
    return Problem(
        where,
        text,
        "a path that exists in the structure " + structure.draw(node),
        "no such path",
        fix,
        close_matches(text, candidates),
    )


def problem(node: Any, path: str | Path, where: str) -> Problem | None:
    """Returns the `Problem` with resolving ``path`` in ``node``, or None if it resolves."""
    return _problem(node, path, where)
