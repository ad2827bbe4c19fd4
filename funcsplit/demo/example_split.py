"""A tiny split to try `funcsplit describe funcsplit.demo.example_split:split` on (no data)."""

import tensorflow as tf

import funcsplit as fs

ELEMENT = fs.ElementSpec.from_structure(
    {"image": tf.TensorSpec((None, 8, 8, 1), tf.float32), "label": fs.Leaf(tf.int32, (None,))}
)
split = fs.SplitSpec(
    ELEMENT,
    inputs="image",
    losses=(fs.LossBinding("label", "sparse_categorical_crossentropy", target="label"),),
)
