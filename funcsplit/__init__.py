"""funcsplit: declared, checked and compiled routing of tf.data elements to models and losses.

Declare the element structure (`ElementSpec`) and the loss bindings (`LossBinding`) in a
`SplitSpec`; `compile` checks every path and returns pure `split` and `loss` functions.
"""

from funcsplit import keras  # noqa: F401 - registers RoutedModel, so load_model finds it
from funcsplit import losses
from funcsplit._src import tf_saving  # noqa: F401 - saved splits describe Keras losses
from funcsplit._src.bindings import LossBinding
from funcsplit._src.bindings import Route
from funcsplit._src.bindings import SplitSpec
from funcsplit._src.bindings import route
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.paths import Path
from funcsplit._src.result import LossResult
from funcsplit._src.spec import ElementSpec
from funcsplit._src.spec import Leaf
from funcsplit._src.tf_compiler import CompiledSplit
from funcsplit._src.tf_compiler import compile  # noqa: A004 - the contract's name
from funcsplit._src.tf_mixture import Mixture
from funcsplit._src.tf_mixture import mix

__version__ = "0.1.0"

_SUBMODULES = ("distribute", "jax", "testing", "tfds", "weighting")


def __getattr__(name: str):
    """Imports the integration modules on first use (``fs.keras``, ``fs.weighting``, …)."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"funcsplit.{name}")
    raise AttributeError(f"module 'funcsplit' has no attribute {name!r}")


__all__ = [
    "CompiledSplit",
    "ElementSpec",
    "Leaf",
    "LossBinding",
    "LossResult",
    "Mixture",
    "Path",
    "Problem",
    "Route",
    "SpecError",
    "SplitSpec",
    "compile",
    "losses",
    "mix",
    "route",
]
