"""The demo's outputs: the per-loss table, the loss-curve plot and the markdown report."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

LOSS_TABLE_HEADER = ("loss", "weight", "train (epoch 1)", "train (last)", "val (last)")


def loss_rows(history: dict[str, list[float]], weights: dict[str, float]) -> list[tuple[str, ...]]:
    """One row per loss (``total`` first): first and last train value, last validation value.

    Args:
        history: Keras ``History.history``: ``loss``, ``<binding>_loss`` and ``val_...``.
        weights: ``{binding name: weight}``.

    Examples:
        >>> history = {"loss": [2.0, 1.0], "val_loss": [2.1, 1.2],
        ...            "label_loss": [2.0, 1.0], "val_label_loss": [2.1, 1.2]}
        >>> loss_rows(history, {"label": 1.0})[1]
        ('label', '1', '2.0000', '1.0000', '1.2000')
    """
    rows = []
    for name, weight in (("total", None), *weights.items()):
        key = "loss" if name == "total" else f"{name}_loss"
        train, val = history.get(key, []), history.get(f"val_{key}", [])
        rows.append(
            (
                name,
                "-" if weight is None else f"{weight:g}",
                f"{train[0]:.4f}" if train else "-",
                f"{train[-1]:.4f}" if train else "-",
                f"{val[-1]:.4f}" if val else "-",
            )
        )
    return rows


def text_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """A plain-text table with aligned columns."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def markdown_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def plot_losses(history: dict[str, list[float]], names: Sequence[str], path: str) -> None:
    """Writes a PNG with one panel per loss (total first), train and validation curves."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = ["total", *names]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for ax, name in zip(axes[0], panels):
        key = "loss" if name == "total" else f"{name}_loss"
        train = history.get(key, [])
        epochs = range(1, len(train) + 1)
        ax.plot(epochs, train, marker="o", markersize=3, label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", markersize=3, ls="--", label="val")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend()
    fig.suptitle("funcsplit demo: per-loss curves on funcsplit_digits")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    out: str, routing: str, rows: list[Sequence[str]], history: dict, seconds: float
) -> dict[str, str]:
    """Writes ``routing.md`` (routing table and final losses) and ``history.json`` to ``out``.

    Returns:
        ``{"routing": path, "history": path}``.
    """
    routing_path = os.path.join(out, "routing.md")
    history_path = os.path.join(out, "history.json")
    text = "\n".join(
        [
            "# funcsplit demo on funcsplit_digits",
            "",
            "## Routing table (`compiled.describe()`)",
            "",
            "```text",
            routing,
            "```",
            "",
            "## Final losses",
            "",
            markdown_table(LOSS_TABLE_HEADER, rows),
            "",
            f"Trained in {seconds:.1f} s. Curves: `losses.png`.",
            "",
        ]
    )
    with open(routing_path, "w", encoding="utf-8") as f:
        f.write(text)
    with open(history_path, "w", encoding="utf-8") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in history.items()}, f, indent=1)
    return {"routing": routing_path, "history": history_path}
