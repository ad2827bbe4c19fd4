"""Reading a ``funcsplit.split/1`` document back into a split's parts, executing no code.

Every field is checked against the closed schema of ``serialization.py`` (types, ranges,
known keys, depth) and a wrong one is a `SpecError` naming it. Named holes are filled from
the caller's mapping, then from `funcsplit.losses.register`, then (for holes that carry a
Keras description) through the loader the TensorFlow lowering installs.
"""

from __future__ import annotations

import collections
import keyword
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

import tensorflow as tf

from funcsplit._src import documents as doc
from funcsplit._src import paths
from funcsplit._src import registry
from funcsplit._src import serialization
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.paths import Path
from funcsplit._src.spec import ElementSpec
from funcsplit._src.spec import Leaf

_KINDS = ("dense", "ragged", "sparse")
_OPS = ("truthy", "equals", "not_equal", "one_of")
_TOP = ("format", "element", "inputs")
_TOP_OPTIONAL = ("losses", "drop", "strict")
_BINDING = ("name", "fn", "target")
_BINDING_OPTIONAL = (
    "output",
    "weight",
    "sample_weight",
    "route",
    "group",
    "class_weight",
    "reduction",
)

# Namedtuple types made for documents whose types the caller did not pass: one per
# (name, fields), so that two loads of one document give equal specs.
_MADE: dict[tuple[str, tuple[str, ...]], type] = {}


class Parts(NamedTuple):
    """What a document holds, ready for the classes: ``bindings`` are keyword dicts for
    `LossBinding`, their ``route`` a keyword dict for `Route` (or None)."""

    element: ElementSpec
    inputs: Any
    bindings: list[dict[str, Any]]
    drop: tuple
    strict: bool


def _identifier(value: Any, field: str) -> str:
    name = doc.string(value, field)
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise doc.fail(field, "a Python identifier not starting with '_'", repr(name))
    return name


def _namedtuple_type(name: str, field_names: tuple[str, ...], types: Mapping, field: str):
    given = types.get(name)
    if given is not None:
        if tuple(getattr(given, "_fields", ())) != field_names:
            raise doc.fail(
                field,
                f"the fields of the namedtuple {name!r} passed in namedtuples=",
                f"{list(field_names)} vs {list(getattr(given, '_fields', ()))}",
            )
        return given
    key = (name, field_names)
    if key not in _MADE:
        _MADE[key] = collections.namedtuple(name, field_names)
    return _MADE[key]


def _container(value: Any, field: str, leaf, depth: int, types: Mapping) -> Any:
    doc.check_depth(depth, field)
    tags = [t for t in ("dict", "list", "tuple", "namedtuple") if t in value]
    if len(tags) != 1:
        raise doc.fail(
            field, "one of the keys 'dict', 'list', 'tuple', 'namedtuple'", doc.found(value)
        )
    tag = tags[0]
    sub = lambda v, f: decode_structure(v, f, leaf, depth + 1, types)
    if tag == "namedtuple":
        parts = doc.fields(value, field, ("namedtuple", "fields", "items"))
        name = _identifier(parts["namedtuple"], f"{field}.namedtuple")
        names = doc.array(parts["fields"], f"{field}.fields", max_items=255)
        names = tuple(_identifier(n, f"{field}.fields[{i}]") for i, n in enumerate(names))
        if len(set(names)) != len(names):
            raise doc.fail(f"{field}.fields", "distinct field names", repr(list(names)))
        items = doc.array(parts["items"], f"{field}.items")
        if len(items) != len(names):
            raise doc.fail(f"{field}.items", f"{len(names)} items", f"{len(items)}")
        cls = _namedtuple_type(name, names, types, f"{field}.namedtuple")
        return cls(*(sub(v, f"{field}.items[{i}]") for i, v in enumerate(items)))
    doc.fields(value, field, (tag,))
    if tag in ("list", "tuple"):
        items = doc.array(value[tag], f"{field}.{tag}")
        out = [sub(v, f"{field}.{tag}[{i}]") for i, v in enumerate(items)]
        return out if tag == "list" else tuple(out)
    body = value["dict"]
    if isinstance(body, Mapping):
        return {k: sub(v, f"{field}.dict[{k!r}]") for k, v in body.items()}
    pairs = doc.array(body, f"{field}.dict")
    out: dict = {}
    for i, pair in enumerate(pairs):
        where = f"{field}.dict[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise doc.fail(where, "a [key, value] pair", doc.found(pair))
        key = doc.integer(pair[0], f"{where}[0]")  # str keys are the object form
        if key in out:
            raise doc.fail(f"{where}[0]", "each dict key once", f"{key!r} twice")
        out[key] = sub(pair[1], f"{where}[1]")
    return out


def decode_structure(value: Any, field: str, leaf, depth: int, types: Mapping) -> Any:
    """A structure from its JSON form; ``leaf(value, field)`` reads a leaf or returns None
    when ``value`` is a container."""
    found = leaf(value, field)
    if found is not None:
        return found
    if not isinstance(value, Mapping):
        raise doc.fail(field, "a leaf or a container object", doc.found(value))
    return _container(value, field, leaf, depth, types)


def _dtype(value: Any, field: str) -> tf.DType:
    name = doc.string(value, field)
    try:
        dtype = tf.dtypes.as_dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name != name:
        raise doc.fail(field, "a TensorFlow dtype name such as 'float32'", repr(name))
    return dtype


def _leaf(value: Any, field: str) -> Leaf | None:
    if not isinstance(value, Mapping) or "leaf" not in value:
        return None
    doc.fields(value, field, ("leaf",))
    field = f"{field}.leaf"
    parts = doc.fields(value["leaf"], field, ("dtype", "shape"), ("kind", "ragged_rank"))
    dtype = _dtype(parts["dtype"], f"{field}.dtype")
    dims = doc.array(parts["shape"], f"{field}.shape", max_items=64)
    shape = tuple(
        None if d is None else doc.integer(d, f"{field}.shape[{i}]", minimum=0)
        for i, d in enumerate(dims)
    )
    if any(d is not None and d >= 2**62 for d in shape):
        raise doc.fail(f"{field}.shape", "dimensions below 2**62", repr(list(shape)))
    kind = doc.string(parts.get("kind", "dense"), f"{field}.kind")
    if kind not in _KINDS:
        raise doc.fail(f"{field}.kind", f"one of {list(_KINDS)}", repr(kind))
    rank = parts.get("ragged_rank")
    rank = None if rank is None else doc.integer(rank, f"{field}.ragged_rank", minimum=0)
    try:
        return Leaf(dtype, shape, kind, rank)
    except SpecError as error:
        raise doc.fail(field, error.problems[0].expected, error.problems[0].found) from None


def decode_path(value: Any, field: str) -> str | Path:
    """A path: a JSON string (string form) or an array of str / int keys (a `Path`)."""
    if isinstance(value, list):
        keys = doc.array(value, field, max_items=256)
        out = []
        for i, key in enumerate(keys):
            if isinstance(key, str) and not isinstance(key, doc.TooLong):
                out.append(doc.string(key, f"{field}[{i}]"))
            else:
                out.append(doc.integer(key, f"{field}[{i}]", minimum=0))
        return Path(tuple(out))
    text = doc.string(value, field)
    try:
        return paths.check_path_like(text, field)
    except SpecError as error:
        raise doc.fail(field, error.problems[0].expected, error.problems[0].found) from None


def _optional_path(value: Any, field: str) -> str | Path | None:
    return None if value is None else decode_path(value, field)


def _input_leaf(value: Any, field: str) -> str | Path | None:
    if isinstance(value, (str, list)):
        return decode_path(value, field)
    return None


def _options(name: str, value: Any, field: str) -> tuple[tuple[str, Any], ...]:
    options = doc.fields(value, field, (), tuple(registry.RECORDS[name].defaults))
    out = []
    for key, option in sorted(options.items()):
        default = registry.RECORDS[name].defaults[key]
        where = f"{field}.{key}"
        if isinstance(default, bool):
            option = doc.boolean(option, where)
        elif isinstance(default, float):
            option = doc.number(option, where)
        elif option is not None:  # int options (pad_id) may be None
            option = doc.integer(option, where)
        out.append((key, option))
    return tuple(out)


def _fill(name: str, keras: Mapping | None, field: str, binding: str, losses: Mapping) -> Any:
    """The callable a hole names: the caller's, the registered one, or Keras's (or a problem)."""
    if name in losses:
        fn = losses[name]
        if isinstance(fn, (str, registry.BuiltinLoss)) or not callable(fn):
            raise SpecError.single(
                "SplitSpec.from_json losses=",
                None,
                f"a callable for the hole {name!r}",
                f"{fn!r} of type {type(fn).__name__}",
            )
        return fn
    fn = registry.registered(name)
    if fn is None and keras is not None and serialization.keras_loader() is not None:
        fn = serialization.keras_loader()(keras, f"{field}.keras")
    if fn is None:
        how = " (or register the class with keras.saving.register_keras_serializable)"
        raise SpecError.single(
            f"{doc.WHERE} binding {binding!r}",
            None,
            f"the callable {name!r} named in field '{field}'",
            "no such callable: loading never imports or runs code named in the text",
            f"pass from_json(text, losses={{{name!r}: fn}}) or call "
            f"fs.losses.register({name!r}, fn) first" + (how if keras is not None else ""),
        )
    return fn


def _fn(value: Any, field: str, binding: str, losses: Mapping) -> Any:
    if isinstance(value, str) and not isinstance(value, doc.TooLong):
        if value not in registry.RECORDS:
            raise doc.fail(field, "a registry loss name: " + ", ".join(registry.NAMES), repr(value))
        return value
    if isinstance(value, Mapping) and "registry" in value:
        parts = doc.fields(value, field, ("registry",), ("options",))
        name = doc.string(parts["registry"], f"{field}.registry")
        if name not in registry.RECORDS:
            raise doc.fail(f"{field}.registry", "a registry loss name", repr(name))
        options = _options(name, parts.get("options", {}), f"{field}.options")
        return registry.BuiltinLoss(name, options)
    if isinstance(value, Mapping) and "row_wise" in value:
        doc.fields(value, field, ("row_wise",))
        inner = value["row_wise"]
        if not isinstance(inner, Mapping) or "callable" not in inner:
            raise doc.fail(f"{field}.row_wise", "a callable hole", doc.found(inner))
        return registry.RowWise(_fn(inner, f"{field}.row_wise", binding, losses))
    if isinstance(value, Mapping) and "callable" in value:
        parts = doc.fields(value, field, ("callable",), ("keras",))
        name = doc.string(parts["callable"], f"{field}.callable")
        keras = parts.get("keras")
        if keras is not None and not isinstance(keras, Mapping):
            raise doc.fail(f"{field}.keras", "an object (Keras's description)", doc.found(keras))
        return _fill(name, keras, field, binding, losses)
    raise doc.fail(
        field,
        "a registry name, or an object with 'registry', 'row_wise' or 'callable'",
        doc.found(value),
    )


def _route(value: Any, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    parts = doc.fields(value, field, ("path", "op"), ("value",))
    path = decode_path(parts["path"], f"{field}.path")
    op = doc.string(parts["op"], f"{field}.op")
    if op not in _OPS:
        raise doc.fail(f"{field}.op", f"one of {list(_OPS)}", repr(op))
    raw = parts.get("value")
    where = f"{field}.value"
    if op == "truthy":
        if raw is not None:
            raise doc.fail(where, "null (a truthy route has no value)", doc.found(raw))
        route_value = None
    elif op == "one_of":
        items = doc.array(raw, where, max_items=10_000)
        if not items:
            raise doc.fail(where, "at least one value", "[]")
        route_value = tuple(doc.scalar(v, f"{where}[{i}]") for i, v in enumerate(items))
    else:
        route_value = doc.scalar(raw, where)
    return {"path": path, "op": op, "value": route_value}


def _class_weight(value: Any, field: str) -> tuple | None:
    if value is None:
        return None
    out = []
    for i, pair in enumerate(doc.array(value, field)):
        where = f"{field}[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise doc.fail(where, "a [class_id, weight] pair", doc.found(pair))
        out.append((doc.integer(pair[0], f"{where}[0]", minimum=0), doc.number(pair[1], where)))
    return tuple(out)


def _binding(value: Any, field: str, losses: Mapping) -> dict[str, Any]:
    parts = doc.fields(value, field, _BINDING, _BINDING_OPTIONAL)
    name = doc.string(parts["name"], f"{field}.name")
    group = parts.get("group")
    reduction = doc.string(parts.get("reduction", "weighted_mean"), f"{field}.reduction")
    return {
        "name": name,
        "fn": _fn(parts["fn"], f"{field}.fn", name, losses),
        "target": decode_path(parts["target"], f"{field}.target"),
        "output": _optional_path(parts.get("output"), f"{field}.output"),
        "weight": float(doc.number(parts.get("weight", 1.0), f"{field}.weight")),
        "sample_weight": _optional_path(parts.get("sample_weight"), f"{field}.sample_weight"),
        "route": _route(parts.get("route"), f"{field}.route"),
        "group": None if group is None else doc.string(group, f"{field}.group"),
        "class_weight": _class_weight(parts.get("class_weight"), f"{field}.class_weight"),
        "reduction": reduction,
    }


def _check_format(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise doc.fail("<document>", "a JSON object", doc.found(value))
    if "format" not in value:
        raise doc.fail(
            "format",
            f"'format': {serialization.FORMAT!r}",
            "no 'format' key",
            "write the document with split.to_json()",
        )
    written = value["format"]
    if written != serialization.FORMAT:
        newer = isinstance(written, str) and written.startswith("funcsplit.split/")
        raise doc.fail(
            "format",
            repr(serialization.FORMAT),
            doc.found(written),
            "a newer funcsplit wrote it: upgrade funcsplit" if newer else "not a funcsplit split",
        )


def from_dict(
    value: Any, *, losses: Mapping | None = None, namedtuples: Mapping | None = None
) -> Parts:
    """Reads a document into `Parts`, collecting the problems of every binding.

    Raises:
        SpecError: naming each wrong field, and each hole no one filled.
    """
    losses = {} if losses is None else losses
    types = {} if namedtuples is None else namedtuples
    if not isinstance(losses, Mapping) or not isinstance(types, Mapping):
        raise SpecError.single(
            doc.WHERE, None, "losses= and namedtuples= as dicts keyed by name", "something else"
        )
    _check_format(value)
    parts = doc.fields(value, "", _TOP, _TOP_OPTIONAL)
    problems: list[Problem] = []

    def attempt(read, *args):
        try:
            return read(*args)
        except SpecError as error:
            problems.extend(error.problems)
            return None

    structure = attempt(decode_structure, parts["element"], "element", _leaf, 0, types)
    element = attempt(ElementSpec, structure) if structure is not None else None
    inputs = attempt(decode_structure, parts["inputs"], "inputs", _input_leaf, 0, types)
    items = attempt(doc.array, parts.get("losses", []), "losses") or []
    bindings = [attempt(_binding, b, f"losses[{i}]", losses) for i, b in enumerate(items)]
    drop = attempt(doc.array, parts.get("drop", []), "drop") or []
    drop = tuple(attempt(decode_path, p, f"drop[{i}]") for i, p in enumerate(drop))
    strict = attempt(doc.boolean, parts.get("strict", True), "strict")
    raise_if_any(problems)
    return Parts(element, inputs, bindings, drop, strict)
