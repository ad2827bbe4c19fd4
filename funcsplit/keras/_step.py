"""`train_step`: one traced training step for several models and optimizers (one per group).

One `tf.GradientTape` records every group's forward pass and the loss of the whole split; the
gradient of the total with respect to group ``g``'s variables is the gradient of ``g``'s own
losses, because groups share no variables (checked). Each group's gradients go to its own
optimizer.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from funcsplit._src import structure
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any
from funcsplit._src.result import LossResult
from funcsplit._src.tf_compiler import CompiledSplit
from funcsplit._src.tf_compiler import TracedFunction
from funcsplit._src.tf_replicas import replicas_in_sync
from funcsplit.keras import _weighted

_WHERE = "fs.keras.train_step"


def _check_group_dict(kind: str, value: Any, groups: tuple[str, ...], valid: Any) -> list[Problem]:
    if not isinstance(value, Mapping):
        return [
            Problem(
                f"{_WHERE} {kind}",
                None,
                f"a dict keyed by the groups {list(groups)}",
                type(value).__name__,
                f"pass {kind}={{group: ..., ...}} for a split with groups",
            )
        ]
    problems = _weighted.group_key_problems(
        f"{_WHERE} {kind}", value, groups, each="entry", add=lambda g: f"add {kind}[{g!r}]"
    )
    problems.extend(valid(f"{kind}[{g!r}]", value[g]) for g in groups if g in value)
    return [p for p in problems if p is not None]


def _model_problem(where: str, model: Any) -> Problem | None:
    if isinstance(model, keras.layers.Layer):
        return None
    return Problem(f"{_WHERE} {where}", None, "a Keras model (or layer)", type(model).__name__)


def _optimizer_problem(where: str, optimizer: Any) -> Problem | None:
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    return Problem(
        f"{_WHERE} {where}",
        None,
        "a keras.optimizers.Optimizer instance",
        type(optimizer).__name__,
        "pass e.g. keras.optimizers.Adam(1e-3)",
    )


def _check_arguments(compiled: Any, models: Any, optimizers: Any) -> None:
    if not isinstance(compiled, CompiledSplit):
        raise SpecError.single(
            _WHERE, None, "a CompiledSplit (from fs.compile(split))", type(compiled).__name__
        )
    groups = compiled.groups
    if not groups:
        problems = [
            Problem(
                f"{_WHERE} {kind}",
                None,
                f"one {kind[:-1]} (the split has no groups)",
                "a dict",
                f"pass one {kind[:-1]}, or give the bindings group= names",
            )
            for kind, value in (("models", models), ("optimizers", optimizers))
            if isinstance(value, Mapping)
        ]
        if not problems:
            problems = [
                _model_problem("model", models),
                _optimizer_problem("optimizer", optimizers),
            ]
        raise_if_any([p for p in problems if p is not None])
        return
    problems = _check_group_dict("models", models, groups, _model_problem)
    problems += _check_group_dict("optimizers", optimizers, groups, _optimizer_problem)
    if not problems:
        seen: dict[int, str] = {}
        for g in groups:
            first = seen.setdefault(id(models[g]), g)
            if first != g:
                problems.append(
                    Problem(
                        f"{_WHERE} models",
                        None,
                        "a separate model per group",
                        f"the same model for groups {first!r} and {g!r}",
                        "put both groups' bindings in one group, or use two models",
                    )
                )
    raise_if_any(problems)


def check_disjoint(models: Mapping[str, Any]) -> None:
    """Raises a `SpecError` naming each variable that several groups' models share.

    A shared variable would receive the gradient of several groups' losses and be updated by
    several optimizers.
    """
    owner: dict[int, str] = {}
    problems = []
    for group, model in models.items():
        for variable in model.trainable_variables:
            first = owner.setdefault(id(variable), group)
            if first != group:
                problems.append(
                    Problem(
                        f"{_WHERE} models",
                        None,
                        "groups whose models share no trainable variable",
                        f"variable {variable.path!r} in groups {first!r} and {group!r}",
                        "put the bindings that train it in one group (one model, one optimizer)",
                    )
                )
    raise_if_any(problems)


def _regularization(models: Mapping[str, Any]) -> tf.Tensor | None:
    penalties = [tf.reduce_sum(tf.cast(v, tf.float32)) for m in models.values() for v in m.losses]
    if not penalties:
        return None
    return tf.add_n(penalties) / replicas_in_sync()


def _step_function(
    compiled: CompiledSplit,
    models: dict,
    optimizers: dict,
    forms: _Forms,
    weightings: dict[str | None, _weighted.TaskWeighting] | None,
    resolve_shared: Any,
):
    groups = compiled.groups
    weights = {b.name: b.weight for b in compiled.spec.losses}
    # A weighted step takes several gradients from one tape (the Gram rows, each group).
    persistent = bool(weightings) and (
        len(weightings) > 1 or any(w.method.needs_gram for w in weightings.values())
    )

    def step(element: Any) -> LossResult:
        resolve_shared()
        if forms.is_raw(element):
            element = compiled.split.python_function(element)
        inputs, targets, sample_weights = element
        with tf.GradientTape(persistent=persistent) as tape:
            if groups:
                predictions = {g: models[g](inputs[g], training=True) for g in groups}
            else:
                predictions = models[None](inputs, training=True)
            # Inline: a nested tf.function's gradient would make XLA recompile per batch.
            result = compiled.loss.python_function(targets, predictions, sample_weights)
            if weightings:
                penalties = {g: _regularization({g: m}) for g, m in models.items()}
                losses = {g: w.task_losses(result, weights) for g, w in weightings.items()}
            else:
                penalty = _regularization(models)
                objective = result.total if penalty is None else result.total + penalty
        check_disjoint(models)
        variables = {g: list(m.trainable_variables) for g, m in models.items()}
        alphas = {}
        if weightings:
            gradients = {}
            for g, weighting in weightings.items():
                gradients[g], alphas[g], _ = _weighted.weighted_gradients(
                    tape, weighting, losses[g], result, variables[g], penalties[g]
                )
            del tape
        else:
            flat = iter(tape.gradient(objective, [v for vs in variables.values() for v in vs]))
            gradients = {g: [next(flat) for _ in vs] for g, vs in variables.items()}
        by_optimizer: dict[int, tuple[Any, list]] = {}
        for g, vs in variables.items():
            pairs = by_optimizer.setdefault(id(optimizers[g]), (optimizers[g], []))[1]
            pairs.extend(zip(gradients[g], vs))
        for optimizer, pairs in by_optimizer.values():
            optimizer.apply_gradients(pairs)
        if not weightings:
            return result
        task_weights = {
            name: alphas[g][t] for g, w in weightings.items() for t, name in enumerate(w.names)
        }
        return result._replace(weights={n: task_weights[n] for n in compiled.names})

    return step


def _build(models: dict, optimizers: dict, inputs: Any = None) -> None:
    """Builds unbuilt models (one forward pass on ``inputs``, no update), then the optimizers
    whose models are all built (each on all the variables of the groups it serves)."""
    if inputs is not None:
        for g, model in models.items():
            if not model.built:
                model(inputs if g is None else inputs[g], training=False)
    for optimizer in {id(o): o for o in optimizers.values()}.values():
        owners = [g for g, o in optimizers.items() if o is optimizer]
        if not optimizer.built and all(models[g].built for g in owners):
            variables = [v for g in owners for v in models[g].trainable_variables]
            with _scope_of(variables):
                optimizer.build(variables)


def _scope_of(variables: list) -> Any:
    """The scope of the `tf.distribute` strategy that made ``variables`` (mirrored slots)."""
    for variable in variables:
        strategy = getattr(getattr(variable, "value", None), "distribute_strategy", None)
        if strategy is not None:
            return strategy.scope()
    return contextlib.nullcontext()


class _Forms:
    """The two forms a step takes: a raw element of the split's element spec (split inside
    the step) or the ``(inputs, targets, weights)`` that ``compiled.apply(ds)`` yields."""

    def __init__(self, compiled: CompiledSplit):
        self.compiled = compiled
        self.element = compiled.spec.element.type_spec(relax_batch=True)
        outputs = compiled.split.get_concrete_function().structured_outputs
        self.split = tf.nest.map_structure(tf.type_spec_from_value, outputs)
        # When the element has the triple's structure too, only dtypes and shapes tell.
        self._same_structure = _fits_structure(self.split, self.element)

    def is_raw(self, element: Any) -> bool:
        """Whether ``element`` is a raw element (not yet split)."""
        if not _fits_structure(self.element, element):
            return False
        if not self._same_structure:
            return True
        return not _element_problems(self.compiled, element)

    def problems(self, element: Any) -> list[Problem]:
        """Why ``element`` is neither form (empty when it is one of them)."""
        if _fits_structure(self.element, element):
            problems = _element_problems(self.compiled, element)
            if not problems or not _fits_structure(self.split, element):
                return problems
        if _fits_structure(self.split, element):
            return []
        is_leaf = lambda v: not structure.is_container(v)
        return [
            Problem(
                f"{_WHERE} step(element)",
                None,
                "a raw element of the split's element spec, "
                + structure.draw(self.element, is_leaf)
                + ", or what compiled.apply(ds) yields, (inputs, targets, weights) = "
                + structure.draw(self.split, is_leaf),
                structure.draw(element, is_leaf),
                "iterate the dataset the split was declared for, or compiled.apply(ds)",
            )
        ]


def _fits_structure(expected: Any, value: Any) -> bool:
    # Leaves replaced first: on a mismatch, tf.nest's message prints every leaf, and printing
    # tensors' values cost ~50 ms a call (a raw element checked against the split triple).
    skeleton = lambda v: tf.nest.map_structure(lambda _: 0, v)
    try:
        tf.nest.assert_same_structure(skeleton(expected), skeleton(value), check_types=False)
    except (TypeError, ValueError):
        return False
    return True


def _element_problems(compiled: CompiledSplit, element: Any) -> list[Problem]:
    specs = tf.nest.map_structure(
        lambda v: v if isinstance(v, tf.TypeSpec) else tf.type_spec_from_value(v), element
    )
    return compiled.spec.element.problems_with(specs, batched=True)


class _BuildThenTrace:
    """The traced step, which builds unbuilt models and optimizers before its first call.

    `tf.function` traces twice when its first call creates variables; building them first
    keeps the step at one trace. Each form of element has its own traced function (an input
    signature each), so each traces once, whatever the batch size.
    """

    def __init__(
        self,
        step: Any,
        forms: _Forms,
        models: dict,
        optimizers: dict,
        jit: bool,
        on_built: Any = None,
    ):
        self._on_built = on_built
        self._forms = forms
        self._models = models
        self._optimizers = optimizers
        self._traced = {
            raw: tf.function(
                step,
                input_signature=[forms.element if raw else forms.split],
                jit_compile=jit,
                autograph=False,
            )
            for raw in (True, False)
        }
        self._concrete: dict[bool, Any] = {}  # built and traced, by form

    def __call__(self, element: Any) -> Any:
        raw = self._forms.is_raw(element)
        concrete = self._concrete.get(raw)
        if concrete is None:
            raise_if_any(self._forms.problems(element))
            split = self._forms.compiled.split.python_function(element) if raw else element
            _build(self._models, self._optimizers, split[0])
            if self._on_built is not None:
                self._on_built()
            # The step has an input signature, so one concrete function: called directly, it
            # skips tf.function's per-call dispatch (~0.2-0.4 ms a step), same checks.
            concrete = self._concrete[raw] = self._traced[raw].get_concrete_function()
        try:
            return concrete(element)
        except (TypeError, ValueError) as error:
            problems = self._forms.problems(element)
            if problems:
                # from None: TensorFlow's own message prints the arguments' values whole.
                raise SpecError(problems) from None
            raise error

    def experimental_get_tracing_count(self) -> int:
        return sum(t.experimental_get_tracing_count() for t in self._traced.values())

    def get_concrete_function(self, *args: Any) -> Any:
        return self._traced[False].get_concrete_function(*args)


def train_step(
    compiled: CompiledSplit,
    models: keras.Model | Mapping[str, keras.Model],
    optimizers: keras.optimizers.Optimizer | Mapping[str, keras.optimizers.Optimizer],
    *,
    weighting: Any = None,
    shared: Any = None,
    jit_compile: bool = False,
) -> TrainStep:
    """Builds one traced training step: each group's losses update only its own model.

    ``models[g]`` is called on ``inputs[g]`` and its output is ``predictions[g]``; one
    gradient tape takes the gradient of the total loss (plus each model's regularization
    losses) and ``optimizers[g]`` applies it to ``models[g]``'s trainable variables. The same
    optimizer object may serve several groups (it is applied once to all their variables).
    A split without groups takes one model and one optimizer.

    ``step(element)`` takes a raw element of the split's element spec (a batch of the
    dataset the split was declared for: the seed's ``for batch in dataset: step(batch)``),
    split inside the step, or what ``compiled.apply(ds)`` yields, ``(inputs, targets,
    weights)``. It returns the `LossResult`. Each form has a `tf.function` with an input
    signature (batch dimension ``None``), so each traces once; inside ``strategy.run`` with
    several replicas it runs inline in the caller's trace (the loss's cross-replica sums need
    that), where the replicas' losses sum to the global one and the optimizers sum the
    replicas' gradients.
    There, create built models (e.g. functional) under ``strategy.scope()``: `train_step`
    builds the optimizers up front, under the models' strategy, as variables cannot be
    created inside ``strategy.run``.

    Args:
        compiled: the `CompiledSplit`.
        models: ``{group: keras.Model}``, or one model for a split without groups.
        optimizers: ``{group: optimizer}``, or one optimizer for a split without groups.
        weighting: an ``fs.weighting.Method`` (``{group: method}`` with groups) that weighs
            the tasks (bindings): see below.
        shared: the variables the tasks share, for a method with ``needs_gram``: a list of
            variables, ``model -> variables``, or ``{group: either}``.
        jit_compile: compile the step with XLA (as Keras ``fit`` does on accelerators).

    With ``weighting``, each binding is a task with loss ``L_t = weight · loss`` (its term of
    the total), present when the batch routes examples to it. The method's ``update`` takes
    the task losses, their presence and, when it needs it, the Gram matrix ``G Gᵀ`` of the
    task gradients with respect to ``shared`` (one backward pass per task over the shared
    part), and gives ``alpha`` (no gradient flows through it); the step applies
    ``Σ_t alpha_t ∇L_t`` plus the regularization losses' gradient. Under `tf.distribute` the
    losses, presence and Gram matrix are those of the global batch, so alpha equals one
    device's. The method's state lives in non-trainable variables, ``step.weighting_state``:
    ``tf.train.Checkpoint(step=step, model=model, optimizer=optimizer)`` carries it.

    Returns:
        ``step(element) -> LossResult``; with ``weighting``, its ``weights`` hold each
        binding's ``alpha`` of the step (``total`` stays ``Σ_b weight_b · loss_b``).

    Raises:
        SpecError: up front for a missing, extra or wrongly typed model or optimizer, or the
            same model for two groups, a ``weighting`` that is not a method (or a dict of
            them per group), or a Gram method without ``shared``; when the models are
            built, for ``shared`` variables the model does not train; at the first call, if
            two groups' models share a trainable variable, or if ``element`` is neither a
            raw element nor what ``compiled.apply`` yields.

    Examples:
        >>> import funcsplit as fs, keras, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None, 1))})
        >>> compiled = fs.compile(fs.SplitSpec(spec, inputs="x",
        ...                                    losses=(fs.LossBinding("y", "mse", target="y"),)))
        >>> step = fs.keras.train_step(compiled, keras.layers.Dense(1), keras.optimizers.SGD())
        >>> for n in (4, 3):
        ...     result = step({"x": tf.ones((n, 2)), "y": tf.zeros((n, 1))})
        >>> step.experimental_get_tracing_count(), sorted(result.per_loss)
        (1, ['y'])
        >>> result = step(compiled.split({"x": tf.ones((2, 2)), "y": tf.zeros((2, 1))}))
        >>> step.experimental_get_tracing_count()
        2
    """
    _check_arguments(compiled, models, optimizers)
    methods = _weighted.check_methods(_WHERE, weighting, compiled.groups)
    _weighted.check_shared_given(_WHERE, methods, shared)
    if compiled.groups:
        models, optimizers = dict(models), dict(optimizers)
    else:
        models, optimizers = {None: models}, {None: optimizers}
    _build(models, optimizers)
    weightings = _weightings(compiled, models, methods)
    resolve = functools.partial(_resolve_shared, weightings, models, shared)
    resolve(only_built=True)
    forms = _Forms(compiled)
    step = _step_function(compiled, models, optimizers, forms, weightings, resolve)
    step = tf.autograph.experimental.do_not_convert(step)
    return TrainStep(
        step,
        _BuildThenTrace(step, forms, models, optimizers, jit_compile, resolve),
        lambda element, batched=None: forms.problems(element),
        weightings=weightings,
    )


def _weightings(
    compiled: CompiledSplit, models: dict, methods: dict | None
) -> dict[str | None, _weighted.TaskWeighting] | None:
    """One `TaskWeighting` per group, its state in variables of the models' strategy."""
    if methods is None:
        return None
    out = {}
    for group, method in methods.items():
        names = [b.name for b in compiled.spec.losses if b.group == group]
        with _scope_of(list(models[group].variables)):
            out[group] = _weighted.TaskWeighting(method, names, _state_variable)
    return out


def _state_variable(name: str, value: tf.Tensor) -> tf.Variable:
    return tf.Variable(
        value,
        trainable=False,
        name=name,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )


def _resolve_shared(
    weightings: dict | None, models: dict, shared: Any, *, only_built: bool = False
) -> None:
    """Sets each Gram method's shared variables, once its model is built."""
    for group, weighting in (weightings or {}).items():
        if weighting.shared or not weighting.method.needs_gram:
            continue
        if only_built and not models[group].built:
            continue
        weighting.shared = _weighted.resolve_shared(_WHERE, shared, models[group], group)


class TrainStep(TracedFunction, tf.Module):
    """The step `train_step` returns: a `TracedFunction` that checkpoints its weighting state.

    ``tf.train.Checkpoint(step=step, model=model, optimizer=optimizer)`` saves and restores
    the weighting methods' state (``step.weighting_state``, non-trainable variables) beside
    the model and the optimizer.
    """

    def __init__(self, *args: Any, weightings: dict | None = None, **kwargs: Any):
        tf.Module.__init__(self, name="train_step")
        TracedFunction.__init__(self, *args, **kwargs)
        self.weighting_state = [v for w in (weightings or {}).values() for v in w.variables]
