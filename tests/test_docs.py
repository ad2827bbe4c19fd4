"""The documentation site stays true to the code.

1. Every name in a public ``__all__`` has an entry (``::: module.name``) in the API reference.
2. The ``python`` blocks of the narrative pages run (page by page, blocks in order, sharing one
   namespace), and a ``text`` block marked ``<!-- expected-output -->`` equals what the
   python block before it printed. A block preceded by ``<!-- skip -->`` is shown, not run.
   ``UPDATE_DOC_OUTPUTS=1 pytest tests/test_docs.py`` rewrites the expected outputs instead.
3. The tutorial's line counts ("N lines") equal the code lines of the block they caption.
4. ``mkdocs build --strict`` passes (skipped when mkdocs is not installed).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import os
import pathlib
import re
import subprocess
import sys
import tokenize

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"

PUBLIC_MODULES = (
    "funcsplit",
    "funcsplit.losses",
    "funcsplit.keras",
    "funcsplit.tfds",
    "funcsplit.distribute",
    "funcsplit.jax",
    "funcsplit.jax.weighting",
    "funcsplit.testing",
    "funcsplit.testing.strategies",
    "funcsplit.weighting",
)
# Pages written by other engineers, run by their own tests (if any).
NOT_OURS = {"howto/testing.md", "scaling.md"}
# Optional dependencies (extras): a page that needs a missing one is skipped, not failed.
OPTIONAL = {"jax", "optax", "tensorflow_datasets", "hypothesis", "mkdocs"}

SKIP = "<!-- skip -->"
EXPECTED = "<!-- expected-output -->"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,})(?P<lang>[\w+-]*)[^`]*$")
SNIPPET = re.compile(r"""^\s*--8<--\s+["'](?P<path>[^"']+)["']\s*$""")


# ----------------------------------------------------------------------------- parsing


class Block:
    """A fenced block of a page: language, code, first line, and its markers."""

    def __init__(self, lang: str, code: str, line: int, end: int, marker: str, caption: str):
        self.lang, self.code, self.marker, self.caption = lang, code, marker, caption
        self.line, self.end = line, end  # the opening and closing fence lines (1-based)


def _expand_snippets(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        match = SNIPPET.match(line)
        if match:
            out += (ROOT / match["path"]).read_text().splitlines()
        else:
            out.append(line)
    return out


def blocks(page: pathlib.Path) -> list[Block]:
    """The fenced blocks of a markdown page, with snippet includes expanded."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match["indent"], match["fence"], match["lang"]
        previous = [line.strip() for line in lines[:i] if line.strip()]
        marker = previous[-1] if previous and previous[-1].startswith("<!--") else ""
        captions = [line for line in previous if not line.startswith("<!--")]
        caption = captions[-1] if captions else ""
        body, j = [], i + 1
        while j < len(lines) and lines[j].strip() != fence:
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        code = "\n".join(_expand_snippets(body)) + "\n"
        found.append(Block(lang, code, i + 1, j + 1, marker, caption))
        i = j + 1
    return found


def narrative_pages() -> list[pathlib.Path]:
    pages = sorted(DOCS.glob("*.md")) + sorted((DOCS / "howto").glob("*.md"))
    return [p for p in pages if p.relative_to(DOCS).as_posix() not in NOT_OURS]


# ----------------------------------------------------------------------------- 1. API coverage


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _documented() -> set[str]:
    names = set()
    for page in API.glob("*.md"):
        names |= set(re.findall(r"^:::\s+([\w.]+)\s*$", page.read_text(), flags=re.MULTILINE))
    return names


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_name_is_in_the_api_reference(module):
    if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None or not _importable(module):
        pytest.skip(f"{module} does not import here")
    documented = _documented()
    public = importlib.import_module(module).__all__
    missing = [f"{module}.{name}" for name in public if f"{module}.{name}" not in documented]
    assert not missing, f"add '::: NAME' entries to docs/api/ for: {missing}"


# ----------------------------------------------------------------------------- 2. code blocks


@pytest.mark.parametrize("page", narrative_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pages may write files (plots, checkpoints)
    namespace = {"__name__": f"docs.{page.stem}"}
    printed = None
    updates = {}
    for block in blocks(page):
        where = f"{page.relative_to(ROOT)}:{block.line}"
        if block.lang == "python" and block.marker != SKIP:
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    exec(compile(block.code, where, "exec"), namespace)
            except ModuleNotFoundError as error:
                if (error.name or "").split(".")[0] not in OPTIONAL:
                    raise
                pytest.skip(f"{where} needs {error.name}, not installed")
            printed = out.getvalue()
        elif block.marker == EXPECTED:
            assert printed is not None, f"{where}: expected output with no python block before"
            if os.environ.get("UPDATE_DOC_OUTPUTS"):
                updates[block] = _normalise(printed)
                continue
            assert _normalise(printed) == _normalise(block.code), (
                f"{where}: the page shows output that the code before it does not print.\n"
                f"printed:\n{printed}"
            )
    if updates:
        _rewrite_outputs(page, updates)


def _rewrite_outputs(page: pathlib.Path, updates: dict) -> None:
    lines = page.read_text().splitlines()
    for block, text in sorted(updates.items(), key=lambda item: -item[0].line):
        indent = re.match(r"\s*", lines[block.line - 1])[0]
        lines[block.line : block.end - 1] = [indent + line for line in text.splitlines()]
    page.write_text("\n".join(lines) + "\n")


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


# ----------------------------------------------------------------------------- 3. line counts


def code_lines(code: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    tree = ast.parse(code)
    docstring_lines: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body:
            first = body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstring_lines |= set(range(first.lineno, first.end_lineno + 1))
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type not in skip and token.type != tokenize.ENDMARKER:
            lines |= set(range(token.start[0], token.end[0] + 1))
    return len(lines - docstring_lines)


def test_code_lines_counts_code_only():
    code = (
        '"""Doc."""\n\n# comment\nx = 1  # trailing\n\n\n'
        'def f():\n    """Doc\n    more."""\n    return (1,\n            2)\n'
    )
    assert code_lines(code) == 4


def test_tutorial_line_counts_are_true():
    captioned = [
        b for b in blocks(DOCS / "tutorial.md") if b.lang == "python" and "lines" in b.caption
    ]
    assert len(captioned) == 6, "each example shows a hand-written and a funcsplit version"
    for block in captioned:
        stated = int(re.search(r"(\d+) lines", block.caption)[1])
        assert stated == code_lines(block.code), f"tutorial.md:{block.line}: {block.caption}"


# ----------------------------------------------------------------------------- 4. the build


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed")
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
