"""A `SplitSpec` as data: the closed, versioned ``funcsplit.split/1`` document.

Writing turns every part of a split into JSON values: leaves, structures (dicts whose keys
may contain ``/`` or be ints, lists, tuples, namedtuples), paths (a string is a string path,
an array the keys of a `Path`), registry losses with their options, routes and the rest.
User callables and Keras ``Loss`` objects become named holes, ``{"callable": "my_dice"}``.

Reading executes no code: it never imports, evaluates or unpickles anything named in the
text. Holes are filled from the caller's ``losses={"my_dice": fn}``, then from the callables
registered in code (`funcsplit.losses.register`), then, for a hole that carries a Keras
description, through a loader the TensorFlow lowering installs (Keras's registry, safe
mode). Every field is checked, and a wrong one is a `SpecError` naming it.

This module knows the schema, not the classes: ``bindings.py`` hands it a split's parts and
builds `LossBinding`, `Route` and `SplitSpec` from what it reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from funcsplit._src import registry
from funcsplit._src import structure
from funcsplit._src.errors import SpecError
from funcsplit._src.paths import Path
from funcsplit._src.spec import Leaf

FORMAT = "funcsplit.split/1"

# How Keras objects are described and loaded: installed by ``tf_saving.py`` (the core
# never imports Keras). ``describe(fn)`` gives a JSON description or None; ``load(desc,
# field)`` the object, or None when Keras's registry does not know it.
_keras_describe: Callable[[Any], dict | None] | None = None
_keras_load: Callable[[Mapping, str], Any] | None = None


def install_keras_codec(
    describe: Callable[[Any], dict | None], load: Callable[[Mapping, str], Any]
) -> None:
    """Sets how Keras ``Loss`` objects are described in holes and loaded from them."""
    global _keras_describe, _keras_load
    _keras_describe, _keras_load = describe, load


def keras_loader() -> Callable[[Mapping, str], Any] | None:
    """The installed Keras loader, or None (then holes with a Keras description need filling)."""
    return _keras_load


# ---------------------------------------------------------------------------------- writing


def _unencodable(where: str, what: str, value: object) -> SpecError:
    return SpecError.single(
        f"SplitSpec.to_json {where}",
        None,
        what,
        f"{value!r} of type {type(value).__name__}",
        "use str / int keys, paths and JSON scalars in specs that are saved",
    )


def _key(key: object, where: str) -> str | int:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise _unencodable(where, "dict keys that are str or int", key)
    return key


def encode_structure(node: Any, leaf: Callable[[Any], Any], is_leaf, where: str) -> Any:
    """A structure as JSON: ``{"dict": ...}``, ``{"list": [...]}``, ``{"tuple": [...]}``,
    ``{"namedtuple": name, "fields": [...], "items": [...]}``, leaves by ``leaf``."""
    if is_leaf(node):
        return leaf(node)
    enc = lambda value: encode_structure(value, leaf, is_leaf, where)
    if isinstance(node, Mapping):
        keys = [_key(k, where) for k in node]
        if all(isinstance(k, str) for k in keys):
            return {"dict": {k: enc(node[k]) for k in sorted(keys)}}
        ordered = sorted(keys, key=lambda k: (isinstance(k, str), k))
        return {"dict": [[k, enc(node[k])] for k in ordered]}
    if structure.is_namedtuple(node):
        return {
            "namedtuple": type(node).__name__,
            "fields": list(type(node)._fields),
            "items": [enc(v) for v in node],
        }
    if isinstance(node, (list, tuple)):
        return {"list" if isinstance(node, list) else "tuple": [enc(v) for v in node]}
    raise _unencodable(where, "dicts, lists, tuples and namedtuples", node)


def encode_leaf(leaf: Leaf) -> dict:
    """``{"leaf": {"dtype", "shape", "kind"[, "ragged_rank"]}}``."""
    out: dict[str, Any] = {"dtype": leaf.dtype.name, "shape": list(leaf.shape), "kind": leaf.kind}
    if leaf.kind == "ragged":
        out["ragged_rank"] = leaf.ragged_rank
    return {"leaf": out}


def encode_path(path: str | Path | None) -> Any:
    """A string path as a string, a `Path` as the array of its keys, None as null."""
    if path is None or isinstance(path, str):
        return path
    return list(path.keys)


def _hole_base(fn: Any) -> str:
    name = registry.registered_name(fn)
    if name is not None:
        return name
    return getattr(fn, "__name__", None) or type(fn).__name__


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # a user object's __eq__ may raise anything
        return False


def callables(losses: tuple) -> dict[str, Any]:
    """The hole name of every user callable (and Keras ``Loss``) of the bindings, in order.

    A callable registered with `funcsplit.losses.register` keeps its registered name; others
    are named by ``__name__`` (or their class name), with ``_2``, ``_3``, ... when different
    callables share one.
    """
    out: dict[str, Any] = {}
    for binding in losses:
        fn = binding.fn.fn if isinstance(binding.fn, registry.RowWise) else binding.fn
        if isinstance(fn, (str, registry.BuiltinLoss)):
            continue
        if any(_same(fn, known) for known in out.values()):
            continue
        base = name = _hole_base(fn)
        count = 1
        while name in out:
            count += 1
            name = f"{base}_{count}"
        out[name] = fn
    return out


def _encode_fn(fn: Any, holes: dict[str, Any]) -> Any:
    if isinstance(fn, str):
        return fn
    if isinstance(fn, registry.BuiltinLoss):
        return {"registry": fn.name, "options": {k: v for k, v in fn.options}}
    if isinstance(fn, registry.RowWise):
        return {"row_wise": _encode_fn(fn.fn, holes)}
    name = next(n for n, known in holes.items() if _same(fn, known))
    hole: dict[str, Any] = {"callable": name}
    described = _keras_describe(fn) if _keras_describe is not None else None
    if described is not None:
        hole["keras"] = described
    return hole


def _encode_route(route: Any, where: str) -> dict | None:
    if route is None:
        return None
    value = route.value
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise _unencodable(where, "route values that are bool, int, float or str", v)
    return {
        "path": encode_path(route.path),
        "op": route.op,
        "value": list(value) if isinstance(value, tuple) else value,
    }


def _encode_binding(binding: Any, holes: dict[str, Any]) -> dict:
    where = f"binding {binding.name!r}"
    return {
        "name": binding.name,
        "fn": _encode_fn(binding.fn, holes),
        "target": encode_path(binding.target),
        "output": encode_path(binding.output),
        "weight": binding.weight,
        "sample_weight": encode_path(binding.sample_weight),
        "route": _encode_route(binding.route, where),
        "group": binding.group,
        "class_weight": None
        if binding.class_weight is None
        else [[c, w] for c, w in binding.class_weight],
        "reduction": binding.reduction,
    }


def to_dict(split: Any) -> dict:
    """The document of a split (JSON values only, dicts in canonical key order)."""
    holes = callables(split.losses)
    return {
        "format": FORMAT,
        "element": encode_structure(
            split.element.structure, encode_leaf, lambda v: isinstance(v, Leaf), "element"
        ),
        "inputs": encode_structure(
            split.inputs, encode_path, lambda v: isinstance(v, (str, Path)), "inputs"
        ),
        "losses": [_encode_binding(b, holes) for b in split.losses],
        "drop": [encode_path(p) for p in split.drop],
        "strict": split.strict,
    }


def _dumps(value: Any, indent: int, level: int, width: int = 88) -> str:
    """JSON with small objects and arrays on one line, larger ones one item a line."""
    flat = json.dumps(value, allow_nan=False, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or len(flat) + indent * level <= width or not value:
        return flat
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if isinstance(value, dict):
        items = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dumps(v, indent, level + 1)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    items = [f"{inner}{_dumps(v, indent, level + 1)}" for v in value]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


def to_json(document: dict, *, indent: int | None = 2) -> str:
    """JSON text of a document (no NaN, keys as written); ``indent=None``: one line."""
    if indent is None:
        return json.dumps(document, allow_nan=False, ensure_ascii=False)
    return _dumps(document, indent, 0)


def fingerprint(document: dict) -> str:
    """A short stable hash (16 hex digits) of the canonical JSON of a document."""
    canonical = json.dumps(
        document, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]
