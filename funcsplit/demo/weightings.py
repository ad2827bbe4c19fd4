"""The demo's weighting runs: the four digits tasks trained with each ``fs.weighting`` method.

``funcsplit demo --weighting NAME`` trains the demo's model with one method;
``funcsplit demo --compare-weightings`` trains it once per method, from the same initial
weights, on the same batches in the same order, for the same epochs, and reports each task's
validation metric and the mean relative change against static weighting, as LibMTL reports
it (Maninis et al. 2019; LibMTL's ``count_improvement``):

    Δm % = 100 · (1/T) Σ_t (-1)^{l_t} (M_t − M_static,t) / M_static,t

with ``l_t = 0`` when higher is better (every metric here is) and 1 when lower is. It writes
``weightings.md``, ``weightings.json`` and ``weightings.png`` to the output folder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

COMPARE_EPOCHS = 6  # per method: ten runs of the demo's model on a CPU take minutes
# task -> (metric, higher is better)
METRICS = {
    "label": ("accuracy", True),
    "coarse": ("accuracy", True),
    "mask": ("IoU", True),
    "name": ("token accuracy", True),
}
TABLE_HEADER = ("method", *(f"{t} {m}" for t, (m, _) in METRICS.items()), "Δm % vs static")


def available() -> tuple[str, ...]:
    """The names of ``fs.weighting``'s methods (``fs.weighting.NAMES``)."""
    import funcsplit as fs

    return fs.weighting.NAMES


def method(name: str) -> Any:
    """``fs.weighting.<name>()`` with the papers' defaults.

    Raises:
        SystemExit: for a name that is not a weighting method (the message lists them).
    """
    import funcsplit as fs

    if name not in available():
        raise SystemExit(
            f"funcsplit demo: unknown weighting {name!r}; choose one of {', '.join(available())}"
        )
    return getattr(fs.weighting, name)()


def shared_variables(model: Any) -> list[Any]:
    """The encoder every task reads: both convolutions and the pooled features."""
    return [
        v
        for layer in ("conv1", "conv2", "pooled")
        for v in model.get_layer(layer).trainable_variables
    ]


def task_metrics(model: Any, dataset: Any) -> dict[str, float]:
    """Each task's validation metric, computed in NumPy on a raw (unsplit) dataset.

    ``label``: accuracy on the labelled examples only (the route's examples); ``coarse``:
    accuracy; ``mask``: intersection over union of the pixels predicted above 0.5; ``name``:
    accuracy of the next-token predictions on the non-padding tokens.
    """
    hits = {task: [0.0, 0.0] for task in METRICS}  # numerator, denominator
    for element in dataset:
        out = model({"image": element["image"], "name": element["name"]}, training=False)
        out = {k: np.asarray(v) for k, v in out.items()}
        label, coarse = np.asarray(element["label"]), np.asarray(element["coarse"])
        mask, tokens = np.asarray(element["mask"]), np.asarray(element["name"])
        labelled = label != -1
        hits["label"][0] += np.sum(out["label"].argmax(-1)[labelled] == label[labelled])
        hits["label"][1] += np.sum(labelled)
        hits["coarse"][0] += np.sum(out["coarse"].argmax(-1) == coarse)
        hits["coarse"][1] += coarse.size
        predicted = out["mask"] > 0.5
        hits["mask"][0] += np.sum(predicted & mask)
        hits["mask"][1] += np.sum(predicted | mask)
        following, real = tokens[:, 1:], tokens[:, 1:] != 0
        guessed = out["name"][:, :-1].argmax(-1)
        hits["name"][0] += np.sum((guessed == following) & real)
        hits["name"][1] += np.sum(real)
    return {task: float(n / d) if d else 0.0 for task, (n, d) in hits.items()}


def delta_m(base: dict[str, float], new: dict[str, float]) -> float:
    """LibMTL's Δm in %: the mean over tasks of the signed relative change against ``base``.

    Examples:
        >>> delta_m({"label": 0.5, "mask": 0.8}, {"label": 0.55, "mask": 0.76})
        2.5
    """
    changes = []
    for task, value in base.items():
        higher = METRICS.get(task, ("", True))[1]
        sign = 1.0 if higher else -1.0
        changes.append(sign * (new[task] - value) / value)
    return round(100.0 * float(np.mean(changes)), 10)


def train(
    builder: Any,
    compiled: Any,
    name: str,
    *,
    epochs: int,
    limit: int | None = None,
    verbose: int | str = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Trains the demo's model with one method; returns its history, metrics and time."""
    import keras

    import funcsplit as fs
    from funcsplit.demo import task

    train_ds, _ = task.datasets(builder, compiled, batch_size=batch_size, limit=limit)
    model = task.build_model(fs.tfds.num_classes(builder), seed=0)
    weighting = method(name)
    routed = fs.keras.RoutedModel(
        model,
        compiled,
        weighting=weighting,
        shared=shared_variables if weighting.needs_gram else None,
    )
    routed.compile(optimizer=keras.optimizers.Adam(3e-3))
    start = time.perf_counter()
    history = routed.fit(train_ds, epochs=epochs, verbose=verbose, shuffle=False).history
    seconds = time.perf_counter() - start
    raw_val = builder.as_dataset(split="test").map(task.preprocess).batch(256)
    return {
        "method": name,
        "metrics": task_metrics(model, raw_val),
        "history": {k: [float(x) for x in v] for k, v in history.items()},
        "seconds": seconds,
    }


def compare(
    builder: Any,
    compiled: Any,
    out: str,
    *,
    epochs: int,
    limit: int | None = None,
    methods: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Trains with each method (static first) and writes the table, JSON and plot to ``out``.

    Returns:
        One record per method: ``method``, ``metrics``, ``delta_m``, ``seconds``,
        ``weights`` (each task's mean alpha over the last epoch).
    """
    names = list(methods or available())
    names = ["static", *[n for n in names if n != "static"]]
    records = []
    for name in names:
        print(f"  training with fs.weighting.{name}() for {epochs} epoch(s) ...", flush=True)
        run = train(builder, compiled, name, epochs=epochs, limit=limit)
        history = run["history"]
        records.append(
            {
                "method": name,
                "metrics": run["metrics"],
                "seconds": round(run["seconds"], 2),
                "weights": {
                    t: history[f"{t}_weight"][-1] for t in METRICS if f"{t}_weight" in history
                },
            }
        )
    base = records[0]["metrics"]
    for record in records:
        record["delta_m"] = delta_m(base, record["metrics"])
    write(out, records, epochs=epochs, limit=limit)
    return records


def main(
    builder: Any, compiled: Any, out: str, *, epochs: int, limit: int | None, start: float
) -> int:
    """``funcsplit demo --compare-weightings``: trains, prints and writes the comparison."""
    from funcsplit.demo import report

    print(f"\nTraining the model once per weighting method ({len(available())}), same seed,")
    print(f"batches and {epochs} epoch(s) each, with Keras fit through fs.keras.RoutedModel:\n")
    records = compare(builder, compiled, out, epochs=epochs, limit=limit)
    print("\nValidation metrics per task and Δm % against static weighting (LibMTL):\n")
    print(report.text_table(TABLE_HEADER, table_rows(records)))
    names = ", ".join(f"weightings.{k}" for k in ("md", "json", "png"))
    print(f"\nWrote {names} to {out}. Done in {time.perf_counter() - start:.1f} s.")
    return 0


def print_weighted(routed: Any, builder: Any, history: dict, name: str) -> None:
    """After a ``--weighting`` run: each task's last mean alpha and validation metric."""
    from funcsplit.demo import report
    from funcsplit.demo import task

    raw_val = builder.as_dataset(split="test").map(task.preprocess).batch(256)
    metrics = task_metrics(routed.model, raw_val)
    rows = [
        (t, f"{history[f'{t}_weight'][-1]:.4f}", m, f"{metrics[t]:.4f}")
        for t, (m, _) in METRICS.items()
    ]
    print(f"\nfs.weighting.{name}(): task weights (mean alpha, last epoch) and metrics:\n")
    print(report.text_table(("task", "alpha", "metric", "validation"), rows))


def table_rows(records: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The rows of `TABLE_HEADER`: metrics to 4 places, Δm to 2."""
    return [
        (
            r["method"],
            *(f"{r['metrics'][t]:.4f}" for t in METRICS),
            f"{r['delta_m']:+.2f}",
        )
        for r in records
    ]


def write(out: str, records: list[dict[str, Any]], *, epochs: int, limit: int | None) -> dict:
    """Writes ``weightings.md``, ``weightings.json`` and ``weightings.png`` to ``out``."""
    from funcsplit.demo import report

    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, f"weightings.{k}") for k in ("md", "json", "png")}
    setup = f"{epochs} epoch(s), Adam(3e-3), batch 64, seed 0, " + (
        "all training examples" if limit is None else f"the first {limit} training examples"
    )
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump({"setup": setup, "records": records}, f, indent=2, sort_keys=True)
    text = [
        "# funcsplit demo --compare-weightings",
        "",
        f"funcsplit_digits, four tasks, one model per method from the same weights: {setup}.",
        "Validation metrics on the test split (higher is better for each); Δm % is the mean",
        "relative change of the four metrics against static weighting (LibMTL's definition).",
        "",
        report.markdown_table(TABLE_HEADER, table_rows(records)),
        "",
    ]
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write("\n".join(text))
    plot(records, paths["png"])
    return paths


def plot(records: list[dict[str, Any]], path: str) -> None:
    """Each task's change against static (%) per method, and Δm %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["method"] for r in records]
    base = records[0]["metrics"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=(3, 1.4))
    width = 0.8 / len(METRICS)
    x = np.arange(len(names))
    for i, task in enumerate(METRICS):
        change = [100 * (r["metrics"][task] - base[task]) / base[task] for r in records]
        left.bar(x + (i - (len(METRICS) - 1) / 2) * width, change, width, label=task)
    left.axhline(0, color="black", linewidth=0.8)
    left.set_xticks(x, names, rotation=30, ha="right")
    left.set_ylabel("validation metric vs static (%)")
    left.legend(fontsize=8, ncols=4)
    right.barh(names[::-1], [r["delta_m"] for r in records][::-1], color="tab:gray")
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlabel("Δm % vs static")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


__all__ = [
    "compare",
    "delta_m",
    "method",
    "shared_variables",
    "task_metrics",
    "train",
]
