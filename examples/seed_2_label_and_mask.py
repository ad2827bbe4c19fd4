"""Seed example 2 with funcsplit: a dict element, one model with two heads, CE + dice.

The seed's element is ``{image, label, mask}``; the model returns ``(label_probs, mask)``.
Its mask head used valid-padded convolutions, so the predicted mask (60x60) did not match the
64x64 target mask; here both convolutions use ``padding="same"`` (the one change to the model).
The dice loss is funcsplit's registry ``"dice"`` (Keras's dice): a batch-level loss.

Run: ``python examples/seed_2_label_and_mask.py``
"""

from __future__ import annotations

import keras
import tensorflow as tf

import funcsplit as fs


def make_dataset(n: int = 100, batch_size: int = 10, seed: int = 0) -> tf.data.Dataset:
    """The seed's data as a dict dataset: images, labels in [0, 10), binary masks."""
    images = tf.random.stateless_normal((n, 64, 64, 3), seed=(seed, 1))
    labels = tf.random.stateless_uniform((n,), seed=(seed, 2), maxval=10, dtype=tf.int32)
    masks = tf.random.stateless_uniform((n, 64, 64, 1), seed=(seed, 3), maxval=2, dtype=tf.int32)
    data = {"image": images, "label": labels, "mask": masks}
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


class MultiOutputModel(keras.Model):
    """The seed's two-headed model, with "same" padding so the mask head fits the mask."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(32, 3, activation="relu", padding="same")
        self.flat = keras.layers.Flatten()
        self.dense_label = keras.layers.Dense(10, activation="softmax")
        self.conv_mask = keras.layers.Conv2D(1, 3, activation="sigmoid", padding="same")

    def call(self, x):
        x = self.conv(x)
        return self.dense_label(self.flat(x)), self.conv_mask(x)


def make_split(dataset: tf.data.Dataset) -> fs.SplitSpec:
    """Label -> first output (sparse CE), mask -> second output (dice)."""
    return fs.SplitSpec(
        element=fs.ElementSpec.from_dataset(dataset),
        inputs="image",
        losses=(
            fs.LossBinding("label", "sparse_categorical_crossentropy", target="label", output="0"),
            fs.LossBinding("mask", "dice", target="mask", output="1"),
        ),
    )


def main(epochs: int = 1, n: int = 100) -> dict[str, list[float]]:
    """Trains on ``n`` examples with ``fs.keras.RoutedModel(...).fit``; returns the logs."""
    keras.utils.set_random_seed(0)
    dataset = make_dataset(n)
    compiled = fs.compile(make_split(dataset))
    routed = fs.keras.RoutedModel(MultiOutputModel(), compiled)
    routed.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = routed.fit(compiled.apply(dataset), epochs=epochs, verbose=2)
    return history.history


if __name__ == "__main__":
    main()
