"""Runs every benchmark case and writes ``results.json``, ``results.md`` and plots.

Usage::

    python benchmarks/run.py            # the full run (tens of minutes on 2 cores)
    python benchmarks/run.py --quick    # a few minutes
    python benchmarks/run.py --tiny     # well under a minute: the smoke test's run
    python benchmarks/run.py --out DIR --case routing --case scale
    python benchmarks/run.py --readme benchmarks/results/results.json   # README table only

Results go to ``benchmarks/out`` (git-ignored) unless ``--out`` says otherwise; the committed
copy of the latest full run is ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402
from benchmarks import report  # noqa: E402
from benchmarks.cases import CASES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parses the arguments, runs the cases in order, writes the results; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few minutes on 2 cores")
    size.add_argument("--tiny", action="store_true", help="seconds: checks that it all runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="output folder")
    parser.add_argument(
        "--case", action="append", choices=sorted(CASES), help="run only these cases"
    )
    parser.add_argument(
        "--readme",
        metavar="RESULTS_JSON",
        help="only rewrite the README's benchmark table from a results.json, and exit",
    )
    args = parser.parse_args(argv)
    if args.readme:
        import json

        results = json.loads(pathlib.Path(args.readme).read_text())
        report.update_readme(results, ROOT / "README.md")
        print(f"README.md: table from {args.readme}", flush=True)
        return 0
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    start = time.perf_counter()
    results = {
        "mode": mode,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": harness.machine(),
        "cases": [],
        "case_seconds": {},
    }
    for name, run in CASES.items():
        if args.case and name not in args.case:
            continue
        case_start = time.perf_counter()
        print(f"[{mode}] {name} ...", flush=True)
        results["cases"] += run(mode)
        results["case_seconds"][name] = round(time.perf_counter() - case_start, 1)
        print(f"[{mode}] {name}: {results['case_seconds'][name]} s", flush=True)
    results["machine"]["load_average_end"] = list(os.getloadavg())
    results["elapsed_s"] = round(time.perf_counter() - start, 1)
    written = report.write(results, pathlib.Path(args.out))
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
