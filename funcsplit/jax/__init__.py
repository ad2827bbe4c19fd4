"""The same `SplitSpec`, compiled to pure JAX functions over pytrees.

``fs.jax.compile(split)`` resolves the split with the same resolver as `funcsplit.compile`
(one resolver, two lowerings) and lowers it to JAX: ``split(element)`` routes a batch (a
pytree of NumPy or JAX arrays, e.g. from ``tfds.as_numpy``) to ``(inputs, targets,
weights)``; ``loss(targets, predictions, weights)`` returns a `funcsplit.LossResult` (a
NamedTuple, hence a pytree) with ``.total``, ``.per_loss`` and ``.counts``, equal in value to
the TensorFlow functions. Both are pure and jittable (the routing structure is static; routes
are masks, never value-dependent shapes), differentiable, and work on a batch sharded across
devices (the reductions are over the global batch).

Registry names (``"sparse_categorical_crossentropy"``, ``fs.losses.dice()``, …) resolve to
JAX implementations of Keras's math (`registry_loss`); Keras ``Loss`` objects of the matching
classes translate to them. Other ``fn`` values must be JAX callables ``(y_true, y_pred)``,
e.g. ``optax.losses.squared_error``.

Limits (what JAX cannot carry, and what jit cannot do):

* Ragged, sparse and string leaves do not exist in JAX: a split that uses one (as an input,
  target, sample weight or route) is a `SpecError` at compile time naming its path. Pad
  ragged leaves to dense (``padded_batch``), map strings to ids, or drop them. Dropped leaves
  may stay in the element, but pass the element to ``split`` outside `jax.jit` then (a jitted
  function cannot take string arrays as arguments), or remove them first.
* A user ``fn`` that returns one batch-level scalar cannot be computed over the routed
  examples only under `jax.jit` (gathering them gives a value-dependent shape). Give it a
  ``mask`` keyword (``fn(y_true, y_pred, *, mask)``, a ``[B]`` bool array: a static-shape
  formulation, as ``fs.losses.dice`` has) and it is called with the route; otherwise a routed
  scalar loss works eagerly (the routed examples are gathered, as in TensorFlow) and raises a
  `SpecError` under jit. Without a route a scalar loss is computed over the whole batch.
* A routed sparse label out of range gives a NaN loss (TensorFlow raises; jit cannot).
  Routed-away labels never reach the loss: they are replaced by zeros first.
* JAX narrows 64-bit leaves to 32 bits unless ``jax_enable_x64`` is set: a route on an int64
  or float64 leaf then compares 32-bit values (a route value outside the 32-bit range is a
  `SpecError` at compile time; data values that differ only beyond float32 precision, or
  int64 ids beyond the int32 range, may route differently than in TensorFlow). Losses and
  weights are computed in float32 either way, as in TensorFlow.
* Registry losses compute in float32, as Keras's losses do; Keras's trick of reading the
  logits behind a softmax layer's output does not exist here: pass ``from_logits=True``.
"""

try:
    import jax  # noqa: F401 - checked here for a clear message; used by the modules below
except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        f"funcsplit.jax needs JAX and optax: pip install 'funcsplit[jax]' ({error})",
        name=error.name,
    ) from error

from funcsplit._src.result import LossResult
from funcsplit.jax import weighting
from funcsplit.jax._compile import CompiledSplit
from funcsplit.jax._compile import compile  # noqa: A004 - the contract's name
from funcsplit.jax._compile import group_optimizer
from funcsplit.jax._losses import registry_loss

__all__ = [
    "CompiledSplit",
    "LossResult",
    "compile",
    "group_optimizer",
    "registry_loss",
    "weighting",
]
