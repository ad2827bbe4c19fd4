"""TensorFlow Datasets: element specs and loss bindings from TFDS builders and datasets.

Declare a split before reading any data: `element_spec` reads the structure of a builder's
examples from its features (exactly as ``tfds.load`` decodes them), with the changes your
preprocessing makes (``replace=``), as ``as_supervised`` tuples, and batched densely or with
``ragged_batch``. `feature_bindings` binds one loss per feature under a prefix (celeb_a's
40 ``attributes``), `supervised_split` declares the whole split of an ``as_supervised`` dataset,
and `num_classes` reads the class counts of ``ClassLabel`` features for the model's heads.

Needs the optional dependency ``tensorflow-datasets`` (``pip install "funcsplit[demo]"``).
"""

try:
    import tensorflow_datasets as _tfds  # noqa: F401 - checked here for a clear message
except ImportError as _error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "funcsplit.tfds needs the optional dependency tensorflow-datasets: "
        'pip install "funcsplit[demo]" (or "funcsplit[test]")'
    ) from _error

from funcsplit.tfds._splits import binding_name
from funcsplit.tfds._splits import element_spec
from funcsplit.tfds._splits import feature_bindings
from funcsplit.tfds._splits import num_classes
from funcsplit.tfds._splits import supervised_split

__all__ = [
    "binding_name",
    "element_spec",
    "feature_bindings",
    "num_classes",
    "supervised_split",
]
