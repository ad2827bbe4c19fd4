"""Seed example 3 with funcsplit: a nested element, one model, two heads, two cross-entropies.

The element is ``{image, text, label_dict: {category_1, category_2}}``. The seed's model never
reads ``text``; hand-written code loses it silently, funcsplit's strict mode makes you say so
(``drop=("text",)``).

Run: ``python examples/seed_3_nested_labels.py``
"""

from __future__ import annotations

import keras
import tensorflow as tf

import funcsplit as fs


def make_dataset(n: int = 100, batch_size: int = 10, seed: int = 0) -> tf.data.Dataset:
    """The seed's data as a nested dict dataset."""
    rng = tf.random.Generator.from_seed(seed)
    labels = {
        "category_1": rng.uniform((n,), maxval=10, dtype=tf.int32),
        "category_2": rng.uniform((n,), maxval=5, dtype=tf.int32),
    }
    texts = rng.uniform((n, 20), maxval=100, dtype=tf.int32)
    data = {"image": rng.normal((n, 64, 64, 3)), "text": texts, "label_dict": labels}
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


class ComplexModel(keras.Model):
    """The seed's model: one trunk, two softmax heads (10 and 5 classes)."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(32, 3, activation="relu")
        self.flat = keras.layers.Flatten()
        self.dense_category1 = keras.layers.Dense(10, activation="softmax")
        self.dense_category2 = keras.layers.Dense(5, activation="softmax")

    def call(self, x):
        x = self.flat(self.conv(x))
        return self.dense_category1(x), self.dense_category2(x)


def make_split(dataset: tf.data.Dataset) -> fs.SplitSpec:
    """Each nested label -> its head; the unused text is dropped on purpose."""
    scce = "sparse_categorical_crossentropy"
    return fs.SplitSpec(
        element=fs.ElementSpec.from_dataset(dataset),
        inputs="image",
        losses=(
            fs.LossBinding("category_1", scce, target="label_dict/category_1", output="0"),
            fs.LossBinding("category_2", scce, target="label_dict/category_2", output="1"),
        ),
        drop=("text",),
    )


def main(epochs: int = 1, n: int = 100) -> dict[str, list[float]]:
    """Trains on ``n`` examples with ``fs.keras.RoutedModel(...).fit``; returns the logs."""
    keras.utils.set_random_seed(0)
    dataset = make_dataset(n)
    compiled = fs.compile(make_split(dataset))
    print(compiled.describe())
    routed = fs.keras.RoutedModel(ComplexModel(), compiled)
    routed.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = routed.fit(compiled.apply(dataset), epochs=epochs, verbose=2)
    return history.history


if __name__ == "__main__":
    main()
