"""Up-front argument checks for the public strategies (hypothesis's `InvalidArgument`)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import funcsplit as fs


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Checks that ``value`` is an int ``>= minimum`` (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise InvalidArgument(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_order(low_name: str, low: int, high_name: str, high: int) -> None:
    """Checks ``low <= high``."""
    if low > high:
        raise InvalidArgument(f"{low_name}={low} must be <= {high_name}={high}")


def check_magnitude(name: str, value: object, *, optional: bool) -> float | None:
    """Checks a positive finite bound (or None when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name} must be a positive finite number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_choices(name: str, values: object, allowed: Iterable[str]) -> tuple[str, ...]:
    """Checks a non-empty collection of names drawn from ``allowed``."""
    allowed = tuple(allowed)
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidArgument(f"{name} must be a collection of {allowed}, got {values!r}")
    values = tuple(values)
    if not values:
        raise InvalidArgument(f"{name} must not be empty (choose from {allowed})")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise InvalidArgument(f"{name}: unknown {unknown!r}; choose from {allowed}")
    return values


def check_strategy(name: str, value: object) -> st.SearchStrategy:
    """Checks that ``value`` is a hypothesis strategy."""
    if not isinstance(value, st.SearchStrategy):
        raise InvalidArgument(f"{name} must be a hypothesis strategy, got {value!r}")
    return value


def check_element_spec(name: str, value: object) -> fs.ElementSpec:
    """Checks that ``value`` is an `fs.ElementSpec`."""
    if not isinstance(value, fs.ElementSpec):
        raise InvalidArgument(
            f"{name} must be an fs.ElementSpec (e.g. from fs.ElementSpec.from_dataset(ds)), "
            f"got {type(value).__name__}"
        )
    return value


def batch_sizes(value: object) -> st.SearchStrategy[int]:
    """An int ``>= 0`` or a strategy of them, as a strategy."""
    if isinstance(value, st.SearchStrategy):
        return value
    return st.just(check_int("batch_size", value, minimum=0))
