"""Case 7: a mixture's throughput (elements/s) against the same sources padded by hand.

Two sources with different structures: digits (an image, a label) and seg (an image, a mask,
a variable-length caption). The baseline is what people write today: one ``map`` per source
that adds the other source's parts as zeros and a task id, then
``tf.data.Dataset.sample_from_datasets`` with the same rates and seed. ``fs.mix`` builds the
same stream from the declaration. Per example (sampled, then ``padded_batch``) and per batch
(each source batched, whole batches sampled). A run drains the pipeline with
``Dataset.reduce``, in C++, so Python does not dilute the cost.
"""

from __future__ import annotations

import tensorflow as tf

import funcsplit as fs
from benchmarks import harness

CASE = "mixture"
SIZES = {
    "tiny": {"elements": 200, "rounds": 1},
    "quick": {"elements": 4000, "rounds": 7},
    "full": {"elements": 8000, "rounds": 21},
}
BATCH = 16
RATES = (0.75, 0.25)
SEED = 0
SIDE = 32


def sources(n: int) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The two sources, ``n`` examples each (held in memory)."""
    images = tf.random.stateless_uniform((n, SIDE, SIDE, 1), seed=(1, 1))
    labels = tf.random.stateless_uniform((n,), seed=(1, 2), maxval=10, dtype=tf.int64)
    digits = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    masks = tf.random.stateless_uniform((n, SIDE, SIDE, 1), seed=(1, 3)) > 0.5
    lengths = tf.random.stateless_uniform((n,), seed=(1, 4), minval=1, maxval=12, dtype=tf.int32)
    captions = tf.RaggedTensor.from_row_lengths(
        tf.ones([tf.reduce_sum(lengths)], tf.int32), lengths
    )
    seg = tf.data.Dataset.from_tensor_slices(
        {"image": images, "mask": masks, "caption": captions}
    ).map(lambda ex: {**ex, "caption": ex["caption"]})
    return digits, seg


def by_hand(digits: tf.data.Dataset, seg: tf.data.Dataset, per_batch: bool) -> tf.data.Dataset:
    """The hand-written mixture: pad each source with the other's parts, add a task id."""

    def rows(ex: dict) -> tf.Tensor | None:
        return tf.shape(ex["image"])[0] if per_batch else None

    def shape(*dims: int, batch: tf.Tensor | None) -> list:
        return [batch, *dims] if per_batch else list(dims)

    def pad_digits(ex: dict) -> dict:
        b = rows(ex)
        return {
            "image": ex["image"],
            "digits": {"label": ex["label"]},
            "seg": {
                "mask": tf.zeros(shape(SIDE, SIDE, 1, batch=b), tf.bool),
                "caption": tf.zeros(shape(0, batch=b), tf.int32),
            },
            "source": tf.fill(shape(batch=b), 0) if per_batch else tf.constant(0),
        }

    def pad_seg(ex: dict) -> dict:
        b = rows(ex)
        return {
            "image": ex["image"],
            "digits": {"label": tf.zeros(shape(batch=b), tf.int64)},
            "seg": {"mask": ex["mask"], "caption": ex["caption"]},
            "source": tf.fill(shape(batch=b), 1) if per_batch else tf.constant(1),
        }

    return tf.data.Dataset.sample_from_datasets(
        [digits.map(pad_digits), seg.map(pad_seg)], weights=list(RATES), seed=SEED
    )


def mixed(digits: tf.data.Dataset, seg: tf.data.Dataset, per_batch: bool) -> tf.data.Dataset:
    """The same stream declared with ``fs.mix``."""
    return fs.mix(
        {"digits": digits, "seg": seg},
        rates={"digits": RATES[0], "seg": RATES[1]},
        align={"image": {"digits": "image", "seg": "image"}},
        per="batch" if per_batch else "example",
        seed=SEED,
    ).dataset


def _drain(ds: tf.data.Dataset):
    count = tf.function(lambda: ds.reduce(tf.constant(0, tf.int64), lambda c, _: c + 1))
    return lambda: int(count())


def pipelines(n: int, per_batch: bool) -> dict[str, tf.data.Dataset]:
    """``{variant: batched stream}``: the mixture by hand and by ``fs.mix``."""
    digits, seg = sources(n)
    if per_batch:
        digits, seg = digits.batch(BATCH), seg.padded_batch(BATCH)
        return {
            "hand_padded": by_hand(digits, seg, True),
            "funcsplit_mix": mixed(digits, seg, True),
        }
    return {
        "hand_padded": by_hand(digits, seg, False).padded_batch(BATCH),
        "funcsplit_mix": mixed(digits, seg, False).padded_batch(BATCH),
    }


def run(mode: str) -> list[dict]:
    """Times the two streams per example and per batch; rows in elements/s too."""
    size = SIZES[mode]
    n = size["elements"]
    out = []
    for per_batch in (False, True):
        config = "per batch" if per_batch else "per example"
        runs = {k: _drain(ds) for k, ds in pipelines(n, per_batch).items()}
        times = harness.interleaved(runs, rounds=size["rounds"], warmup=1)
        baselines = {"hand_padded": None, "funcsplit_mix": "hand_padded"}
        for r in harness.rows(CASE, config, times, baselines, elements=2 * n):
            r["elements_per_s"] = 2 * n / r["median_s"]
            out.append(r)
    return out
