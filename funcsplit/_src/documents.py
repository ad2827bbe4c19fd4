"""Reading JSON documents that nobody trusts: safe parsing and closed, typed fields.

`parse` turns text into Python values without executing anything: no ``NaN`` or
``Infinity`` constants, no duplicate keys, numbers too long to be real kept as a marker
(`TooLong`) for the field reader to name, and nesting too deep reported as a `SpecError`
instead of a ``RecursionError``. The ``field_*`` helpers check one field of a closed schema
and name it (``losses[0].route.value``) when it is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from funcsplit._src.errors import SpecError
from funcsplit._src.errors import close_matches

WHERE = "SplitSpec.from_json"
MAX_DEPTH = 64
MAX_DIGITS = 40
LARGEST_INT = 2**64


class TooLong(str):
    """A number literal too long to be a real value (kept as text, named by the reader)."""

    def __repr__(self) -> str:
        return f"a number of {len(self)} characters"


class _Constant(str):
    """A ``NaN`` / ``Infinity`` literal, which JSON does not have."""

    def __repr__(self) -> str:
        return str(self)


def fail(field: str, expected: str, found: str, fix: str = "", nearby=()) -> SpecError:
    """A `SpecError` naming a field of the document."""
    return SpecError.single(f"{WHERE} field '{field}'", None, expected, found, fix, nearby)


def _int(text: str) -> int | TooLong:
    return TooLong(text) if len(text) > MAX_DIGITS else int(text)


def _float(text: str) -> float | TooLong:
    return TooLong(text) if len(text) > MAX_DIGITS + 10 else float(text)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise fail(key, "each key once per object", f"the key {key!r} twice")
        out[key] = value
    return out


def parse(text: object) -> Any:
    """Parses JSON text strictly (see the module docstring).

    Raises:
        SpecError: for text that is not JSON, or that JSON's grammar does not allow.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise SpecError.single(WHERE, None, "UTF-8 text", str(error)) from None
    if not isinstance(text, str):
        raise SpecError.single(
            WHERE,
            None,
            "JSON text (a str)",
            f"a {type(text).__name__}",
            "pass split.to_json()'s text; for a dict use SplitSpec.from_dict",
        )
    try:
        return json.loads(
            text,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_Constant,
            object_pairs_hook=_pairs,
        )
    except RecursionError:
        raise SpecError.single(
            WHERE, None, f"JSON nested at most {MAX_DEPTH} levels deep", "deeper nesting"
        ) from None
    except json.JSONDecodeError as error:
        raise SpecError.single(
            WHERE,
            None,
            "JSON text",
            f"{error.msg} at line {error.lineno} column {error.colno}",
            "write the file with split.to_json()",
        ) from None


def found(value: Any) -> str:
    """How a wrong value is named in an error (short)."""
    if isinstance(value, (TooLong, _Constant)):
        return repr(value)
    if isinstance(value, Mapping):
        return "an object with keys " + repr(sorted(map(str, value))[:8])
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_depth(depth: int, field: str) -> None:
    """Refuses structures nested deeper than `MAX_DEPTH` (and cyclic ones built in Python)."""
    if depth > MAX_DEPTH:
        raise fail(field, f"structures nested at most {MAX_DEPTH} levels deep", "deeper nesting")


def fields(
    value: Any, field: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Checks that ``value`` is an object with the required keys and no others."""
    if not isinstance(value, Mapping):
        raise fail(field, f"an object with keys {list(required + optional)}", found(value))
    allowed = required + optional
    unknown = [k for k in value if k not in allowed]
    if unknown:
        key = unknown[0]
        raise fail(
            f"{field}.{key}" if field else str(key),
            f"only the keys {list(allowed)}",
            f"the unknown key {key!r}",
            "remove it: the format is closed (a newer funcsplit may have written it)",
            close_matches(str(key), allowed),
        )
    missing = [k for k in required if k not in value]
    if missing:
        raise fail(field or "<document>", f"the keys {list(required)}", f"no {missing[0]!r}")
    return dict(value)


def string(value: Any, field: str, *, allow_empty: bool = False) -> str:
    """A JSON string."""
    if not isinstance(value, str) or isinstance(value, (TooLong, _Constant)):
        raise fail(field, "a string", found(value))
    if not allow_empty and not value:
        raise fail(field, "a non-empty string", "''")
    return value


def integer(value: Any, field: str, *, minimum: int | None = None) -> int:
    """A JSON integer (not a bool, not a float), within ``±2**64``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(field, "an integer", found(value))
    if abs(value) >= LARGEST_INT:
        raise fail(field, "an integer of at most 64 bits", found(value))
    if minimum is not None and value < minimum:
        raise fail(field, f"an integer >= {minimum}", found(value))
    return value


def number(value: Any, field: str) -> float | int:
    """A finite JSON number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(field, "a number", found(value))
    if isinstance(value, int):
        return integer(value, field)
    if not math.isfinite(value):
        raise fail(field, "a finite number", found(value), "JSON has no NaN or Infinity")
    return value


def boolean(value: Any, field: str) -> bool:
    """A JSON ``true`` / ``false``."""
    if not isinstance(value, bool):
        raise fail(field, "true or false", found(value))
    return value


def array(value: Any, field: str, *, max_items: int = 100_000) -> list[Any]:
    """A JSON array."""
    if not isinstance(value, list):
        raise fail(field, "an array", found(value))
    if len(value) > max_items:
        raise fail(field, f"at most {max_items} items", f"{len(value)} items")
    return value


def scalar(value: Any, field: str) -> bool | int | float | str:
    """A bool, a finite number or a string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return number(value, field)
    return string(value, field, allow_empty=True)
