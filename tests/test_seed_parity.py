"""funcsplit reproduces the seed article's three examples: same losses, same gradients.

Each test runs the seed's hand-written step (its restructuring map and its loss code, copied
from the article, with the two documented fixes: a real next-token text loss in example 1 and
"same" padding in example 2's model) and funcsplit's split + loss on the same weights and batch.
"""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import funcsplit as fs

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_grads_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(
            tf.convert_to_tensor(x), tf.convert_to_tensor(y), rtol=1e-5, atol=1e-7
        )


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1)


def test_example_1_two_models_tuple_element():
    ex = load("seed_1_two_models")
    dataset = ex.make_dataset(n=20, batch_size=10)
    image_model, text_model = ex.ImageClassifier(), ex.TextGenerator()
    raw = next(iter(dataset))

    # The seed's hand-written code: map the tuple to a dict, pick the parts, two losses.
    def map_function_tuple(image, label, text):
        return {"image": image, "label": label, "text": text}

    batch = map_function_tuple(*raw)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy()
    next_token = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape(persistent=True) as tape:
        image_output = image_model(batch["image"])
        text_output = text_model(batch["text"])
        image_loss = cross_entropy(batch["label"], image_output)
        text_loss = next_token(batch["text"][:, 1:], text_output[:, :-1])
    seed_image_grads = tape.gradient(image_loss, image_model.trainable_variables)
    seed_text_grads = tape.gradient(text_loss, text_model.trainable_variables)

    compiled = fs.compile(ex.make_split(dataset))
    with tf.GradientTape(persistent=True) as tape:
        inputs, targets, weights = compiled.split(raw)
        predictions = {"image": image_model(inputs["image"]), "text": text_model(inputs["text"])}
        result = compiled.loss(targets, predictions, weights)
    fs_image_grads = tape.gradient(result.total, image_model.trainable_variables)
    fs_text_grads = tape.gradient(result.total, text_model.trainable_variables)

    np.testing.assert_allclose(result.per_loss["label"], image_loss, rtol=1e-6)
    np.testing.assert_allclose(result.per_loss["text"], text_loss, rtol=1e-6)
    np.testing.assert_allclose(result.total, image_loss + text_loss, rtol=1e-6)
    assert_grads_equal(fs_image_grads, seed_image_grads)
    assert_grads_equal(fs_text_grads, seed_text_grads)


def test_example_2_label_and_mask_heads():
    ex = load("seed_2_label_and_mask")
    dataset = ex.make_dataset(n=20, batch_size=10)
    model = ex.MultiOutputModel()
    batch = next(iter(dataset))

    cross_entropy = keras.losses.SparseCategoricalCrossentropy()

    def dice_loss(y_true, y_pred):  # the seed's dice, verbatim
        y_true = tf.cast(y_true, dtype=tf.float32)
        numerator = 2 * tf.reduce_sum(y_true * y_pred)
        denominator = tf.reduce_sum(y_true + y_pred)
        return 1 - numerator / denominator

    with tf.GradientTape() as tape:
        label_output, mask_output = model(batch["image"])
        label_loss = cross_entropy(batch["label"], label_output)
        mask_loss = dice_loss(tf.cast(batch["mask"], dtype=tf.float32), mask_output)
        total_loss = label_loss + mask_loss
    seed_grads = tape.gradient(total_loss, model.trainable_variables)

    compiled = fs.compile(ex.make_split(dataset))
    with tf.GradientTape() as tape:
        inputs, targets, weights = compiled.split(batch)
        result = compiled.loss(targets, model(inputs), weights)
    fs_grads = tape.gradient(result.total, model.trainable_variables)

    np.testing.assert_allclose(result.per_loss["label"], label_loss, rtol=1e-6)
    np.testing.assert_allclose(result.per_loss["mask"], mask_loss, rtol=1e-6)
    np.testing.assert_allclose(result.total, total_loss, rtol=1e-6)
    assert_grads_equal(fs_grads, seed_grads)


def test_example_3_nested_labels():
    ex = load("seed_3_nested_labels")
    dataset = ex.make_dataset(n=20, batch_size=10)
    model = ex.ComplexModel()
    batch = next(iter(dataset))

    cross_entropy = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        category_1_output, category_2_output = model(batch["image"])
        category_1_loss = cross_entropy(batch["label_dict"]["category_1"], category_1_output)
        category_2_loss = cross_entropy(batch["label_dict"]["category_2"], category_2_output)
        total_loss = category_1_loss + category_2_loss
    seed_grads = tape.gradient(total_loss, model.trainable_variables)

    compiled = fs.compile(ex.make_split(dataset))
    with tf.GradientTape() as tape:
        inputs, targets, weights = compiled.split(batch)
        result = compiled.loss(targets, model(inputs), weights)
    fs_grads = tape.gradient(result.total, model.trainable_variables)

    np.testing.assert_allclose(result.per_loss["category_1"], category_1_loss, rtol=1e-6)
    np.testing.assert_allclose(result.per_loss["category_2"], category_2_loss, rtol=1e-6)
    np.testing.assert_allclose(result.total, total_loss, rtol=1e-6)
    assert_grads_equal(fs_grads, seed_grads)


def test_example_3_strict_mode_catches_the_unused_text():
    ex = load("seed_3_nested_labels")
    split = ex.make_split(ex.make_dataset(n=10))
    import attrs

    with pytest.raises(fs.SpecError) as info:
        fs.compile(attrs.evolve(split, drop=()))
    assert info.value.paths == ("text",)


def test_example_2_seed_mask_head_defect_is_caught_by_the_loss():
    """The seed's valid-padded mask head gives 60x60 masks for 64x64 targets."""
    ex = load("seed_2_label_and_mask")
    dataset = ex.make_dataset(n=10, batch_size=5)
    compiled = fs.compile(ex.make_split(dataset))
    inputs, targets, weights = compiled.split(next(iter(dataset)))
    seed_mask_head = keras.Sequential(
        [keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Conv2D(1, 3)]
    )
    labels = tf.nn.softmax(tf.zeros((5, 10)))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        compiled.loss(targets, (labels, seed_mask_head(inputs)), weights)
