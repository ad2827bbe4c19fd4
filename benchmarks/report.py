"""Targets, verdicts and the written results: ``results.json``, ``results.md`` and PNG plots."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RATIO_TARGET = 1.03
TRACE_TARGET_S = 2.0
LARGEST = 1024


def _ratio_verdict(row: dict, limit: float) -> str:
    ratio, q1 = row["ratio_to_baseline"], row["ratio_q1"]
    if ratio <= limit:
        return "met"
    return "within noise" if q1 is not None and q1 <= limit else "missed"


def judge(row: dict) -> None:
    """Adds ``target`` and ``verdict`` to a funcsplit row (others get None)."""
    row["target"], row["verdict"] = None, None
    variant, case = row["variant"], row["case"]
    if not variant.startswith("funcsplit"):
        return
    if case == "weighting":
        _judge_weighting(row)
    elif case == "retracing":
        row["target"] = "exactly one trace of split and of the step"
        one = row.get("traces") == 1 and row.get("split_traces") == 1
        row["verdict"] = "met" if one else "missed"
    elif variant == "funcsplit_compile_and_trace":
        row["target"] = f"under {TRACE_TARGET_S:g} s at {LARGEST} bindings, linear growth"
        if row.get("bindings") == LARGEST:
            row["verdict"] = "met" if row["median_s"] < TRACE_TARGET_S else "missed"
    elif variant == "funcsplit_routed_fit":
        row["target"] = "no slower than Keras compile(loss=dict) + fit (ratio ≤ 1)"
        row["verdict"] = _ratio_verdict(row, 1.0)
    elif row["ratio_to_baseline"] is not None:
        what = {"funcsplit": "the cheaper of mask and gather"}.get(variant, row["baseline"])
        what = what if case == "routing" else "the baseline"
        row["target"] = f"ratio to {what} ≤ {RATIO_TARGET}"
        row["verdict"] = _ratio_verdict(row, RATIO_TARGET)


LOSS_METHOD_TARGET = 1.05  # a loss-based method's step over static weighting's
GRAM_FLOOR_TARGET = 1.25  # a Gram method's step over the hand-written Gram floor
NASH_PCGRAD_TARGET = 2.0  # Nash-MTL's in-graph solver over PCGrad's step


def _judge_weighting(row: dict) -> None:
    """The issue's cost targets: loss-based ≤ 1.05× static, Gram methods near the floor of T
    backward passes over the shared part, Nash-MTL ≤ 2× PCGrad."""
    checks = []
    if row["variant"] == "funcsplit_static":
        checks.append(("the hand-written sum", row["ratio_to_baseline"], LOSS_METHOD_TARGET))
    elif not row.get("needs_gram"):
        checks.append(("static", row.get("ratio_to_static"), LOSS_METHOD_TARGET))
    else:
        checks.append(("the Gram floor", row.get("ratio_to_gram_floor"), GRAM_FLOOR_TARGET))
    if "ratio_to_pcgrad" in row:
        checks.append(("PCGrad", row["ratio_to_pcgrad"], NASH_PCGRAD_TARGET))
    checks = [c for c in checks if c[1] is not None]
    if not checks:
        return
    row["target"] = "; ".join(f"ratio to {what} ≤ {limit:g}" for what, _, limit in checks)
    row["verdict"] = "met" if all(value <= limit for _, value, limit in checks) else "missed"


def growth_exponent(rows: list[dict], variant: str, smallest: int = 64) -> float | None:
    """The slope of log(time) against log(bindings) (1 = linear), for ``N ≥ smallest``."""
    points = [
        (math.log(r["bindings"]), math.log(r["median_s"]))
        for r in rows
        if r["case"] == "scale" and r["variant"] == variant and r["bindings"] >= smallest
    ]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def summary(rows: list[dict]) -> dict[str, Any]:
    """Counts of verdicts and the growth exponents of the scale case."""
    verdicts: dict[str, int] = {}
    for r in rows:
        if r.get("verdict"):
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    return {
        "verdicts": verdicts,
        "growth_exponent": {
            v: growth_exponent(rows, v)
            for v in (
                "funcsplit_compile",
                "funcsplit_compile_and_trace",
                "handwritten_trace",
                "tf_function_floor",
            )
        },
    }


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def _ratio(r: dict) -> str:
    if r["ratio_to_baseline"] is None:
        return "–"
    return f"{r['ratio_to_baseline']:.3f} ({r['ratio_q1']:.3f}–{r['ratio_q3']:.3f})"


def _details(r: dict) -> str:
    parts = []
    if "ops" in r:
        parts.append(f"{r['ops']} ops")
    if "elements_per_s" in r:
        parts.append(f"{r['elements_per_s']:,.0f} elements/s")
    if "traces" in r:
        parts.append(f"{r['traces']} step traces")
    if "split_traces" in r:
        parts.append(f"{r['split_traces']} split, {r['loss_traces']} loss traces")
    if "ratio_to_floor" in r:
        parts.append(f"{r['ratio_to_floor']:.2f}x the tf.function floor")
    for key, what in (
        ("ratio_to_static", "static"),
        ("ratio_to_gram_floor", "Gram floor"),
        ("ratio_to_pcgrad", "PCGrad"),
    ):
        if key in r:
            parts.append(f"{r[key]:.3f}x {what}")
    if "ratio_to_masked" in r:
        parts.append(f"vs mask {r['ratio_to_masked']:.3f}, vs gather {r['ratio_to_gather']:.3f}")
    return "; ".join(parts)


CASE_TITLES = {
    "pipeline": "1. Split throughput in a tf.data pipeline",
    "training": "2. Training step, seed Example 2",
    "routing": "3. Per-example routing with T tasks",
    "scale": "4. Scale: compile, trace and step time against bindings",
    "retracing": "5. Retracing over batches of varying sizes",
    "weighting": "6. Weighting methods: step time over static at T = 2, 4, 8 tasks",
    "mixture": "7. Mixtures: several datasets in one stream, against padding by hand",
}
PLOTS = {
    "pipeline": "pipeline.png",
    "routing": "routing.png",
    "scale": "scale.png",
    "retracing": "retracing.png",
    "weighting": "weighting.png",
}


def markdown(results: dict) -> str:
    """The results as markdown: machine, targets, one table per case, plots."""
    m = results["machine"]
    lines = [
        "# funcsplit benchmarks",
        "",
        f"Mode `{results['mode']}`, {results['date']}, {results['elapsed_s']:.0f} s. "
        f"{m['cpu']}, {m['cores']} cores; Python {m['python']}, TensorFlow {m['tensorflow']}, "
        f"Keras {m['keras']}. Load average at start {m['load_average_start'][0]:.2f}, "
        f"at end {m['load_average_end'][0]:.2f}.",
        "",
        "Each funcsplit variant is timed beside its hand-written baseline in one process, "
        "interleaved, after warm-up. *ratio* is the median over rounds of the paired ratio "
        "`variant time / baseline time` (below 1: funcsplit is faster); in brackets its "
        "quartiles. *median* and *min–max* are per run (see each case for what a run is).",
        "",
        "![ratios](ratios.png)",
        "",
        "## Targets",
        "",
    ]
    s = results["summary"]
    lines.append(
        "Verdicts: " + ", ".join(f"{v} {n}" for v, n in sorted(s["verdicts"].items())) + ". "
        "*within noise*: the median ratio is above the target but the lower quartile is not."
    )
    exponents = {k: v for k, v in s["growth_exponent"].items() if v is not None}
    if exponents:
        lines.append("")
        lines.append(
            "Growth with the number of bindings (slope of log time on log N, N ≥ 64; "
            "1 is linear): " + ", ".join(f"{k} {v:.2f}" for k, v in exponents.items()) + "."
        )
    missed = [r for r in results["cases"] if r.get("verdict") in ("missed", "within noise")]
    if missed:
        lines += ["", "| case | config | variant | ratio | verdict |", "|---|---|---|---|---|"]
        for r in missed:
            lines.append(
                f"| {r['case']} | {r['config']} | {r['variant']} | {_ratio(r)} | {r['verdict']} |"
            )
    for case, title in CASE_TITLES.items():
        rows = [r for r in results["cases"] if r["case"] == case]
        if not rows:
            continue
        lines += [
            "",
            f"## {title}",
            "",
            "| config | variant | baseline | median | min–max | runs | ratio (quartiles) "
            "| verdict | details |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['config']} | {r['variant']} | {r['baseline'] or '–'} "
                f"| {_seconds(r['median_s'])} | {_seconds(r['min_s'])}–{_seconds(r['max_s'])} "
                f"| {r['runs']} | {_ratio(r)} | {r['verdict'] or ''} | {_details(r)} |"
            )
        if case in PLOTS:
            lines += ["", f"![{case}]({PLOTS[case]})"]
    return "\n".join(lines) + "\n"


def _save(fig, path: pathlib.Path) -> None:
    """Writes a figure laid out to fit its labels, and frees it."""
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _plot_ratios(rows: list[dict], path: pathlib.Path) -> None:
    judged = [r for r in rows if r["variant"].startswith("funcsplit") and r["ratio_to_baseline"]]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.22 * len(judged) + 1)))
    for i, r in enumerate(judged):
        color = {"met": "tab:green", "within noise": "tab:orange"}.get(r["verdict"], "tab:red")
        if r["verdict"] is None:
            color = "tab:gray"
        low, high = r["ratio_q1"], r["ratio_q3"]
        ax.plot([low, high], [i, i], color=color, lw=2, alpha=0.5)
        ax.plot(r["ratio_to_baseline"], i, "o", color=color, ms=4)
    ax.set_yticks(range(len(judged)))
    ax.set_yticklabels([f"{r['case']}: {r['config']} · {r['variant']}" for r in judged], fontsize=6)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.axvline(RATIO_TARGET, color="tab:red", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("time / hand-written baseline (median, quartiles; log)")
    ax.invert_yaxis()
    _save(fig, path)


def _plot_pipeline(rows: list[dict], path: pathlib.Path) -> None:
    rows = [r for r in rows if r["case"] == "pipeline"]
    configs = list(dict.fromkeys(r["config"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(variants)
    for j, v in enumerate(variants):
        values = [
            next(r["elements_per_s"] for r in rows if r["config"] == c and r["variant"] == v)
            for c in configs
        ]
        ax.bar([i + j * width for i in range(len(configs))], values, width, label=v)
    ax.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(configs))])
    ax.set_xticklabels(configs, fontsize=8)
    ax.set_ylabel("elements / s")
    ax.legend(fontsize=7)
    _save(fig, path)


def _plot_routing(rows: list[dict], path: pathlib.Path) -> None:
    rows = [r for r in rows if r["case"] == "routing"]
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    fig, axes = plt.subplots(1, len(losses), figsize=(4 * len(losses), 3.2), squeeze=False)
    for ax, loss in zip(axes[0], losses):
        for v in dict.fromkeys(r["variant"] for r in rows):
            points = sorted(
                (r["tasks"], r["median_s"] / r["steps"])
                for r in rows
                if r["loss"] == loss and r["variant"] == v
            )
            ax.plot(*zip(*points), "o-", label=v, ms=3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tasks T")
        ax.set_ylabel("s per training step")
        ax.set_title(f"{loss} loss", fontsize=9)
        ax.legend(fontsize=7)
    _save(fig, path)


def _plot_scale(rows: list[dict], path: pathlib.Path) -> None:
    rows = [r for r in rows if r["case"] == "scale"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for v in dict.fromkeys(r["variant"] for r in rows):
        points = sorted(
            (r["bindings"], r["median_s"] / r.get("calls", 1)) for r in rows if r["variant"] == v
        )
        ax.plot(*zip(*points), "o-", label=v + (" (per call)" if "step" in v else ""), ms=3)
    ax.axhline(TRACE_TARGET_S, color="tab:red", lw=0.8, ls="--", label="2 s target")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("bindings (= target leaves)")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    _save(fig, path)


def _plot_retracing(rows: list[dict], path: pathlib.Path) -> None:
    rows = [r for r in rows if r["case"] == "retracing"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 2.8))
    names = [r["variant"] for r in rows]
    left.bar(names, [r["traces"] for r in rows], color=["tab:gray", "tab:blue"][: len(rows)])
    left.set_ylabel("step traces")
    right.bar(names, [r["median_s"] for r in rows], color=["tab:gray", "tab:blue"][: len(rows)])
    right.set_ylabel(f"seconds for {rows[0]['batches']} batches" if rows else "seconds")
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=7)
    _save(fig, path)


def _plot_weighting(rows: list[dict], path: pathlib.Path) -> None:
    rows = [r for r in rows if r["case"] == "weighting" and "ratio_to_static" in r]
    tasks = sorted({r["tasks"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / max(len(tasks), 1)
    for j, t in enumerate(tasks):
        values = [
            next((r["ratio_to_static"] for r in rows if r["tasks"] == t and r["variant"] == v), 0)
            for v in variants
        ]
        ax.bar([i + j * width for i in range(len(variants))], values, width, label=f"T={t}")
    ax.set_xticks([i + width * (len(tasks) - 1) / 2 for i in range(len(variants))])
    ax.set_xticklabels([v.removeprefix("funcsplit_") for v in variants], fontsize=8, rotation=30)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(LOSS_METHOD_TARGET, color="tab:red", lw=0.8, ls="--")
    ax.set_ylabel("step time / static weighting")
    ax.legend(fontsize=7)
    _save(fig, path)


README_START = "<!-- benchmark-table:start -->"
README_END = "<!-- benchmark-table:end -->"


def readme_table(results: dict) -> str:
    """The README's table: every judged funcsplit row (scale: the largest N only)."""
    rows = [r for r in results["cases"] if r.get("verdict") or r.get("target")]
    largest = max((r.get("bindings", 0) for r in rows if r["case"] == "scale"), default=0)
    rows = [r for r in rows if r["case"] != "scale" or r.get("bindings") == largest]
    m = results["machine"]
    lines = [
        f"Full run of {results['date'][:10]} ({m['cpu']}, {m['cores']} cores, TensorFlow "
        f"{m['tensorflow']}, Keras {m['keras']}); ratio = median of the paired ratios "
        "funcsplit / baseline (quartiles), below 1: funcsplit is faster.",
        "",
        "| case | config | funcsplit | baseline | ratio (quartiles) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["variant"] == "funcsplit_compile_and_trace":
            ratio = f"{_seconds(r['median_s'])}; vs hand-written trace {_ratio(r)}"
            if "ratio_to_floor" in r:
                ratio += f"; {r['ratio_to_floor']:.2f}x the tf.function floor"
        elif r["case"] == "retracing":
            ratio = f"{r.get('traces')} step trace, {r.get('split_traces')} split trace"
        else:
            ratio = _ratio(r)
        lines.append(
            f"| {r['case']} | {r['config']} | {r['variant']} | {r['baseline'] or '–'} "
            f"| {ratio} | {r['verdict'] or '–'} |"
        )
    exponents = results["summary"]["growth_exponent"]
    if exponents.get("funcsplit_compile_and_trace") is not None:
        lines += [
            "",
            "Compile + trace grows with exponent "
            f"{exponents['funcsplit_compile_and_trace']:.2f} in the number of bindings "
            "(1 = linear; N ≥ 64).",
        ]
    return "\n".join(lines) + "\n"


def update_readme(results: dict, readme: pathlib.Path) -> None:
    """Replaces the table between the README's benchmark markers with `readme_table`."""
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:start] + "\n" + readme_table(results) + text[end:])


def write(results: dict, out: pathlib.Path) -> list[pathlib.Path]:
    """Writes ``results.json``, ``results.md`` and the plots into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    rows = results["cases"]
    for r in rows:
        judge(r)
    results["summary"] = summary(rows)
    written = [out / "results.json", out / "results.md", out / "ratios.png"]
    written[0].write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    _plot_ratios(rows, written[2])
    plotters = {
        "pipeline": _plot_pipeline,
        "routing": _plot_routing,
        "scale": _plot_scale,
        "retracing": _plot_retracing,
        "weighting": _plot_weighting,
    }
    for case, plot in plotters.items():
        if any(r["case"] == case for r in rows):
            plot(rows, out / PLOTS[case])
            written.append(out / PLOTS[case])
    written[1].write_text(markdown(results))
    return written
