"""What every weighting method is (`Method`), and the array operations its formulas use (`Ops`).

Each method is written once, in ``_loss_based.py`` and ``_gram_based.py``, against an `Ops`
namespace: `funcsplit.weighting` passes TensorFlow's (``_tf.py``), ``fs.jax.weighting`` passes
``jax.numpy``'s, so the two backends share every formula. This module imports no backend.

The routing rule of every method lives here too: `present_mask` turns ``present`` into a 0/1
float mask, and `keep` writes a state entry back unchanged where a task is absent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

from funcsplit._src.errors import SpecError

# A state is a dict of arrays (a pytree: tf.nest and jax.tree_util both walk it).
State = dict


NAMES = (
    "static",
    "uncertainty",
    "dwa",
    "rlw",
    "famo",
    "gradnorm",
    "pcgrad",
    "mgda",
    "cagrad",
    "nash_mtl",
)
"""The constructors' names, the paper baselines first: ``getattr(fs.weighting, name)()``
(and ``fs.jax.weighting``)."""


class Method(NamedTuple):
    """A weighting method: a name and two pure functions, ``init`` and ``update``.

    ``state = init(num_tasks)`` gives the method's state, a dict of tensors (no variables: the
    trainer owns the variables that hold it). ``alpha, state = update(losses, gram, state,
    present=None)`` gives this step's task weights and the next state, where ``losses`` is a
    float32 ``[T]`` vector of this step's per-task loss values, ``gram`` the float32 ``[T, T]``
    Gram matrix ``G Gᵀ`` of the per-task gradients ``G`` with respect to the shared variables
    (``None`` unless ``needs_gram``), and ``present`` a bool ``[T]`` vector of the tasks with
    routed examples in this batch (``None``: all). ``alpha`` is float32 ``[T]``, carries no
    gradient, and is 0 for every absent task; the step's direction is ``Σ_t alpha_t ∇L_t``.

    Attributes:
        name: the method's name, e.g. ``"famo"``.
        needs_gram: whether ``update`` reads ``gram`` (the trainer then computes it).
        init: ``num_tasks -> state``.
        update: ``(losses, gram, state, present=None) -> (alpha, state)``.

    Examples:
        >>> import funcsplit as fs
        >>> m = fs.weighting.static(weights=[2.0, 1.0])
        >>> m.name, m.needs_gram
        ('static', False)
        >>> alpha, state = m.update([0.5, 3.0], None, m.init(2))
        >>> alpha.numpy().tolist()
        [2.0, 1.0]
    """

    name: str
    needs_gram: bool
    init: Callable[[int], State]
    update: Callable[..., tuple[Any, State]]


class Ops(NamedTuple):
    """The array operations the formulas use: one instance per backend.

    Arithmetic, comparison and indexing go through the arrays' own operators; everything
    else is here. ``fori_loop(n, body, init)`` runs ``body(i, carry)`` ``n`` times (a fixed
    count: in the graph, no host round trip); ``stop_gradient`` detaches the weights.
    """

    asarray: Callable  # (x, dtype="float32") -> array
    zeros: Callable  # (shape, dtype="float32")
    ones: Callable  # (shape, dtype="float32")
    eye: Callable  # (n)
    where: Callable
    exp: Callable
    cos: Callable
    log: Callable
    sqrt: Callable
    abs: Callable
    sign: Callable
    maximum: Callable
    minimum: Callable
    sum: Callable  # (x, axis=None)
    max: Callable  # (x, axis=None)
    cumsum: Callable  # (x) along the last axis
    sort_desc: Callable  # (x) along the last axis
    argsort: Callable  # (x) ascending, along the last axis
    argmin: Callable  # (x) over a vector, int32
    one_hot: Callable  # (index, n) float32
    reshape: Callable  # (x, shape)
    matvec: Callable  # (A [..., n, n], x [..., n]) -> A @ x
    solve: Callable  # (A [..., n, n], b [..., n]) -> x [..., n]
    cast: Callable  # (x, dtype)
    stop_gradient: Callable
    fori_loop: Callable  # (n, body, init) -> carry
    uint32: Callable  # (x) -> uint32 array
    bitwise_xor: Callable
    right_shift: Callable  # (x, n) on uint32


def check_num_tasks(name: str, num_tasks: Any) -> int:
    """``num_tasks`` as an int >= 1, else a `SpecError` naming the method."""
    if isinstance(num_tasks, bool) or not hasattr(num_tasks, "__index__") or num_tasks < 1:
        raise SpecError(
            f"fs.weighting.{name}(): init expected num_tasks, a positive int (the number of "
            f"tasks, one per loss binding), found {num_tasks!r}; fix: pass len(split.losses)"
        )
    return int(num_tasks)


def check_option(name: str, option: str, value: Any, *, low: float, strict: bool = False):
    """A float option ``>= low`` (``> low`` when ``strict``), else a `SpecError`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    ok = number is not None and number == number and (number > low if strict else number >= low)
    if not ok:
        bound = f"> {low}" if strict else f">= {low}"
        raise SpecError(
            f"fs.weighting.{name}(): {option} expected a number {bound}, found {value!r}; "
            f"fix: pass {option}= a finite number {bound}"
        )
    return number


def present_mask(ops: Ops, present: Any, num_tasks: int):
    """``present`` as a float32 ``[T]`` 0/1 mask (all ones for ``None``)."""
    if present is None:
        return ops.ones((num_tasks,))
    return ops.cast(ops.asarray(present, "bool"), "float32")


def keep(ops: Ops, mask, new, old):
    """``new`` where the task is present (``mask`` 1), ``old`` where absent (any ``[T, ...]``)."""
    while len(mask.shape) < len(new.shape):
        mask = mask[..., None]
    return ops.where(mask > 0, new, old)


def masked_softmax(ops: Ops, logits, mask):
    """Softmax over the present entries; absent entries (and an all-absent vector) give 0."""
    shifted = logits - ops.max(ops.where(mask > 0, logits, ops.zeros(logits.shape) - 1e30))
    weights = ops.where(mask > 0, ops.exp(ops.minimum(shifted, 0.0)), ops.zeros(logits.shape))
    total = ops.sum(weights)
    return weights / ops.maximum(total, 1e-30)


def uniform(ops: Ops, seed: int, counter, num: int):
    """``num`` uniform floats in ``[0, 1)`` from ``(seed, counter)``: a counter-based hash.

    The hash is ``lowbias32`` (Chris Wellons' integer hash) of ``seed``, the step counter and
    the index, in uint32 arithmetic, so TensorFlow and JAX draw the very same numbers.
    """
    index = ops.uint32(ops.asarray(list(range(num)), "int32"))
    step = ops.uint32(counter)
    x = index * ops.uint32(0x9E3779B9) + step * ops.uint32(0x85EBCA6B) + ops.uint32(seed)
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = ops.bitwise_xor(x, ops.right_shift(x, shift)) * ops.uint32(multiplier)
    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    return ops.cast(ops.right_shift(x, 8), "float32") * (1.0 / (1 << 24))
