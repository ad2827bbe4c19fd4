"""The seed's Example 2 at two sizes: data, model, the seed's hand-written step and the split.

``small`` is the article's own size (64x64 images, 32 filters, batches of 10); ``tiny`` shrinks
the model so that the per-step overhead around it is what gets measured. The model is the
seed's two-headed model with ``padding="same"`` (as in ``examples/seed_2_label_and_mask.py``),
written functionally with named outputs so that Keras ``compile(loss={...})`` can key by name.
"""

from __future__ import annotations

import keras
import tensorflow as tf

import funcsplit as fs

SIZES = {
    "small": {"image": 64, "filters": 32, "batch": 10},
    "tiny": {"image": 8, "filters": 4, "batch": 10},
}


def make_dataset(size: str, n: int, *, batch: int | None = None) -> tf.data.Dataset:
    """The seed's ``{image, label, mask}`` dict dataset, batched (default: the size's batch)."""
    s = SIZES[size]["image"]
    data = {
        "image": tf.random.stateless_normal((n, s, s, 3), seed=(2, 1)),
        "label": tf.random.stateless_uniform((n,), seed=(2, 2), maxval=10, dtype=tf.int32),
        "mask": tf.random.stateless_uniform((n, s, s, 1), seed=(2, 3), maxval=2, dtype=tf.int32),
    }
    return tf.data.Dataset.from_tensor_slices(data).batch(batch or SIZES[size]["batch"])


def make_model(size: str, seed: int = 0) -> keras.Model:
    """The seed's two-headed model (conv -> label head, conv -> mask head), dict outputs."""
    s, filters = SIZES[size]["image"], SIZES[size]["filters"]
    keras.utils.set_random_seed(seed)
    image = keras.Input((s, s, 3), name="image")
    x = keras.layers.Conv2D(filters, 3, activation="relu", padding="same")(image)
    label = keras.layers.Dense(10, activation="softmax", name="label")(keras.layers.Flatten()(x))
    mask = keras.layers.Conv2D(1, 3, activation="sigmoid", padding="same", name="mask")(x)
    return keras.Model(image, {"label": label, "mask": mask})


def make_split(ds: tf.data.Dataset) -> fs.SplitSpec:
    """Label -> sparse cross-entropy on the label head, mask -> dice on the mask head."""
    return fs.SplitSpec(
        element=fs.ElementSpec.from_dataset(ds),
        inputs="image",
        losses=(
            fs.LossBinding("label", "sparse_categorical_crossentropy", "label", "label"),
            fs.LossBinding("mask", "dice", "mask", "mask"),
        ),
    )


def dice_loss(y_true, y_pred):
    """The seed's hand-written dice loss."""
    y_true = tf.cast(y_true, dtype=tf.float32)
    numerator = 2 * tf.reduce_sum(y_true * y_pred)
    denominator = tf.reduce_sum(y_true + y_pred)
    return 1 - numerator / denominator


def seed_train_step(model: keras.Model, optimizer, *, jit_compile: bool = False, signature=None):
    """The seed's hand-written ``train_step`` (Example 2) as a ``tf.function``."""
    cross_entropy = keras.losses.SparseCategoricalCrossentropy()

    def train_step(batch):
        with tf.GradientTape() as tape:
            outputs = model(batch["image"], training=True)
            label_loss = cross_entropy(batch["label"], outputs["label"])
            mask_loss = dice_loss(tf.cast(batch["mask"], dtype=tf.float32), outputs["mask"])
            total_loss = label_loss + mask_loss
        gradients = tape.gradient(total_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return label_loss, mask_loss

    return tf.function(train_step, jit_compile=jit_compile, input_signature=signature)


def built(model: keras.Model, optimizer, ds: tf.data.Dataset):
    """Builds the model and the optimizer's slots eagerly (no variables created in a trace)."""
    model(next(iter(ds))["image"])
    optimizer.build(model.trainable_variables)
    return model, optimizer


def copy_weights(source: keras.Model, *targets: keras.Model) -> None:
    """Gives every model the same starting weights."""
    for target in targets:
        target.set_weights(source.get_weights())
