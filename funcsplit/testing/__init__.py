"""Testing helpers for funcsplit users: hypothesis strategies (`funcsplit.testing.strategies`).

Needs hypothesis (``pip install funcsplit[test]``).

Examples:
    >>> from funcsplit.testing import strategies as fst
    >>> "split_specs" in fst.__all__
    True
"""

try:
    import hypothesis  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "funcsplit.testing needs hypothesis: pip install 'funcsplit[test]'"
    ) from error

from funcsplit.testing import strategies

__all__ = ["strategies"]
