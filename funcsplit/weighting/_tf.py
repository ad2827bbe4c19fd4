"""The TensorFlow `Ops` the weighting formulas run on."""

from __future__ import annotations

import tensorflow as tf

from funcsplit.weighting._method import Ops


def _asarray(x, dtype="float32"):
    if isinstance(x, (tf.Tensor, tf.Variable)) and x.dtype == tf.as_dtype(dtype):
        return tf.convert_to_tensor(x)
    if isinstance(x, (tf.Tensor, tf.Variable)):
        return tf.cast(x, dtype)
    return tf.convert_to_tensor(x, dtype=dtype)


def _fori_loop(n, body, init):
    def step(i, carry):
        return i + 1, body(i, carry)

    return tf.while_loop(
        lambda i, carry: i < n, step, (tf.constant(0), init), maximum_iterations=n
    )[1]


OPS = Ops(
    asarray=_asarray,
    zeros=lambda shape, dtype="float32": tf.zeros(shape, dtype),
    ones=lambda shape, dtype="float32": tf.ones(shape, dtype),
    eye=lambda n: tf.eye(n),
    where=tf.where,
    exp=tf.exp,
    cos=tf.cos,
    log=tf.math.log,
    sqrt=tf.sqrt,
    abs=tf.abs,
    sign=tf.sign,
    maximum=tf.maximum,
    minimum=tf.minimum,
    sum=lambda x, axis=None: tf.reduce_sum(x, axis=axis),
    max=lambda x, axis=None: tf.reduce_max(x, axis=axis),
    cumsum=lambda x: tf.cumsum(x, axis=-1),
    sort_desc=lambda x: tf.sort(x, axis=-1, direction="DESCENDING"),
    argsort=lambda x: tf.argsort(x, axis=-1, stable=True),
    argmin=lambda x: tf.argmin(x, output_type=tf.int32),
    one_hot=lambda index, n: tf.one_hot(index, n, dtype=tf.float32),
    reshape=tf.reshape,
    matvec=tf.linalg.matvec,
    solve=lambda a, b: tf.linalg.solve(a, b[..., None])[..., 0],
    cast=lambda x, dtype: tf.cast(x, dtype),
    stop_gradient=tf.stop_gradient,
    fori_loop=_fori_loop,
    uint32=lambda x: tf.cast(x, tf.uint32),
    bitwise_xor=tf.bitwise.bitwise_xor,
    right_shift=lambda x, n: tf.bitwise.right_shift(x, tf.constant(n, tf.uint32)),
)
