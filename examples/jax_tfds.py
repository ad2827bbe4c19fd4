"""TFDS to JAX: read MNIST with ``tfds.as_numpy``, split with funcsplit, train with optax.

Only one example in four keeps its label (the others get ``-1``, a missing-label sentinel, as
in semi-supervised training); every example feeds a reconstruction loss. funcsplit routes the
labelled examples to the cross-entropy (the ``-1`` labels never reach it) and every example to
the reconstruction, averaging each over the examples it received.

``tfds.testing.mock_data`` stands in for the download (no network needed); pass
``mock=False`` to read the real, prepared dataset.

Run: ``python examples/jax_tfds.py``
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import optax
import tensorflow as tf
import tensorflow_datasets as tfds

import funcsplit as fs
import funcsplit.jax as fsj


def _prepare(index: tf.Tensor, example: dict) -> dict:
    image = tf.cast(example["image"], tf.float32) / 255.0
    label = tf.where(index % 4 == 0, example["label"], tf.constant(-1, tf.int64))
    return {"image": image, "label": label}


def load(batch_size: int = 32, examples: int = 256, mock: bool = True) -> tf.data.Dataset:
    """MNIST's train split, a label kept on one example in four, batched."""
    context = (
        tfds.testing.mock_data(num_examples=examples, policy=tfds.testing.MockPolicy.USE_CODE)
        if mock
        else contextlib.nullcontext()
    )
    with context:
        ds = tfds.load("mnist", split="train", shuffle_files=False)
    return ds.take(examples).enumerate().map(_prepare).batch(batch_size, drop_remainder=True)


def make_split(ds: tf.data.Dataset) -> fs.SplitSpec:
    """The image is the input; the label (when present) and the image itself are targets."""
    return fs.SplitSpec(
        element=fs.ElementSpec.from_dataset(ds, batched=True),  # fixed batch size 32
        inputs="image",
        losses=(
            fs.LossBinding(
                "label",
                fs.losses.sparse_categorical_crossentropy(from_logits=True),
                target="label",
                output="logits",
                route=fs.route("label", not_equal=-1),
            ),
            fs.LossBinding("pixels", "mse", target="image", output="pixels", weight=10.0),
        ),
    )


def init(key: jax.Array, hidden: int = 64) -> dict:
    """A small MLP encoder with a classifier head and a decoder head."""
    k1, k2, k3 = jax.random.split(key, 3)
    normal = lambda k, shape: jax.random.normal(k, shape) / jnp.sqrt(shape[0])
    return {
        "encoder": normal(k1, (784, hidden)),
        "classifier": normal(k2, (hidden, 10)),
        "decoder": normal(k3, (hidden, 784)),
    }


def model(params: dict, images: jax.Array) -> dict:
    """``{"logits": [B, 10], "pixels": [B, 28, 28, 1]}``."""
    h = jax.nn.relu(images.reshape(images.shape[0], -1) @ params["encoder"])
    pixels = jax.nn.sigmoid(h @ params["decoder"]).reshape(images.shape)
    return {"logits": h @ params["classifier"], "pixels": pixels}


def main(steps: int = 8, mock: bool = True) -> list[dict]:
    """Trains for ``steps`` batches; returns each step's total, per-loss values and counts."""
    ds = load(mock=mock)
    compiled = fsj.compile(make_split(ds))
    print(compiled.describe())
    optimizer = optax.adam(3e-3)
    params = init(jax.random.key(0))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        inputs, targets, weights = compiled.split(batch)

        def loss(params):
            result = compiled.loss(targets, model(params, inputs), weights)
            return result.total, result

        (_, result), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, result

    history = []
    for batch in tfds.as_numpy(ds.take(steps)):
        params, opt_state, result = step(params, opt_state, batch)
        history.append(jax.tree.map(float, result._asdict()))
        print(
            f"total {history[-1]['total']:.4f}  label {history[-1]['per_loss']['label']:.4f} "
            f"({int(history[-1]['counts']['label'])} labelled)  "
            f"pixels {history[-1]['per_loss']['pixels']:.4f}"
        )
    return history


if __name__ == "__main__":
    main()
