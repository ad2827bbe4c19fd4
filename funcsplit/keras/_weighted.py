"""Loss weighting in the Keras trainers: task losses, their Gram matrix, alpha and the direction.

Shared by `train_step` and `RoutedModel`. A *task* is a binding: its loss is
``L_t = weight_b · loss_b`` (the binding's term of the total) and it is *present* when the
batch routes examples to it. A weighting `Method` turns the task losses (and, when
``needs_gram``, the Gram matrix ``G Gᵀ`` of the task gradients with respect to the *shared*
variables) into task weights ``alpha``; the step then follows ``Σ_t alpha_t ∇L_t``.

Under `tf.distribute` each replica's ``L_t`` is its share of the global loss (funcsplit's
global denominators), so the global ``L_t``, the global presence and the global gradients are
cross-replica sums. Every replica therefore computes the same ``alpha`` and the same state,
equal to one device with the whole batch; each replica applies ``Σ_t alpha_t ∇L_t`` of its own
share and the optimizer sums the replicas, as for the plain total.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.result import LossResult
from funcsplit._src.tf_replicas import global_sum
from funcsplit._src.tf_replicas import replicas_in_sync

_METHOD_FIELDS = ("name", "needs_gram", "init", "update")


def is_method(value: Any) -> bool:
    """Whether ``value`` has the shape of an ``fs.weighting.Method``."""
    return all(hasattr(value, field) for field in _METHOD_FIELDS) and callable(
        getattr(value, "update", None)
    )


def group_key_problems(
    where: str, value: Mapping, groups: tuple[str, ...], *, each: str, add: Callable
) -> list[Problem]:
    """The problems of a ``{group: ...}`` dict's keys: groups it misses (``add(group)`` says
    the fix) and keys that are no group. Shared by ``weighting=``, ``models=`` and
    ``optimizers=``."""
    problems = []
    missing = [g for g in groups if g not in value]
    extra = [k for k in value if k not in groups]
    if missing:
        problems.append(
            Problem(
                where,
                None,
                f"one {each} per group {list(groups)}",
                f"no entry for {missing}",
                add(missing[0]),
            )
        )
    if extra:
        problems.append(
            Problem(
                where,
                None,
                f"only the groups {list(groups)}",
                f"unknown keys {extra}",
                "remove them, or give some binding that group",
            )
        )
    return problems


def _method_problem(where: str, value: Any) -> Problem | None:
    if is_method(value):
        return None
    return Problem(
        f"{where} weighting",
        None,
        "an fs.weighting.Method (name, needs_gram, init, update)",
        type(value).__name__,
        "pass e.g. weighting=fs.weighting.famo()",
    )


def check_methods(
    where: str, weighting: Any, groups: tuple[str, ...]
) -> dict[str | None, Any] | None:
    """``{group: method}`` (``{None: method}`` without groups), or None without weighting.

    Raises:
        SpecError: for a value that is not a method, a dict for a split without groups, a
            method (not a dict) for a split with groups, or a dict that misses a group or
            names an unknown one.
    """
    if weighting is None:
        return None
    if not groups:
        if isinstance(weighting, Mapping):
            raise SpecError.single(
                f"{where} weighting",
                None,
                "one fs.weighting.Method (the split has no groups)",
                "a dict",
                "pass weighting=fs.weighting.<name>(), or give the bindings group= names",
            )
        raise_if_any([p for p in [_method_problem(where, weighting)] if p is not None])
        return {None: weighting}
    if not isinstance(weighting, Mapping):
        raise SpecError.single(
            f"{where} weighting",
            None,
            f"a dict {{group: fs.weighting.Method}} for the groups {list(groups)}",
            type(weighting).__name__,
            "pass weighting={group: fs.weighting.<name>(), ...}; "
            "fs.weighting.static() keeps a group's plain total",
        )
    problems = group_key_problems(
        f"{where} weighting",
        weighting,
        groups,
        each="method",
        add=lambda g: f"add weighting[{g!r}] (fs.weighting.static() keeps the plain total)",
    )
    problems += [
        _method_problem(f"{where} [{g!r}]", weighting[g]) for g in groups if g in weighting
    ]
    raise_if_any([p for p in problems if p is not None])
    return {g: weighting[g] for g in groups}


def check_shared_given(where: str, methods: Mapping[str | None, Any] | None, shared: Any) -> None:
    """Raises a `SpecError` when a Gram method has no ``shared`` variables to take it over."""
    if methods is None or shared is not None:
        return
    needing = [m.name for m in methods.values() if m.needs_gram]
    if needing:
        raise SpecError.single(
            f"{where} shared",
            None,
            "the shared variables (a list, or model -> variables) for a method with "
            "needs_gram=True",
            f"shared=None with weighting {needing[0]!r}",
            "pass e.g. shared=lambda model: model.get_layer('encoder').trainable_variables",
        )


def resolve_shared(where: str, shared: Any, model: Any, group: str | None) -> list[Any]:
    """The shared variables of one model: ``shared`` itself, ``shared(model)`` or
    ``shared[group]`` (either form), each one of ``model``'s trainable variables.

    Raises:
        SpecError: for something that is not a variable, a variable the model does not train
            (named by its path), or an empty list.
    """
    label = f"{where} shared" if group is None else f"{where} shared[{group!r}]"
    if isinstance(shared, Mapping):
        shared = shared.get(group)
    if callable(shared) and not isinstance(shared, tf.Variable):
        shared = shared(model)
    if shared is None:
        return []
    items = [shared] if not isinstance(shared, Sequence) else list(shared)
    trained = {id(v) for v in model.trainable_variables}
    problems = []
    for item in items:
        if not hasattr(item, "assign") or not hasattr(item, "shape"):
            hint = "use layer.trainable_variables" if hasattr(item, "trainable_variables") else ""
            problems.append(
                Problem(label, None, "variables", type(item).__name__, hint or "pass variables")
            )
        elif id(item) not in trained:
            problems.append(
                Problem(
                    label,
                    None,
                    "trainable variables of the trained model",
                    f"variable {getattr(item, 'path', getattr(item, 'name', '?'))!r}, "
                    "which the model does not train",
                    "pass variables of this model's shared layers",
                )
            )
    if not items:
        problems.append(Problem(label, None, "at least one shared variable", "an empty list", ""))
    raise_if_any(problems)
    return items


class TaskWeighting:
    """One group's weighting: its method, its tasks and the variables that hold its state.

    Args:
        method: the ``fs.weighting.Method``.
        names: the group's binding names, in order (the task index ``t``).
        make_variable: ``(name, initial value) -> variable``, a non-trainable variable that
            replicas update with the first replica's value (all replicas hold the same).
    """

    def __init__(self, method: Any, names: Sequence[str], make_variable: Callable):
        self.method = method
        self.names = tuple(names)
        state = method.init(len(self.names))
        self._structure = state
        leaves = tf.nest.flatten(state)
        self.variables = [
            make_variable(f"{method.name}_state_{i}", tf.convert_to_tensor(leaf))
            for i, leaf in enumerate(leaves)
        ]
        self.shared: list[Any] = []  # set by the trainer once the model is built

    def read_state(self) -> Any:
        return tf.nest.pack_sequence_as(
            self._structure, [tf.convert_to_tensor(v) for v in self.variables]
        )

    def write_state(self, state: Any) -> None:
        leaves = tf.nest.flatten(state)
        for variable, value in zip(self.variables, leaves):
            variable.assign(tf.cast(value, variable.dtype))

    def task_losses(self, result: LossResult, weights: Mapping[str, float]) -> tf.Tensor:
        """``[T]``: each task's term of the total on this replica (inside the tape)."""
        return tf.stack(
            [float(weights[n]) * tf.cast(result.per_loss[n], tf.float32) for n in self.names]
        )

    def present(self, result: LossResult) -> tf.Tensor:
        """``bool [T]``: tasks with routed examples in the global batch."""
        counts = tf.stack([tf.cast(result.counts[n], tf.float32) for n in self.names])
        return global_sum(counts) > 0


def _dense(gradient: Any, variable: Any) -> tf.Tensor:
    if gradient is None:
        return tf.zeros(variable.shape, tf.float32)
    return tf.cast(tf.convert_to_tensor(gradient), tf.float32)


def _global(values: list[tf.Tensor]) -> list[tf.Tensor]:
    if replicas_in_sync() > 1 and values:
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.SUM, values)
    return values


def gram_and_task_gradients(
    tape: tf.GradientTape, losses: tf.Tensor, shared: list[Any]
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """``(G Gᵀ [T, T] of the global task gradients, per variable the local [T, ...] ones)``.

    One backward pass per task over the shared part (``output_gradients`` picks the task).
    """
    count = losses.shape[0]
    rows = [
        tape.gradient(losses, shared, output_gradients=tf.one_hot(t, count)) for t in range(count)
    ]
    local = [tf.stack([_dense(rows[t][i], v) for t in range(count)]) for i, v in enumerate(shared)]
    flat = _global([tf.reshape(g, [count, -1]) for g in local])
    gram = tf.add_n([tf.matmul(g, g, transpose_b=True) for g in flat])
    return gram, local


def weighted_gradients(
    tape: tf.GradientTape,
    weighting: TaskWeighting,
    losses: tf.Tensor,
    result: LossResult,
    variables: list[Any],
    extra: Any = None,
) -> tuple[list[Any], tf.Tensor, tf.Tensor]:
    """The gradients of ``Σ_t alpha_t L_t`` (+ ``extra``, e.g. regularization) and ``alpha``.

    Computes the global task losses and presence, the Gram matrix if the method needs it,
    ``alpha`` and the new state (written to the state variables), all without gradient.

    Args:
        tape: a tape that recorded ``losses`` (persistent when it is used again).
        weighting: the group's `TaskWeighting` (``shared`` set for a Gram method).
        losses: ``[T]`` task losses on this replica, from `TaskWeighting.task_losses`.
        result: the `LossResult` (its counts give the presence).
        variables: the variables to differentiate (the shared ones among them).
        extra: a scalar added to the objective unweighted, or None.

    Returns:
        ``(gradients, alpha, present)``: one gradient per variable (this replica's share),
        the task weights and the tasks' global presence.
    """
    method = weighting.method
    global_losses = global_sum(tf.stop_gradient(losses))
    present = weighting.present(result)
    gram, local = None, []
    shared = weighting.shared if method.needs_gram else []
    if method.needs_gram:
        gram, local = gram_and_task_gradients(tape, losses, shared)
    alpha, state = method.update(global_losses, gram, weighting.read_state(), present=present)
    alpha = tf.stop_gradient(tf.cast(alpha, tf.float32))
    weighting.write_state(tf.nest.map_structure(tf.stop_gradient, state))
    shared_ids = {id(v) for v in shared}
    rest = [v for v in variables if id(v) not in shared_ids]
    targets, seeds = [losses], [alpha]
    if extra is not None:
        targets.append(extra)
        seeds.append(tf.ones_like(extra))
    gradients = dict(zip(map(id, rest), tape.gradient(targets, rest, output_gradients=seeds)))
    if shared:
        combined = [tf.tensordot(alpha, g, axes=1) for g in local]
        if extra is not None:
            penalty = tape.gradient(extra, shared)
            combined = [
                c if e is None else c + _dense(e, v) for c, e, v in zip(combined, penalty, shared)
            ]
        gradients.update((id(v), tf.cast(c, v.dtype)) for v, c in zip(shared, combined))
    return [gradients[id(v)] for v in variables], alpha, present
