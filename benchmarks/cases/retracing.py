"""Case 5: traces over a stream of batches of varying sizes.

The seed's Example 2 (tiny size) trained on batches whose sizes vary (drawn once, seeded).
Hand-written: the seed's ``@tf.function`` step without ``input_signature``, which traces
again for every new batch size. funcsplit: a fresh ``fs.compile`` and
``fs.keras.train_step`` per run, fed ``compiled.split(batch)``: ``split`` and the step carry
input signatures with the batch dimension ``None``. Each run builds fresh functions, so the
time includes every trace; rows report the traces counted.
"""

from __future__ import annotations

import random

import keras

import funcsplit as fs
from benchmarks import harness
from benchmarks.cases import seed2

CASE = "retracing"
SIZES = {
    "tiny": {"batches": 4, "rounds": 1, "warmup": 0},
    "quick": {"batches": 30, "rounds": 1, "warmup": 1},
    "full": {"batches": 100, "rounds": 3, "warmup": 1},
}
SIZE = "tiny"
BATCH_SIZES = (8, 40)


def make_batches(count: int) -> list[dict]:
    """``count`` batches of the seed's element with sizes drawn from ``BATCH_SIZES``."""
    rng = random.Random(5)
    sizes = [rng.randrange(*BATCH_SIZES) for _ in range(count)]
    ds = seed2.make_dataset(SIZE, sum(sizes), batch=sum(sizes))
    whole = next(iter(ds))
    out, start = [], 0
    for size in sizes:
        out.append({k: v[start : start + size] for k, v in whole.items()})
        start += size
    return out


def run(mode: str) -> list[dict]:
    """Hand-written vs funcsplit over the same batches; times include every trace."""
    size = SIZES[mode]
    batches = make_batches(size["batches"])
    ds = seed2.make_dataset(SIZE, 20)
    models = [seed2.make_model(SIZE) for _ in range(2)]
    seed2.copy_weights(models[0], models[1])
    optimizers = [keras.optimizers.Adam(1e-3) for _ in range(2)]
    for model, optimizer in zip(models, optimizers):
        seed2.built(model, optimizer, ds)
    split = seed2.make_split(ds)
    traces: dict[str, list] = {"handwritten_step": [], "funcsplit_train_step": []}

    def handwritten():
        step = seed2.seed_train_step(models[0], optimizers[0])
        with harness.Stopwatch()("loop") as watch:
            for batch in batches:
                out = step(batch)
            float(out[0])
        traces["handwritten_step"].append({"traces": step.experimental_get_tracing_count()})
        return watch.phases["loop"]

    def funcsplit():
        compiled = fs.compile(split)
        step = fs.keras.train_step(compiled, models[1], optimizers[1])
        with harness.Stopwatch()("loop") as watch:
            for batch in batches:
                out = step(compiled.split(batch))
            float(out.total)
        traces["funcsplit_train_step"].append(
            {
                "traces": step.experimental_get_tracing_count(),
                "split_traces": compiled.split.experimental_get_tracing_count(),
                "loss_traces": compiled.loss.experimental_get_tracing_count(),
            }
        )
        return watch.phases["loop"]

    runs = {"handwritten_step": handwritten, "funcsplit_train_step": funcsplit}
    times = harness.interleaved(runs, rounds=size["rounds"], warmup=size["warmup"], self_timed=True)
    config = f"{len(batches)} batches, {len({len(b['label']) for b in batches})} sizes"
    out = harness.rows(
        CASE, config, times, dict.fromkeys(times, "handwritten_step"), batches=len(batches)
    )
    for r in out:
        r.update(max(traces[r["variant"]], key=lambda t: t["traces"]))
    return out
