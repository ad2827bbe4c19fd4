"""The one error type for user mistakes, and the problems it collects."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from collections.abc import Sequence

import attrs


@attrs.frozen
class Problem:
    """One mistake found in a spec, a dataset or a call.

    Attributes:
        where: what the mistake is about (``"losses[0] 'cat' target"``), or ``""``.
        path: the offending path drawn as ``a/b/c``, or ``None`` when no path applies.
        expected: what funcsplit expected there.
        found: what it found instead.
        fix: how to fix it.
        nearby: valid paths or names close to the offending one ("did you mean").
    """

    where: str
    path: str | None
    expected: str
    found: str
    fix: str = ""
    nearby: tuple[str, ...] = ()

    def render(self) -> str:
        """Returns the problem as a few indented lines."""
        head = self.where or "spec"
        if self.path is not None:
            head = f"{head} at path '{self.path}'"
        lines = [head, f"    expected: {self.expected}", f"    found:    {self.found}"]
        if self.nearby:
            lines.append("    did you mean: " + ", ".join(self.nearby) + "?")
        if self.fix:
            lines.append(f"    fix:      {self.fix}")
        return "\n".join(lines)


class SpecError(ValueError):
    """A spec, a dataset or a call does not fit: raised with every problem found.

    The message names each offending path as ``a/b/c``, says what was expected and what was
    found, lists nearby valid paths and says how to fix it. ``problems`` holds the same
    information as `Problem` values.

    Examples:
        >>> import funcsplit as fs
        >>> err = fs.SpecError.single("binding 'cls' target", "label", "a path", "nothing")
        >>> isinstance(err, ValueError), err.problems[0].path
        (True, 'label')
    """

    def __init__(self, problems: Sequence[Problem] | str):
        if isinstance(problems, str):
            problems = (Problem(where="", path=None, expected="", found=problems),)
        self.problems: tuple[Problem, ...] = tuple(problems)
        # Raised while AutoGraph converts a caller (Keras fit, a user's tf.function), the
        # error would come out as a StagingError; this attribute makes AutoGraph let it pass.
        self.ag_pass_through = True
        super().__init__(self._render())

    @classmethod
    def single(
        cls,
        where: str,
        path: str | None,
        expected: str,
        found: str,
        fix: str = "",
        nearby: Iterable[str] = (),
    ) -> SpecError:
        """Builds an error holding one `Problem`."""
        return cls((Problem(where, path, expected, found, fix, tuple(nearby)),))

    @property
    def paths(self) -> tuple[str, ...]:
        """The offending paths, in the order found."""
        return tuple(p.path for p in self.problems if p.path is not None)

    def _render(self) -> str:
        if len(self.problems) == 1 and not self.problems[0].expected:
            return self.problems[0].found
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        body = "\n".join(
            f"  {i}. " + p.render().replace("\n", "\n  ") for i, p in enumerate(self.problems, 1)
        )
        return f"funcsplit found {count} {noun}:\n{body}"


def raise_if_any(problems: Sequence[Problem]) -> None:
    """Raises one `SpecError` holding every problem, if there are any."""
    if problems:
        raise SpecError(problems)


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> tuple[str, ...]:
    """Returns up to ``n`` candidates close to ``word`` (for "did you mean")."""
    candidates = list(dict.fromkeys(str(c) for c in candidates))
    found = difflib.get_close_matches(word, candidates, n=n, cutoff=0.5)
    if not found:
        tail = word.rsplit("/", 1)[-1]
        found = [c for c in candidates if c.rsplit("/", 1)[-1] == tail][:n]
    return tuple(found)


def describe_callable(fn: object) -> str:
    """Names a user callable as ``name @ file:line`` (for errors about a user's loss)."""
    fn = inspect.unwrap(fn) if hasattr(fn, "__wrapped__") else fn
    target = fn if inspect.isroutine(fn) else type(fn).__call__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    try:
        code = inspect.unwrap(target).__code__
        return f"{name} @ {code.co_filename}:{code.co_firstlineno}"
    except (AttributeError, TypeError, ValueError):
        return name
