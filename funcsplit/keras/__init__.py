"""Keras integration: ``fit`` with a `CompiledSplit`'s loss, and multi-model training steps.

- `RoutedModel` wraps any Keras model for ``compile`` / ``fit`` / ``evaluate`` / ``predict``
  on ``compiled.apply(ds)``; the logs show ``loss`` and one ``<binding>_loss`` per binding.
- `train_step` builds one traced step for a custom loop: several models, each with its own
  optimizer, trained by their own bindings (the seed's "image model + text model").

Both take their loss from ``compiled.loss``, so the values are funcsplit's exact routed,
weighted means, also across replicas under `tf.distribute`. Both need Keras on the
TensorFlow backend.

Examples:
    >>> import funcsplit as fs
    >>> sorted(fs.keras.__all__)
    ['RoutedModel', 'train_step']
"""

from funcsplit.keras._model import RoutedModel
from funcsplit.keras._step import train_step

__all__ = [
    "RoutedModel",
    "train_step",
]
