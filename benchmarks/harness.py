"""Timing: variants run interleaved in one process, reported as paired ratios to a baseline.

Each variant is a no-argument callable that does one run's work and waits for its result. After
warm-up (tracing, XLA compilation), every round times each variant once, starting from a
different variant each round, with garbage collection done before and off during each timing.
A variant's ratio to its baseline is the median over rounds of ``time / baseline time in the
same round``: load that shifts during the run touches both sides of a pair alike.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

Run = Callable[[], Any]


def measure(fn: Run) -> float:
    """Seconds one call of ``fn`` takes, garbage collection done before and off during it."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def interleaved(
    variants: dict[str, Run], *, rounds: int, warmup: int = 1, self_timed: bool = False
) -> dict[str, list]:
    """Times every variant ``rounds`` times, interleaved, after ``warmup`` untimed calls each.

    Args:
        variants: ``{name: run}``.
        rounds: timed rounds; round ``r`` starts with variant ``r mod len(variants)``.
        warmup: untimed calls of each variant first.
        self_timed: each run times itself (it sets up untimed, then measures) and returns
            what it measured: seconds, or ``{phase: seconds}``.

    Returns:
        ``{variant: [what each round measured]}``; index ``r`` of every list is round ``r``.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(variants[name]() if self_timed else measure(variants[name]))
    return times


class Stopwatch:
    """Times the phases of a self-timed run: ``with watch("trace"): ...``; `phases` sums them."""

    def __init__(self):
        self.phases: dict[str, float] = {}
        self._name = ""
        self._start = 0.0

    def __call__(self, name: str) -> Stopwatch:
        self._name = name
        return self

    def __enter__(self) -> Stopwatch:
        gc.collect()
        gc.disable()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        elapsed = time.perf_counter() - self._start
        gc.enable()
        self.phases[self._name] = self.phases.get(self._name, 0.0) + elapsed


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def paired_ratio(times: list[float], baseline_times: list[float]) -> float:
    """The median over rounds of ``time / baseline time`` of the same round."""
    return statistics.median(t / b for t, b in zip(times, baseline_times))


def row(
    case: str,
    config: str,
    variant: str,
    baseline: str | None,
    times: list[float],
    baseline_times: list[float] | None,
    **extra: Any,
) -> dict[str, Any]:
    """One result row: the variant's times and its paired ratios to the baseline's.

    ``ratio_to_baseline`` is the median of the per-round ratios; ``ratio_q1`` / ``ratio_q3``
    (quartiles) and ``ratio_min`` / ``ratio_max`` give their spread. Without a baseline the
    ratio fields are None.
    """
    out: dict[str, Any] = {
        "case": case,
        "config": config,
        "variant": variant,
        "baseline": baseline,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
    }
    ratios = None
    if baseline_times is not None:
        ratios = [t / b for t, b in zip(times, baseline_times)]
    out["ratio_to_baseline"] = statistics.median(ratios) if ratios else None
    out["ratio_q1"] = _quantile(ratios, 0.25) if ratios else None
    out["ratio_q3"] = _quantile(ratios, 0.75) if ratios else None
    out["ratio_min"] = min(ratios) if ratios else None
    out["ratio_max"] = max(ratios) if ratios else None
    out.update(extra)
    return out


def rows(
    case: str,
    config: str,
    times: dict[str, list],
    baselines: dict[str, str | None],
    **extra: Any,
) -> list[dict[str, Any]]:
    """Rows for every variant of one interleaved timing; ``baselines[v]`` names v's baseline."""
    return [
        row(
            case,
            config,
            name,
            baselines.get(name),
            series,
            times[baselines[name]] if baselines.get(name) else None,
            **extra,
        )
        for name, series in times.items()
    ]


_TRIVIAL_OPS = frozenset({"Const", "Identity", "NoOp", "Placeholder"})
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


def op_count(concrete_function: Any) -> int:
    """The ops a traced function runs, nested function calls counted by their bodies.

    Constants, identities, no-ops and placeholders are left out: what remains is the work
    the runtime schedules (before Grappler's rewrites), comparable between variants.
    """
    graph_def = concrete_function.graph.as_graph_def()
    library = {f.signature.name: f.node_def for f in graph_def.library.function}

    def count(nodes: Any) -> int:
        total = 0
        for node in nodes:
            if node.op in _CALL_OPS:
                total += count(library[node.attr["f"].func.name])
            elif node.op not in _TRIVIAL_OPS:
                total += 1
        return total

    return count(graph_def.node)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, load, library versions."""
    import keras
    import numpy
    import tensorflow as tf

    import funcsplit

    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "funcsplit": funcsplit.__version__,
        "gpu": bool(tf.config.list_physical_devices("GPU")),
        "load_average_start": list(os.getloadavg()),
    }
