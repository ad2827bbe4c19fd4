"""Case 1: split throughput in a tf.data pipeline (elements/s).

The seed's Example 3 element, a tuple ``(image, text, label_dict)``, restructured by the
seed's hand-written ``map_function_nested`` (the baseline) and by ``compiled.apply``; beside
them the same pipeline with no map at all (the floor). The map runs per element before
``batch`` (unbatched) or per batch after it (batched), sequentially or with
``num_parallel_calls=AUTOTUNE``. A run drains the pipeline with ``Dataset.reduce``, in C++, so
Python does not dilute the map's cost.
"""

from __future__ import annotations

import tensorflow as tf

import funcsplit as fs
from benchmarks import harness

CASE = "pipeline"
ALL = tuple((b, p) for b in (False, True) for p in ("sequential", "autotune"))
SIZES = {
    "tiny": {"elements": 100, "rounds": 1, "settings": ((False, "autotune"), (True, "sequential"))},
    "quick": {"elements": 2000, "rounds": 5, "settings": ALL},
    "full": {"elements": 4000, "rounds": 21, "settings": ALL},
}
BATCH = 10


def map_function_nested(image, text, label_dict):
    """The seed's hand-written map (Example 3)."""
    return {"image": image, "text": text, "label_dict": label_dict}


def source(n: int) -> tf.data.Dataset:
    """The seed's Example 3 data, as the tuple element the article starts from."""
    images = tf.random.stateless_normal((n, 64, 64, 3), seed=(0, 1))
    texts = tf.random.stateless_uniform((n, 20), seed=(0, 2), maxval=100, dtype=tf.int32)
    labels = {
        "category_1": tf.random.stateless_uniform((n,), seed=(0, 3), maxval=10, dtype=tf.int32),
        "category_2": tf.random.stateless_uniform((n,), seed=(0, 4), maxval=5, dtype=tf.int32),
    }
    return tf.data.Dataset.from_tensor_slices((images, texts, labels))


def make_split(ds: tf.data.Dataset) -> fs.SplitSpec:
    """Image -> the model; the two nested labels -> two cross-entropies; the text dropped."""
    return fs.SplitSpec(
        element=fs.ElementSpec.from_dataset(ds),
        inputs="0",
        losses=(
            fs.LossBinding("category_1", "sparse_categorical_crossentropy", "2/category_1", "0"),
            fs.LossBinding("category_2", "sparse_categorical_crossentropy", "2/category_2", "1"),
        ),
        drop=("1",),
    )


def _drain(ds: tf.data.Dataset):
    """One pass over ``ds`` in C++: a traced ``reduce`` that counts the elements."""
    count = tf.function(lambda: ds.reduce(tf.constant(0, tf.int64), lambda c, *_: c + 1))
    return lambda: int(count())


def _pipelines(base: tf.data.Dataset, batched: bool, parallel: int | None) -> dict:
    def pipeline(mapped):
        if batched:
            return mapped(base.batch(BATCH))
        return mapped(base).batch(BATCH)

    batched_compiled = fs.compile(make_split(base.batch(BATCH)))
    unbatched_compiled = fs.compile(make_split(base))
    compiled = batched_compiled if batched else unbatched_compiled
    return {
        "no_map": pipeline(lambda ds: ds),
        "seed_map": pipeline(lambda ds: ds.map(map_function_nested, num_parallel_calls=parallel)),
        "funcsplit_apply": pipeline(lambda ds: compiled.apply(ds, num_parallel_calls=parallel)),
    }


def run(mode: str) -> list[dict]:
    """Times the three pipelines per (batched, parallel) setting; rows in elements/s too."""
    size = SIZES[mode]
    n = size["elements"]
    base = source(n)
    out = []
    for batched, parallel_name in size["settings"]:
        parallel = tf.data.AUTOTUNE if parallel_name == "autotune" else None
        config = f"{'batched' if batched else 'unbatched'}, {parallel_name}"
        runs = {k: _drain(ds) for k, ds in _pipelines(base, batched, parallel).items()}
        times = harness.interleaved(runs, rounds=size["rounds"], warmup=1)
        baselines = {k: "seed_map" for k in runs}
        for r in harness.rows(CASE, config, times, baselines, elements=n):
            r["elements_per_s"] = n / r["median_s"]
            out.append(r)
    return out
