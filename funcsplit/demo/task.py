"""The demo's declarations: the split of ``funcsplit_digits``, its input pipeline and model.

One model with four heads learns four tasks from the 8×8 digit image, each with its own loss:

- ``label``: the digit, sparse cross-entropy, only on examples whose label is not missing
  (``route("label", not_equal=-1)``: a ``-1`` never reaches the loss);
- ``coarse``: the digit pair, sparse cross-entropy, weight 0.5;
- ``mask``: the stroke pixels, dice (a batch-level loss);
- ``name``: the digit's English name, spelled by a GRU decoder that reads the name's own
  tokens (teacher forcing), next-token ``sequence_crossentropy`` with padding 0 ignored.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

import funcsplit as fs
from funcsplit.demo import digits

IMAGE = tf.TensorSpec((8, 8, 1), tf.float32)  # the image after `preprocess`


def split_spec(builder: Any) -> fs.SplitSpec:
    """The declared split: element spec from the TFDS builder, inputs, four losses, a drop.

    Examples:
        >>> import funcsplit as fs, tensorflow_datasets as tfds
        >>> builder = digits.FuncsplitDigits(data_dir="/nonexistent")  # info only, no data
        >>> fs.compile(split_spec(builder)).names
        ('label', 'coarse', 'mask', 'name')
    """
    element = fs.tfds.element_spec(builder, replace={"image": IMAGE})
    losses = (
        fs.LossBinding(
            "label",
            "sparse_categorical_crossentropy",
            target="label",
            output="label",
            route=fs.route("label", not_equal=-1),
        ),
        fs.LossBinding(
            "coarse",
            "sparse_categorical_crossentropy",
            target="coarse",
            output="coarse",
            weight=0.5,
        ),
        fs.LossBinding("mask", "dice", target="mask", output="mask"),
        fs.LossBinding("name", "sequence_crossentropy", target="name", output="name"),
    )
    return fs.SplitSpec(
        element, inputs={"image": "image", "name": "name"}, losses=losses, drop=("id",)
    )


def preprocess(example: dict) -> dict:
    """Scales the image to floats in [0, 1] (the ``replace=`` in `split_spec` declares it)."""
    return {**example, "image": tf.cast(example["image"], tf.float32) / 255.0}


def datasets(
    builder: Any, compiled: fs.CompiledSplit, *, batch_size: int = 64, limit: int | None = None
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The train and validation pipelines, split by ``compiled.apply`` (checked first).

    Args:
        builder: the prepared ``funcsplit_digits`` builder.
        compiled: the compiled split.
        batch_size: training batch size.
        limit: use only this many training examples (a quick run).
    """
    train = builder.as_dataset(split="train")
    if limit is not None:
        train = train.take(limit)
    train = train.map(preprocess).cache().shuffle(2048, seed=0).batch(batch_size)
    val = builder.as_dataset(split="test").map(preprocess).cache().batch(256)
    prefetch = tf.data.AUTOTUNE
    return compiled.apply(train).prefetch(prefetch), compiled.apply(val).prefetch(prefetch)


def labelled_fraction(builder: Any, split: str = "train") -> tuple[int, int]:
    """``(labelled, total)`` examples of a split: the ``label`` route keeps the labelled ones."""
    labels = builder.as_dataset(split=split).map(lambda example: example["label"])
    counts = labels.batch(4096).reduce(
        (0, 0),
        lambda acc, x: (acc[0] + tf.reduce_sum(tf.cast(x != -1, tf.int32)), acc[1] + tf.size(x)),
    )
    return int(counts[0]), int(counts[1])


def build_model(num_classes: dict[str, int], *, seed: int = 0) -> keras.Model:
    """A small conv encoder with four heads: label, coarse, mask and the name decoder.

    The layers every task reads (``conv1``, ``conv2``, ``pooled``) are named, so that a
    weighting method that needs the Gram matrix can take them as the shared variables.

    Args:
        num_classes: ``fs.tfds.num_classes(builder)``: sizes the two classifier heads.
        seed: the seed of the initial weights.
    """
    keras.utils.set_random_seed(seed)
    image = keras.Input(IMAGE.shape, name="image")
    tokens = keras.Input((digits.NAME_LENGTH,), dtype="int32", name="name")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(image)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    flat = keras.layers.Flatten()(x)
    pooled = keras.layers.Dense(64, activation="relu", name="pooled")(flat)
    label = keras.layers.Dense(num_classes["label"], activation="softmax", name="label")(pooled)
    coarse = keras.layers.Dense(num_classes["coarse"], activation="softmax", name="coarse")(pooled)
    state = keras.layers.Dense(64, activation="tanh")(pooled)
    embedded = keras.layers.Embedding(len(digits.VOCAB), 16)(tokens)
    decoded = keras.layers.GRU(64, return_sequences=True)(embedded, initial_state=state)
    name = keras.layers.Dense(len(digits.VOCAB), activation="softmax", name="name_probs")(decoded)
    outputs = {"label": label, "coarse": coarse, "mask": mask, "name": name}
    return keras.Model({"image": image, "name": tokens}, outputs, name="digits_multitask")
