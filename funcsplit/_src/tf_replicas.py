"""Cross-replica sums: what makes funcsplit's denominators global under `tf.distribute`."""

from __future__ import annotations

import tensorflow as tf


def replicas_in_sync() -> int:
    """The number of replicas of the current replica context (1 outside `tf.distribute`).

    Examples:
        >>> import funcsplit as fs
        >>> fs.distribute.replicas_in_sync()
        1
    """
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def global_sum(value: tf.Tensor) -> tf.Tensor:
    """Sums ``value`` across replicas inside a replica context; returns it unchanged otherwise.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> float(fs.distribute.global_sum(tf.constant(2.0)))
        2.0
    """
    if replicas_in_sync() > 1:
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value
