"""Case 4: compile, trace and step time against the number of leaves / bindings (8 to 1024).

An element of ``N`` target leaves ``y0000…`` (``[B, 1]``) and one input; ``N`` mse bindings,
one per leaf and output. funcsplit: ``fs.compile`` (resolve and build the functions), then the
first trace of ``split`` and ``loss``. Hand-written: a ``map`` function with the same output
(traced with an input signature, as ``Dataset.map`` does) and a ``@tf.function`` loss that
sums ``keras.losses.MeanSquaredError()`` over the leaves (the seed's style). Every timed run
builds fresh functions, so each run pays the whole first trace. The step is a warm call of a
traced function that returns the total (``compiled.loss`` inside it, as in a training step).

``tf_function_floor`` is a reference, not a baseline: fresh ``tf.function``s with exactly the
arguments and outputs of ``split`` and ``loss`` (``N`` targets, ``N`` predictions, ``N``
values and ``N`` counts) that compute nothing. Tracing them costs what TensorFlow charges for
the placeholders and returned tensors alone; no split and loss with that signature trace
faster.
"""

from __future__ import annotations

import keras
import tensorflow as tf

import funcsplit as fs
from benchmarks import harness

CASE = "scale"
SIZES = {
    "tiny": {"counts": (8,), "rounds": 1, "calls": 5, "step_rounds": 1},
    "quick": {"counts": (8, 64, 512), "rounds": 2, "calls": 10, "step_rounds": 3},
    "full": {
        "counts": (8, 16, 32, 64, 128, 256, 512, 1024),
        "rounds": 5,
        "calls": 20,
        "step_rounds": 11,
    },
}
BATCH = 16


def _key(i: int) -> str:
    return f"y{i:04d}"


def make_split(n: int) -> fs.SplitSpec:
    """``N`` mse bindings over an element of one input and ``N`` target leaves."""
    structure = {"x": fs.Leaf(tf.float32, (None, 4))}
    structure.update({_key(i): fs.Leaf(tf.float32, (None, 1)) for i in range(n)})
    return fs.SplitSpec(
        element=fs.ElementSpec.from_structure(structure),
        inputs="x",
        losses=tuple(fs.LossBinding(f"b{i}", "mse", _key(i), _key(i)) for i in range(n)),
    )


def make_data(n: int) -> tuple[dict, dict]:
    """A batch of the element and the model's predictions (``{y…: [B, 1]}``)."""
    batch = {"x": tf.ones((BATCH, 4))}
    batch.update({_key(i): tf.fill((BATCH, 1), float(i % 7)) for i in range(n)})
    predictions = {_key(i): tf.fill((BATCH, 1), 1.0) for i in range(n)}
    return batch, predictions


def handwritten(n: int, signature) -> tuple:
    """The hand-written map (same output as ``split``) and loss, as fresh ``tf.function``s."""
    mse = keras.losses.MeanSquaredError()

    def split(batch):
        return batch["x"], {f"b{i}": batch[_key(i)] for i in range(n)}, {}

    def loss(batch, predictions):
        total = 0.0
        for i in range(n):
            total += mse(batch[_key(i)], predictions[_key(i)])
        return total

    return tf.function(split, input_signature=[signature]), tf.function(loss)


def _trace_runs(n: int) -> dict:
    split = make_split(n)
    batch, predictions = make_data(n)
    signature = split.element.type_spec(relax_batch=True)
    targets = {f"b{i}": batch[_key(i)] for i in range(n)}

    def funcsplit_run():
        watch = harness.Stopwatch()
        with watch("compile"):
            compiled = fs.compile(split)
        with watch("trace"):
            compiled.split.get_concrete_function()
            compiled.loss.get_concrete_function(targets, predictions, {})
        return watch.phases

    def handwritten_run():
        watch = harness.Stopwatch()
        with watch("trace"):
            hand_split, hand_loss = handwritten(n, signature)
            hand_split.get_concrete_function()
            hand_loss.get_concrete_function(batch, predictions)
        return watch.phases

    names = [b.name for b in split.losses]

    def floor_run():
        watch = harness.Stopwatch()
        with watch("trace"):
            floor_split = tf.function(
                lambda b: (b["x"], {f"b{i}": b[_key(i)] for i in range(n)}, {}),
                input_signature=[signature],
            )

            def floor_loss(targets, predictions, weights):
                value, count = tf.zeros([]), tf.zeros([], tf.int32)
                return value, dict.fromkeys(names, value), dict.fromkeys(names, count)

            floor_split.get_concrete_function()
            tf.function(floor_loss).get_concrete_function(targets, predictions, {})
        return watch.phases

    return {"funcsplit": funcsplit_run, "handwritten": handwritten_run, "floor": floor_run}


def _step_runs(n: int, calls: int) -> dict:
    split = make_split(n)
    batch, predictions = make_data(n)
    compiled = fs.compile(split)
    _, targets, weights = compiled.split(batch)
    _, hand_loss = handwritten(n, split.element.type_spec(relax_batch=True))

    def repeat(fn, *args):
        def run():
            for _ in range(calls):
                out = fn(*args)
            return out

        return run

    # As in a training step: the loss called inside a traced function that uses the total.
    total = tf.function(lambda *args: compiled.loss(*args).total)
    return {
        "handwritten_step": repeat(hand_loss, batch, predictions),
        "funcsplit_step": repeat(total, targets, predictions, weights),
    }


def one(n: int, rounds: int, calls: int, step_rounds: int) -> list[dict]:
    """Compile / trace rows and step rows for ``N`` bindings."""
    phases = harness.interleaved(_trace_runs(n), rounds=rounds, warmup=1, self_timed=True)
    compile_s = [p["compile"] for p in phases["funcsplit"]]
    trace_s = [p["trace"] for p in phases["funcsplit"]]
    hand_s = [p["trace"] for p in phases["handwritten"]]
    floor_s = [p["trace"] for p in phases["floor"]]
    both_s = [c + t for c, t in zip(compile_s, trace_s)]
    config = f"{n} bindings"
    extra = {"bindings": n}
    hand = "handwritten_trace"
    out = [
        harness.row(CASE, config, "funcsplit_compile", None, compile_s, None, **extra),
        harness.row(CASE, config, hand, hand, hand_s, hand_s, **extra),
        harness.row(CASE, config, "funcsplit_trace", hand, trace_s, hand_s, **extra),
        harness.row(CASE, config, "funcsplit_compile_and_trace", hand, both_s, hand_s, **extra),
        harness.row(CASE, config, "tf_function_floor", None, floor_s, None, **extra),
    ]
    out[-2]["ratio_to_floor"] = harness.paired_ratio(both_s, floor_s)
    steps = harness.interleaved(_step_runs(n, calls), rounds=step_rounds, warmup=1)
    baselines = dict.fromkeys(steps, "handwritten_step")
    out += harness.rows(CASE, config, steps, baselines, calls=calls, **extra)
    return out


def run(mode: str) -> list[dict]:
    """Every ``N`` of the mode."""
    size = SIZES[mode]
    args = (size["rounds"], size["calls"], size["step_rounds"])
    return [r for n in size["counts"] for r in one(n, *args)]
