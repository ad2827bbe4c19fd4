"""Seed example 1 with funcsplit: a tuple element, two models, two optimizers, one step.

The seed's element is ``(image, label, text)``. It mapped the tuple to a dict and, in the step,
picked ``batch['label']`` for the image classifier's cross-entropy and left a *random
placeholder* for the text loss. Here the tuple is addressed by path (no map needed), the text
model gets a real next-token loss, and each group's loss updates only its own model with its
own optimizer.

Run: ``python examples/seed_1_two_models.py``
"""

from __future__ import annotations

import keras
import tensorflow as tf

import funcsplit as fs


def make_dataset(n: int = 100, batch_size: int = 10, seed: int = 0) -> tf.data.Dataset:
    """The seed's data: random images, labels in [0, 10), token sequences in [0, 100)."""
    images = tf.random.stateless_normal((n, 64, 64, 3), seed=(seed, 1))
    labels = tf.random.stateless_uniform((n,), seed=(seed, 2), maxval=10, dtype=tf.int32)
    texts = tf.random.stateless_uniform((n, 20), seed=(seed, 3), maxval=100, dtype=tf.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels, texts)).batch(batch_size)


class ImageClassifier(keras.Model):
    """The seed's image classifier (softmax probabilities over 10 classes)."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(32, 3, activation="relu")
        self.flat = keras.layers.Flatten()
        self.dense = keras.layers.Dense(10, activation="softmax")

    def call(self, x):
        return self.dense(self.flat(self.conv(x)))


class TextGenerator(keras.Model):
    """The seed's GRU text generator (logits over the vocabulary at each position)."""

    def __init__(self, vocab_size: int = 100, embedding_dim: int = 64, rnn_units: int = 128):
        super().__init__()
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim)
        self.gru = keras.layers.GRU(rnn_units, return_sequences=True, return_state=True)
        self.dense = keras.layers.Dense(vocab_size)

    def call(self, x):
        output, _ = self.gru(self.embedding(x))
        return self.dense(output)


def make_split(dataset: tf.data.Dataset) -> fs.SplitSpec:
    """The whole routing of example 1, declared: paths "0", "1", "2" index the tuple."""
    text_loss = fs.losses.sequence_crossentropy(from_logits=True, pad_id=None)
    return fs.SplitSpec(
        element=fs.ElementSpec.from_dataset(dataset),
        inputs={"image": "0", "text": "2"},
        losses=(
            fs.LossBinding("label", "sparse_categorical_crossentropy", target="1", group="image"),
            fs.LossBinding("text", text_loss, target="2", group="text"),
        ),
    )


def main(steps: int | None = None, n: int = 100) -> list[tuple[float, float]]:
    """Trains both models on ``n`` examples; returns the (image loss, text loss) of each step."""
    keras.utils.set_random_seed(0)
    dataset = make_dataset(n)
    compiled = fs.compile(make_split(dataset))
    models = {"image": ImageClassifier(), "text": TextGenerator()}
    optimizers = {"image": keras.optimizers.Adam(1e-3), "text": keras.optimizers.Adam(1e-3)}
    step = fs.keras.train_step(compiled, models, optimizers)
    history = []
    for batch in compiled.apply(dataset).take(steps or -1):
        result = step(batch)
        history.append((float(result.per_loss["label"]), float(result.per_loss["text"])))
        print(f"Image loss: {history[-1][0]:.4f}, Text loss: {history[-1][1]:.4f}")
    return history


if __name__ == "__main__":
    main()
