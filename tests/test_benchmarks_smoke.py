"""Smoke test of the benchmarks: ``benchmarks/run.py --tiny`` runs every case and writes its files.

No timing is asserted (speed is measured, not tested): only that every case ran, that
``results.json`` has the documented schema, and that the markdown table and plots exist.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = {"pipeline", "training", "routing", "scale", "retracing", "weighting", "mixture"}
ROW_KEYS = {
    "case",
    "variant",
    "baseline",
    "median_s",
    "min_s",
    "max_s",
    "runs",
    "ratio_to_baseline",
}
MACHINE_KEYS = {"cpu", "cores", "python", "tensorflow", "keras"}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmarks")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--out", str(folder)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return folder


def test_results_json_schema(out):
    results = json.loads((out / "results.json").read_text())
    assert set(results["machine"]) >= MACHINE_KEYS
    rows = results["cases"]
    assert {r["case"] for r in rows} == CASES
    for r in rows:
        assert set(r) >= ROW_KEYS, sorted(ROW_KEYS - set(r))
        assert r["runs"] >= 1
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
        if r["baseline"] is not None:
            assert r["ratio_to_baseline"] > 0
            assert any(b["variant"] == r["baseline"] and b["config"] == r["config"] for b in rows)


def test_every_case_compares_funcsplit_with_a_handwritten_baseline(out):
    rows = json.loads((out / "results.json").read_text())["cases"]
    for case in CASES:
        compared = [
            r
            for r in rows
            if r["case"] == case and r["variant"].startswith("funcsplit") and r["baseline"]
        ]
        assert compared, case
        assert all(not r["baseline"].startswith("funcsplit") for r in compared)


def test_markdown_and_plots_written(out):
    text = (out / "results.md").read_text()
    assert "| config | variant | baseline |" in text
    for name in (
        "ratios.png",
        "pipeline.png",
        "routing.png",
        "scale.png",
        "retracing.png",
        "weighting.png",
    ):
        assert (out / name).stat().st_size > 1000, name
        assert f"({name})" in text, name


def test_readme_quotes_the_committed_results():
    """The README's table is the one `report.readme_table` makes of benchmarks/results/."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import report

    committed = ROOT / "benchmarks" / "results" / "results.json"
    readme = (ROOT / "README.md").read_text()
    if not committed.exists():
        pytest.skip("no committed full run")
    results = json.loads(committed.read_text())
    assert results["mode"] == "full"
    start = readme.index(report.README_START) + len(report.README_START)
    quoted = readme[start : readme.index(report.README_END)]
    assert quoted.strip() == report.readme_table(results).strip(), (
        "run: python benchmarks/run.py --readme benchmarks/results/results.json"
    )


def test_the_weighting_toy_runs_and_writes_its_files(tmp_path):
    """``benchmarks/weighting_toy.py`` for a few steps: trajectories, table, plot, JSON."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    script = str(ROOT / "benchmarks" / "weighting_toy.py")
    command = [sys.executable, script, "--steps", "40", "--every", "10", "--out", str(tmp_path)]
    command += ["--method", "static", "--method", "mgda"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = json.loads((tmp_path / "weighting_toy.json").read_text())
    assert summary["steps"] == 40 and set(summary["methods"]) == {"static", "mgda"}
    for result in summary["methods"].values():
        assert len(result["runs"]) == 5
        for run in result["runs"]:
            assert len(run["points"]) == 4 and run["points"][0] == run["start"]
            assert run["end_x"] != run["start"]  # it moved
            assert run["distance_to_front"] >= 0
    table = (tmp_path / "weighting_toy.md").read_text()
    assert "| static |" in table and "| mgda |" in table
    assert (tmp_path / "weighting_toy.png").stat().st_size > 1000
