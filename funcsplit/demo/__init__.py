"""``funcsplit demo``: a multi-task model trained on a local TFDS dataset, with routed losses.

The demo prepares ``funcsplit_digits`` (scikit-learn's handwritten digits written as a TFDS
dataset, nothing downloaded), declares the split in code (`funcsplit.demo.task`), prints the
routing table, trains with Keras ``fit`` through `funcsplit.keras.RoutedModel`, prints the
per-loss table, and writes a plot of the per-loss curves and the routing table to ``out``.

Run it as ``funcsplit demo [--out DIR] [--epochs N] [--data-dir D]``. ``--weighting NAME``
trains with ``fs.weighting.NAME()``; ``--compare-weightings`` trains once per method and
writes the comparison (`funcsplit.demo.weightings`).
"""

from __future__ import annotations

import os
import time

EPOCHS = 12
BATCH_SIZE = 64


def main(
    out: str = "funcsplit-demo",
    epochs: int | None = None,
    data_dir: str | None = None,
    *,
    limit: int | None = None,
    verbose: int | str = "auto",
    weighting: str | None = None,
    compare_weightings: bool = False,
) -> int:
    """Runs the demo; returns the exit status (0).

    Args:
        out: folder for ``losses.png``, ``routing.md`` and ``history.json`` (created).
        epochs: training epochs (default `EPOCHS`).
        data_dir: TFDS data dir for ``funcsplit_digits`` (default ``$FUNCSPLIT_DATA_DIR``,
            else ``~/.cache/funcsplit/tfds``); prepared there on the first run.
        limit: train on only this many examples (a quick smoke run).
        verbose: Keras ``fit`` verbosity (``"auto"``: a progress bar).
        weighting: train with ``fs.weighting.<weighting>()`` (e.g. ``"famo"``).
        compare_weightings: train once per weighting method instead (same seed, batches
            and epochs; default epochs `funcsplit.demo.weightings.COMPARE_EPOCHS`) and write
            ``weightings.md``, ``weightings.json`` and ``weightings.png``.

    Returns:
        0 when the demo ran.
    """
    import keras

    import funcsplit as fs
    from funcsplit.demo import digits
    from funcsplit.demo import report
    from funcsplit.demo import task
    from funcsplit.demo import weightings

    start = time.perf_counter()
    method = None if weighting is None else weightings.method(weighting)
    if compare_weightings:
        epochs = weightings.COMPARE_EPOCHS if epochs is None else epochs
    epochs = EPOCHS if epochs is None else epochs
    data_dir = data_dir or digits.default_data_dir()
    os.makedirs(out, exist_ok=True)

    print(f"funcsplit demo: preparing {digits.NAME} in {data_dir} (built once, then cached)")
    builder = digits.builder(data_dir)
    compiled = fs.compile(task.split_spec(builder))
    print("\nRouting table (compiled.describe()):\n")
    print(compiled.describe())
    labelled, total = task.labelled_fraction(builder)
    print(f"\n{labelled} of {total} training examples have a label: the route label != -1 sends")
    print("only those to the label loss; the other losses train on every example.")
    if compare_weightings:
        return weightings.main(builder, compiled, out, epochs=epochs, limit=limit, start=start)
    train, val = task.datasets(builder, compiled, batch_size=BATCH_SIZE, limit=limit)

    model = task.build_model(fs.tfds.num_classes(builder))
    routed = fs.keras.RoutedModel(
        model,
        compiled,
        weighting=method,
        shared=weightings.shared_variables if method is not None and method.needs_gram else None,
        metrics={"label": [keras.metrics.SparseCategoricalAccuracy("acc")]},
    )
    routed.compile(optimizer=keras.optimizers.Adam(3e-3))
    how = "" if method is None else f", weighting=fs.weighting.{method.name}()"
    print(f"\nTraining {epochs} epoch(s) with Keras fit through fs.keras.RoutedModel{how}:\n")
    fit_start = time.perf_counter()
    fitted = routed.fit(
        train,
        validation_data=val,
        epochs=epochs,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles (task.datasets)
    )
    history = fitted.history
    fit_seconds = time.perf_counter() - fit_start

    weights = {b.name: b.weight for b in compiled.spec.losses}
    rows = report.loss_rows(history, weights)
    print("\nPer-loss values (each binding unweighted; total = Σ weight · loss):\n")
    print(report.text_table(report.LOSS_TABLE_HEADER, rows))
    if "val_label_acc" in history:
        print(f"\nvalidation accuracy on labelled digits: {history['val_label_acc'][-1]:.3f}")
    if method is not None:
        weightings.print_weighted(routed, builder, history, method.name)
    plot = os.path.join(out, "losses.png")
    report.plot_losses(history, compiled.names, plot)
    written = report.write_report(out, compiled.describe(), rows, history, fit_seconds)
    total = time.perf_counter() - start
    print(f"\nWrote {plot}, {written['routing']} and {written['history']}")
    print(f"Done in {total:.1f} s (training {fit_seconds:.1f} s).")
    return 0


__all__ = ["main"]
