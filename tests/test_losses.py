"""Tests of the loss registry and `funcsplit.losses` constructors against Keras and NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import funcsplit as fs
from funcsplit._src import registry as losses_lib

RNG = np.random.default_rng(3)
B, C = 5, 4


def probs(shape):
    return tf.nn.softmax(RNG.normal(size=shape).astype(np.float32)).numpy()


CASES = {
    "sparse_categorical_crossentropy": (
        RNG.integers(0, C, B).astype(np.int32),
        probs((B, C)),
        keras.losses.SparseCategoricalCrossentropy(reduction=None),
    ),
    "categorical_crossentropy": (
        np.eye(C, dtype=np.float32)[RNG.integers(0, C, B)],
        probs((B, C)),
        keras.losses.CategoricalCrossentropy(reduction=None),
    ),
    "binary_crossentropy": (
        RNG.integers(0, 2, (B, 3)).astype(bool),
        RNG.uniform(0.05, 0.95, (B, 3)).astype(np.float32),
        keras.losses.BinaryCrossentropy(reduction=None),
    ),
    "mse": (
        RNG.normal(size=(B, 3)),
        RNG.normal(size=(B, 3)).astype(np.float32),
        keras.losses.MeanSquaredError(reduction=None),
    ),
    "mae": (
        RNG.normal(size=(B, 3)),
        RNG.normal(size=(B, 3)).astype(np.float32),
        keras.losses.MeanAbsoluteError(reduction=None),
    ),
    "huber": (
        RNG.normal(size=(B, 3)) * 3,
        RNG.normal(size=(B, 3)).astype(np.float32),
        keras.losses.Huber(reduction=None),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_registry_values_equal_keras_unreduced(name):
    y_true, y_pred, reference = CASES[name]
    ours = losses_lib.get(name)(y_true, y_pred)
    np.testing.assert_allclose(ours, reference(y_true, y_pred), rtol=1e-6)
    assert ours.shape == (B,)


def test_sparse_ce_from_logits_option():
    labels = RNG.integers(0, C, B)
    logits = RNG.normal(size=(B, C)).astype(np.float32)
    ours = fs.losses.sparse_categorical_crossentropy(from_logits=True)(labels, logits)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(ours, -log_softmax[np.arange(B), labels], rtol=1e-5)


def test_huber_delta_option():
    y, p = np.array([[3.0]]), np.array([[0.0]], np.float32)
    value = fs.losses.huber(delta=2.0)(y, p)
    np.testing.assert_allclose(value, [2.0 * 3.0 - 0.5 * 2.0**2], rtol=1e-6)


def test_dice_is_keras_dice():
    y = RNG.integers(0, 2, (B, 4, 4, 1))
    p = RNG.uniform(size=(B, 4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(fs.losses.dice()(y, p), keras.losses.dice(y, p), rtol=1e-6)
    assert fs.losses.dice().batch_level


def test_sequence_crossentropy_is_next_token_with_padding_ignored():
    tokens = np.array([[5, 3, 2, 0, 0], [1, 2, 3, 4, 6]], np.int32)
    logits = RNG.normal(size=(2, 5, 8)).astype(np.float32)
    ours = fs.losses.sequence_crossentropy(from_logits=True)(tokens, logits).numpy()
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = []
    for b in range(2):
        terms = [-log_softmax[b, t, tokens[b, t + 1]] for t in range(4) if tokens[b, t + 1] != 0]
        expected.append(np.mean(terms))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    no_pad = fs.losses.sequence_crossentropy(from_logits=True, pad_id=None)(tokens, logits)
    expected = [np.mean([-log_softmax[b, t, tokens[b, t + 1]] for t in range(4)]) for b in range(2)]
    np.testing.assert_allclose(no_pad, expected, rtol=1e-5)


def test_constructors_normalise_defaults():
    assert fs.losses.sparse_categorical_crossentropy() == losses_lib.get(
        "sparse_categorical_crossentropy"
    )
    assert fs.losses.huber(delta=2.0) != fs.losses.huber()
    assert hash(fs.losses.mse()) == hash(fs.losses.mse())


@pytest.mark.parametrize(
    "call",
    [
        lambda: fs.losses.sparse_categorical_crossentropy(from_logits="yes"),
        lambda: fs.losses.huber(delta="1"),
    ],
    ids=["bool-option", "number-option"],
)
def test_constructors_check_options(call):
    with pytest.raises(fs.SpecError):
        call()


def test_every_registry_name_has_a_constructor():
    for name in fs.losses.NAMES:
        assert callable(getattr(fs.losses, name))
        assert getattr(fs.losses, name)().name == name
