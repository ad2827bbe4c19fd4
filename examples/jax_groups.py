"""Seed example 1 in JAX: a tuple element, two models, two optax optimizers, one split.

The element is ``(image, label, text)``, as in the seed. The same kind of `SplitSpec` as in
``seed_1_two_models.py`` routes the image to an image classifier (sparse cross-entropy on the
label) and the text to a GRU text generator (next-token cross-entropy). The bindings' ``group``
names the parameter groups: ``fs.jax.group_optimizer`` builds one optax optimizer that updates
``params["image"]`` with Adam and ``params["text"]`` with gradient clipping + Adam, and each
group's loss reaches only its own parameters. The data are random (as the seed's): the losses
show the mechanics, not learning.

Run: ``python examples/jax_groups.py``
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf

import funcsplit as fs
import funcsplit.jax as fsj


def make_dataset(n: int = 100, batch_size: int = 10, seed: int = 0) -> tf.data.Dataset:
    """The seed's data: random images, labels in [0, 10), token sequences in [0, 100)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, 64, 64, 3)).astype(np.float32)
    labels = rng.integers(0, 10, n).astype(np.int32)
    texts = rng.integers(0, 100, (n, 20)).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels, texts)).batch(batch_size)


def make_split(dataset: tf.data.Dataset) -> fs.SplitSpec:
    """The routing of example 1: paths "0", "1", "2" index the tuple; groups name the models."""
    return fs.SplitSpec(
        element=fs.ElementSpec.from_dataset(dataset),
        inputs={"image": "0", "text": "2"},
        losses=(
            fs.LossBinding("label", "sparse_categorical_crossentropy", target="1", group="image"),
            fs.LossBinding(
                "text",
                fs.losses.sequence_crossentropy(from_logits=True, pad_id=None),
                target="2",
                group="text",
            ),
        ),
    )


def _dense(key: jax.Array, fan_in: int, fan_out: int) -> dict:
    scale = jnp.sqrt(2.0 / (fan_in + fan_out))
    return {"w": scale * jax.random.normal(key, (fan_in, fan_out)), "b": jnp.zeros(fan_out)}


def init_image_classifier(key: jax.Array, classes: int = 10) -> dict:
    """Conv2D(32, 3, relu) -> Flatten -> Dense(classes, softmax), as the seed's classifier."""
    k1, k2 = jax.random.split(key)
    conv = 0.1 * jax.random.normal(k1, (3, 3, 3, 32))
    return {"conv": {"w": conv, "b": jnp.zeros(32)}, "dense": _dense(k2, 62 * 62 * 32, classes)}


def image_classifier(params: dict, images: jax.Array) -> jax.Array:
    """Class probabilities ``[B, classes]``."""
    x = jax.lax.conv_general_dilated(
        images, params["conv"]["w"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    x = jax.nn.relu(x + params["conv"]["b"]).reshape(images.shape[0], -1)
    return jax.nn.softmax(x @ params["dense"]["w"] + params["dense"]["b"])


def init_text_generator(key: jax.Array, vocab: int = 100, embed: int = 64, units: int = 128):
    """Embedding -> GRU(units) -> Dense(vocab), as the seed's text generator."""
    keys = jax.random.split(key, 4)
    return {
        "embedding": 0.05 * jax.random.normal(keys[0], (vocab, embed)),
        "gru_x": _dense(keys[1], embed, 3 * units),
        "gru_h": _dense(keys[2], units, 3 * units),
        "out": _dense(keys[3], units, vocab),
    }


def text_generator(params: dict, tokens: jax.Array) -> jax.Array:
    """Logits ``[B, T, vocab]`` at each position."""
    x = params["embedding"][tokens]
    units = params["gru_h"]["w"].shape[0]

    def cell(h: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        xz, xr, xn = jnp.split(x_t @ params["gru_x"]["w"] + params["gru_x"]["b"], 3, -1)
        hz, hr, hn = jnp.split(h @ params["gru_h"]["w"] + params["gru_h"]["b"], 3, -1)
        z, r = jax.nn.sigmoid(xz + hz), jax.nn.sigmoid(xr + hr)
        h = (1 - z) * jnp.tanh(xn + r * hn) + z * h
        return h, h

    h0 = jnp.zeros((tokens.shape[0], units))
    _, hs = jax.lax.scan(cell, h0, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(hs, 0, 1) @ params["out"]["w"] + params["out"]["b"]


def main(steps: int | None = None) -> list[tuple[float, float]]:
    """Trains both models; returns the (image loss, text loss) of each step."""
    dataset = make_dataset()
    compiled = fsj.compile(make_split(dataset))
    image_key, text_key = jax.random.split(jax.random.key(0))
    params = {"image": init_image_classifier(image_key), "text": init_text_generator(text_key)}
    optimizer = fsj.group_optimizer(
        compiled,
        {
            "image": optax.adam(1e-3),
            "text": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
        },
    )
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        inputs, targets, weights = compiled.split(batch)

        def loss(params):
            predictions = {
                "image": image_classifier(params["image"], inputs["image"]),
                "text": text_generator(params["text"], inputs["text"]),
            }
            result = compiled.loss(targets, predictions, weights)
            return result.total, result

        (_, result), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, result

    history = []
    for batch in dataset.take(steps or -1).as_numpy_iterator():
        params, opt_state, result = step(params, opt_state, batch)
        history.append((float(result.per_loss["label"]), float(result.per_loss["text"])))
        print(f"Image loss: {history[-1][0]:.4f}, Text loss: {history[-1][1]:.4f}")
    return history


if __name__ == "__main__":
    main()
