"""mkdocs hook: put benchmarks/results/results.md into the Benchmarks page, if it exists.

The page holds a ``<!-- benchmark-results -->`` marker. When the results file exists, the marker
is replaced by its text, relative links (plots) are pointed at ``benchmark-results/…`` and those
files are added to the site; when it does not, the marker becomes a note saying how to make it.
Either way ``mkdocs build --strict`` passes.
"""

from __future__ import annotations

import pathlib
import re

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_PAGE = RESULTS / "results.md"
MARKER = "<!-- benchmark-results -->"
PREFIX = "benchmark-results"
MISSING = """!!! note "No results yet"
    `benchmarks/results/results.md` is not in this checkout, so there is nothing to show
    here yet. Run `python benchmarks/run.py --out benchmarks/results` (tens of minutes on two
    cores; `--quick` takes a few), then rebuild the site.
"""
# Markdown links and images whose target is relative: [text](target) / ![alt](target).
LINK = re.compile(r"(!?\[[^\]]*\]\()(?!https?://|/|#|mailto:)([^)\s]+)(\))")


def _assets() -> list[pathlib.Path]:
    if not RESULTS.is_dir():
        return []
    return [p for p in sorted(RESULTS.rglob("*")) if p.is_file() and p.suffix != ".md"]


def on_files(files, config):
    """Adds the results' plots and data files to the site under ``benchmark-results/``."""
    if not RESULTS_PAGE.exists():
        return files
    for asset in _assets():
        relative = asset.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, f"{PREFIX}/{relative}", abs_src_path=str(asset)))
    return files


def _rewrite(text: str) -> str:
    """Points relative links at the copied files; unlinks those the site cannot hold."""

    def fix(match: re.Match) -> str:
        opening, target, closing = match[1], match[2], match[3]
        path = target.split("#")[0]
        if path and not path.endswith(".md") and (RESULTS / path).is_file():
            return f"{opening}{PREFIX}/{target}{closing}"
        label = opening[2:-2] if opening.startswith("!") else opening[1:-2]
        return f"{label} (`{target}`)"

    return LINK.sub(fix, text)


def _without_title(text: str) -> str:
    """The results without their own ``# title`` line (the page has its title)."""
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown, page, config, files):
    """Replaces the marker on the Benchmarks page with the results (or a note)."""
    if MARKER not in markdown:
        return markdown
    if RESULTS_PAGE.exists():
        body = _rewrite(RESULTS_PAGE.read_text())
        body = _without_title(body)
    else:
        body = MISSING
    return markdown.replace(MARKER, body)
