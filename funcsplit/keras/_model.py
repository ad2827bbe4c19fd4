"""`RoutedModel`: Keras ``fit`` / ``evaluate`` / ``predict`` with the loss of a `CompiledSplit`.

Keras unpacks each element of ``compiled.apply(ds)`` as ``(x, y, sample_weight)``: here
``x`` are the model inputs, ``y`` the targets keyed by binding name and ``sample_weight`` the
route and sample-weight leaves keyed by binding name. `RoutedModel` overrides
``compute_loss`` to call ``compiled.loss`` and ``compute_metrics`` to show each binding's
loss and metrics.

Under `tf.distribute`, funcsplit's loss already divides by global denominators: the replicas'
values sum to the loss of the global batch, and Keras sums the replicas' gradients. So the
value is returned as it is (Keras's own losses divide by the number of replicas instead), and
the trackers are fed so that they show the global values, also when the replicas hold batches
of different sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf
from keras.src.losses import loss as keras_loss
from keras.src.utils import tracking

from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import close_matches
from funcsplit._src.errors import raise_if_any
from funcsplit._src.routing import select_output
from funcsplit._src.tf_compiler import CompiledSplit
from funcsplit._src.tf_reduction import route_mask
from funcsplit._src.tf_reduction import safe_targets
from funcsplit._src.tf_replicas import global_sum
from funcsplit._src.tf_replicas import replicas_in_sync
from funcsplit.keras import _saving
from funcsplit.keras import _weighted


class _GlobalBatchMean(keras.metrics.Mean):
    """Keras's ``loss`` tracker, each replica weighted by the mean batch of all replicas.

    Keras feeds the tracker ``replicas × value`` with the replica's own batch size as weight.
    funcsplit's per-replica values sum to the global loss, so the exact global value needs
    the same weight on every replica (the global batch over the number of replicas).
    """

    def update_state(self, values: Any, sample_weight: Any = None) -> Any:
        replicas = replicas_in_sync()
        if sample_weight is not None and replicas > 1:
            sample_weight = global_sum(tf.cast(sample_weight, tf.float32)) / replicas
        return super().update_state(values, sample_weight=sample_weight)


class _RoutedMetrics(keras.metrics.Metric):
    """Metrics per binding over its routed examples, shown as ``<binding>_<metric name>``."""

    def __init__(self, metrics: dict[str, list[keras.metrics.Metric]]):
        super().__init__(name="routed_metrics")
        self._by_binding = metrics
        self._flat = [m for ms in metrics.values() for m in ms]

    @property
    def variables(self) -> list[Any]:
        return [v for m in self._flat for v in m.variables]

    def update_state(self, y_true: dict, y_pred: dict, sample_weight: dict) -> None:
        for name, metrics in self._by_binding.items():
            for metric in metrics:
                metric.update_state(y_true[name], y_pred[name], sample_weight[name])

    def reset_state(self) -> None:
        for metric in self._flat:
            metric.reset_state()

    def result(self) -> dict[str, Any]:
        return {f"{name}_{m.name}": m.result() for name, ms in self._by_binding.items() for m in ms}


def _check_metrics(
    compiled: CompiledSplit, metrics: Mapping[str, Any] | None
) -> dict[str, list[keras.metrics.Metric]]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise SpecError.single(
            "RoutedModel metrics",
            None,
            "a dict {binding name: [keras.metrics.Metric, ...]}",
            type(metrics).__name__,
            "e.g. metrics={'label': [keras.metrics.SparseCategoricalAccuracy()]}",
        )
    problems, out = [], {}
    for name, value in metrics.items():
        if name not in compiled.names:
            problems.append(
                Problem(
                    "RoutedModel metrics",
                    None,
                    f"a binding name, one of {list(compiled.names)}",
                    repr(name),
                    nearby=close_matches(str(name), compiled.names),
                )
            )
            continue
        items = [value] if isinstance(value, keras.metrics.Metric) else list(value)
        bad = [m for m in items if not isinstance(m, keras.metrics.Metric)]
        if bad:
            problems.append(
                Problem(
                    f"RoutedModel metrics[{name!r}]",
                    None,
                    "keras.metrics.Metric instances",
                    repr(bad[0]),
                    "pass e.g. keras.metrics.SparseCategoricalAccuracy()",
                )
            )
            continue
        out[name] = items
    raise_if_any(problems)
    return out


def _check_targets(compiled: CompiledSplit, y: Any) -> None:
    if isinstance(y, Mapping) and all(name in y for name in compiled.names):
        return
    found = f"keys {sorted(y)}" if isinstance(y, Mapping) else f"y of type {type(y).__name__}"
    raise SpecError.single(
        "RoutedModel",
        None,
        f"targets keyed by the binding names {list(compiled.names)}",
        found,
        "fit / evaluate on compiled.apply(ds), which yields (inputs, targets, weights)",
    )


def _check_not_raw(compiled: CompiledSplit, data: Any, where: str) -> None:
    if not isinstance(data, tf.data.Dataset):
        return
    if not compiled.spec.element.problems_with(data.element_spec, batched=True):
        raise SpecError.single(
            f"RoutedModel.{where}",
            None,
            "compiled.apply(ds): (inputs, targets, weights)",
            "the raw dataset, whose elements the split has not split yet",
            f"call {where}(compiled.apply(ds))",
        )


@keras.saving.register_keras_serializable(package="funcsplit")
class RoutedModel(keras.Model):
    """A Keras model that runs ``model`` and takes its loss from a `CompiledSplit`.

    ``fit``, ``evaluate`` and ``predict`` take ``compiled.apply(ds)``. The logs (``History``,
    ``evaluate(return_dict=True)``, the progress bar) hold ``loss`` (the weighted total, plus
    the model's regularization losses, as Keras does) and ``<binding>_loss`` for each binding
    (its unweighted value; over an epoch, batches are weighted by the examples routed to the
    binding, so batches with none routed do not pull it toward 0; under
    ``reduction="sum_over_batch_size"`` by their size, so the epoch value is ``Σ w·l / N``
    whatever the batch size).

    Metrics: ``metrics={binding: [keras.metrics.Metric, ...]}`` here are computed on the
    examples routed to the binding (weighted by its sample weight) and logged as
    ``<binding>_<metric name>``. Metrics given to ``compile`` see ``y_true={binding: target}``
    and ``y_pred={binding: its output}`` (key them by binding name); ``weighted_metrics`` there
    get each binding's route-and-sample weight. Routed-away targets are replaced by zeros
    before any metric sees them (a ``-1`` label cannot crash a metric).

    Weighting: ``weighting=fs.weighting.<name>()`` weighs the bindings as tasks, as in
    `train_step` (``shared``: the variables the tasks share, a list or
    ``model -> variables``, needed when the method ``needs_gram``): the step follows
    ``Σ_t alpha_t ∇L_t``. The method's state lives in non-trainable variables of the
    `RoutedModel` (saved with its weights; ``save`` names the method, and ``load_model``
    takes it back, with its options, from ``custom_objects={"weighting": method, "shared":
    fn}``). The logs add ``<binding>_weight``, the epoch's
    mean ``alpha`` over the steps where the binding was present; ``loss`` stays the plain
    total, comparable across methods and with ``evaluate``, which shows no weights.

    Saving, checkpoints and serving: ``routed.save("m.keras")`` and
    ``keras.models.load_model("m.keras")`` round-trip the inner model, the split (as its
    ``funcsplit.split/1`` document: no code), the metrics, the compile state and the
    optimizer's state, so training resumes exactly; so do Keras's ``ModelCheckpoint`` (full
    or ``save_weights_only``), ``BackupAndRestore`` and ``save_weights`` / ``load_weights``.
    The wrapper builds itself (and its optimizer) from the split's element spec: a fresh
    ``RoutedModel``, compiled as the saved one was, loads weights without a batch of data. A
    split with user callables loads with ``load_model(path, custom_objects={name: fn})`` or
    after ``fs.losses.register(name, fn)``. ``export(dir)`` writes the inner model's
    SavedModel, served with plain ``tf.saved_model.load`` (no funcsplit needed).

    Distribution and XLA: build and compile under ``strategy.scope()`` as usual. Each
    replica's loss is its share of the global loss (funcsplit's global denominators), not
    divided again by the number of replicas as Keras's own losses are; the logs show global
    values. ``compile(jit_compile=True)`` and ``False`` both work (the loss is traced inline
    into Keras's step).

    Args:
        model: any Keras model (functional, sequential or subclassed) whose outputs the
            bindings' ``output`` paths address.
        compiled: the `CompiledSplit` whose ``loss`` trains ``model``.
        weighting: an ``fs.weighting.Method`` that weighs the bindings (tasks), or None.
        shared: the shared variables for a method with ``needs_gram``: a list of variables
            or ``model -> variables`` (called with ``model`` once it is built).
        metrics: optional ``{binding name: [keras.metrics.Metric, ...]}`` computed on each
            binding's routed examples.
        name: the Keras name of the wrapper.

    Attributes:
        model: the wrapped model.
        compiled_split: the `CompiledSplit` (``keras.Model`` already owns ``compiled``).
        weighting: the ``fs.weighting.Method``, or None.

    Raises:
        SpecError: for a ``compiled`` that is not a `CompiledSplit`, metrics keyed by
            unknown binding names, a ``weighting`` that is not a method, a Gram method
            without ``shared``, or ``shared`` variables that ``model`` does not train.

    Examples:
        >>> import funcsplit as fs, keras, tensorflow as tf
        >>> ds = tf.data.Dataset.from_tensor_slices({"x": tf.ones((8, 2)),
        ...                                          "y": tf.zeros((8, 1))}).batch(4)
        >>> split = fs.SplitSpec(fs.ElementSpec.from_dataset(ds), inputs="x",
        ...                      losses=(fs.LossBinding("y", "mse", target="y"),))
        >>> compiled = fs.compile(split)
        >>> routed = fs.keras.RoutedModel(keras.Sequential([keras.layers.Dense(1)]), compiled)
        >>> routed.compile(optimizer="sgd")
        >>> sorted(routed.evaluate(compiled.apply(ds), return_dict=True, verbose=0))
        ['loss', 'y_loss']
    """

    def __init__(
        self,
        model: keras.Model,
        compiled: CompiledSplit,
        *,
        weighting: Any = None,
        shared: Any = None,
        metrics: Mapping[str, Any] | None = None,
        name: str | None = None,
    ):
        if not isinstance(compiled, CompiledSplit):
            raise SpecError.single(
                "RoutedModel",
                None,
                "a CompiledSplit (from fs.compile(split))",
                type(compiled).__name__,
                "pass fs.compile(split)",
            )
        routed_metrics = _check_metrics(compiled, metrics)
        methods = _weighted.check_methods("RoutedModel", weighting, ())
        _weighted.check_shared_given("RoutedModel", methods, shared)
        super().__init__(name=name)
        self.model = model
        self.compiled_split = compiled
        self.binding_loss_trackers = [keras.metrics.Mean(name=f"{n}_loss") for n in compiled.names]
        self.routed_metrics = _RoutedMetrics(routed_metrics) if routed_metrics else None
        self._set_weighting(weighting, shared)
        if weighting is not None:
            self.binding_weight_trackers = [
                keras.metrics.Mean(name=f"{n}_weight") for n in compiled.names
            ]
            self._resolve_shared(only_built=True)

    @tracking.no_automatic_dependency_tracking
    def _set_weighting(self, weighting: Any, shared: Any) -> None:
        self.weighting = weighting
        self._shared = shared
        self._task_weighting = None
        if weighting is not None:
            self._task_weighting = _weighted.TaskWeighting(
                weighting, self.compiled_split.names, self._state_variable
            )

    def _state_variable(self, name: str, value: tf.Tensor) -> Any:
        return self.add_weight(
            shape=value.shape,
            initializer=lambda shape, dtype: value,
            dtype=value.dtype.name,
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
            name=name,
        )

    def _resolve_shared(self, *, only_built: bool = False) -> None:
        weighting = self._task_weighting
        if weighting is None or weighting.shared or not weighting.method.needs_gram:
            return
        if only_built and not self.model.built:
            return
        weighting.shared = _weighted.resolve_shared("RoutedModel", self._shared, self.model, None)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """Runs the wrapped model."""
        return self.model(inputs, training=training)

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Keras builds from the first batch under a strategy only, and otherwise at the first
        # trace: too late for BackupAndRestore, which loads the weights at train begin. The
        # split's spec gives the batch's structure, dtypes and shapes without reading one.
        if not _saving.needs_build(self):
            return None
        if data_batch is None and not _saving.unknown_input_dims(self.compiled_split):
            return _saving.build_from_split(self)
        # Under a strategy, Keras builds from the first batch averaged over the replicas
        # (strategy.reduce("MEAN")), which fails for bool route leaves and for parts of
        # different sizes. One replica's part has the same structure, dtypes and shapes.
        strategy = self._distribute_strategy
        if strategy is None or iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(
                lambda v: (
                    strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                next(it),
            )
            break
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def _build_if_needed(self) -> None:
        if _saving.needs_build(self):
            _saving.build_from_split(self)

    def fit(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Keras's ``fit``; refuses the raw dataset (pass ``compiled.apply(ds)``).

        Raises:
            SpecError: if ``x`` or ``validation_data`` is the dataset before `apply`.
        """
        _check_not_raw(self.compiled_split, x, "fit")
        _check_not_raw(self.compiled_split, kwargs.get("validation_data"), "fit")
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Keras's ``evaluate``; refuses the raw dataset (pass ``compiled.apply(ds)``).

        Raises:
            SpecError: if ``x`` is the dataset before `apply`.
        """
        _check_not_raw(self.compiled_split, x, "evaluate")
        if self._task_weighting is None or args:
            return super().evaluate(x, *args, **kwargs)
        # The task weights are training quantities: evaluation does not show them.
        return_dict = kwargs.pop("return_dict", False)
        logs = super().evaluate(x, return_dict=True, **kwargs)
        weights = {t.name for t in self.binding_weight_trackers}
        logs = {k: v for k, v in logs.items() if k not in weights}
        return logs if return_dict else self._flatten_metrics_in_order(logs)

    def compile(self, optimizer: Any = "rmsprop", **kwargs: Any) -> None:
        """Keras's ``compile`` without ``loss`` / ``loss_weights`` (the split gives the loss).

        Raises:
            SpecError: if ``loss`` or ``loss_weights`` is given.
        """
        given = [k for k in ("loss", "loss_weights") if kwargs.get(k) is not None]
        if given:
            raise SpecError.single(
                "RoutedModel.compile",
                None,
                "no loss= / loss_weights=",
                ", ".join(given),
                "the loss comes from the CompiledSplit: set LossBinding fn= and weight=",
            )
        super().compile(optimizer=optimizer, **kwargs)
        self._install_loss_tracker()

    @tracking.no_automatic_dependency_tracking
    def _install_loss_tracker(self) -> None:
        self._loss_tracker = _GlobalBatchMean(name="loss")

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> tf.Tensor:
        """``compiled.loss(y, y_pred, sample_weight).total`` plus regularization losses.

        Also updates the ``<binding>_loss`` trackers. Inside a replica context the value is
        this replica's share of the global loss (the shares sum to it), which is what Keras
        differentiates and sums across replicas.
        """
        del x, training
        return self._routed_loss(y, y_pred, sample_weight)[1]

    def _routed_loss(self, y: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any, Any]:
        """``(LossResult, total + regularization, regularization or None)``; updates the
        ``<binding>_loss`` trackers."""
        _check_targets(self.compiled_split, y)
        # Inline in Keras's traced step: a nested tf.function's gradient makes XLA treat
        # every input as a compile-time constant (a recompile per batch under jit_compile).
        loss = self.compiled_split.loss.python_function
        result = loss(y, y_pred, {} if sample_weight is None else sample_weight)
        replicas = replicas_in_sync()
        for bound, tracker in zip(self.compiled_split.plan.losses, self.binding_loss_trackers):
            value = global_sum(result.per_loss[bound.name])
            if bound.binding.reduction == "sum_over_batch_size":
                # Keras's Σ w·l / B: each batch weighs its size (as Keras's loss tracker
                # does), so the epoch value is Σ w·l / N whatever the batching.
                target = tf.nest.flatten(y[bound.name], expand_composites=False)[0]
                count = tf.shape(target)[0]
            else:
                count = result.counts[bound.name]
            count = global_sum(tf.cast(count, tf.float32))
            tracker.update_state(value, sample_weight=count / replicas)
        total, penalty = result.total, None
        if self.losses:
            extra = tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for v in self.losses])
            penalty = extra / replicas
            total = total + penalty
        return result, total, penalty

    def train_step(self, data: Any) -> dict[str, Any]:
        """Keras's step; with ``weighting``, the step follows ``Σ_t alpha_t ∇L_t``.

        The logged ``loss`` stays the plain total (``Σ_b weight_b · loss_b`` plus
        regularization, comparable across methods and with ``evaluate``);
        ``<binding>_weight`` is the epoch's mean ``alpha`` over the steps where the binding
        was present.
        """
        weighting = self._task_weighting
        if weighting is None:
            return super().train_step(data)
        self._resolve_shared()
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        weights = {b.name: b.weight for b in self.compiled_split.spec.losses}
        with tf.GradientTape(persistent=weighting.method.needs_gram) as tape:
            y_pred = self(x, training=True)
            result, total, penalty = self._routed_loss(y, y_pred, sample_weight)
            losses = weighting.task_losses(result, weights)
        batch = tf.shape(next(v for v in tf.nest.flatten(x) if v is not None))[0]
        self._loss_tracker.update_state(
            keras_loss.unscale_loss_for_distribution(total), sample_weight=batch
        )
        variables = self.trainable_weights
        gradients, alpha, present = _weighted.weighted_gradients(
            tape, weighting, losses, result, variables, penalty
        )
        del tape
        self.optimizer.apply_gradients(zip(gradients, variables))
        share = tf.cast(present, tf.float32) / replicas_in_sync()
        for t, tracker in enumerate(self.binding_weight_trackers):
            tracker.update_state(alpha[t], sample_weight=share[t])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def compute_metrics(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None
    ) -> dict[str, Any]:
        """Updates compile and routed metrics per binding; returns all metric results."""
        del x
        if self._compile_metrics is not None or self.routed_metrics is not None:
            extra = {} if sample_weight is None else sample_weight
            y_true, outputs, weights = self._per_binding(y, y_pred, extra)
            if self._compile_metrics is not None:
                self._compile_metrics.update_state(y_true, outputs, weights)
            if self.routed_metrics is not None:
                self.routed_metrics.update_state(y_true, outputs, weights)
        return self.get_metrics_result()

    def _per_binding(self, y: dict, y_pred: Any, sample_weight: dict) -> tuple[dict, dict, dict]:
        plan = self.compiled_split.plan
        y_true, outputs, weights = {}, {}, {}
        for bound in plan.losses:
            target = y[bound.name]
            extra = sample_weight.get(bound.name, {})
            batch = tf.shape(tf.nest.flatten(target, expand_composites=False)[0])[0]
            weight = tf.ones([batch], tf.float32)
            if bound.route is not None:
                mask = route_mask(bound.route, extra["route"])
                target = safe_targets(target, mask)
                weight = tf.cast(mask, tf.float32)
            if "sample_weight" in extra:
                weight = weight * tf.reshape(tf.cast(extra["sample_weight"], tf.float32), [-1])
            y_true[bound.name] = target
            outputs[bound.name] = select_output(bound, y_pred)
            weights[bound.name] = weight
        return y_true, outputs, weights

    def save_weights(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Keras's ``save_weights``; builds the model and its optimizer from the split first.

        The ``.weights.h5`` file holds the inner model's weights and, once compiled, the
        optimizer's state (Adam's moments and step count), so `load_weights` resumes training.
        """
        self._build_if_needed()
        return super().save_weights(filepath, *args, **kwargs)

    def load_weights(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Keras's ``load_weights``, with no need to build by hand first.

        The wrapper, the inner model and (once compiled) the optimizer are built from the
        split's element spec, so a fresh ``RoutedModel(model, compiled)`` compiled as the saved
        one was loads a ``.weights.h5`` (or ``.keras``) file, optimizer state included.

        Raises:
            SpecError: if the model is not built and an input's non-batch dimensions are
                unknown in the split's element spec.
        """
        self._build_if_needed()
        return super().load_weights(filepath, *args, **kwargs)

    def export(
        self,
        filepath: Any,
        format: str = "tf_saved_model",  # noqa: A002 - Keras's argument name
        verbose: bool | None = None,
        input_signature: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Exports the inner model for inference; the artifact needs no funcsplit to serve.

        Delegates to ``self.model.export``. The serving signature is the split's inputs (one
        `tf.TensorSpec` per input leaf, named by its place in ``inputs``, batch ``None``)
        unless ``input_signature`` is given. Load it with plain ``tf.saved_model.load(dir)``
        and call ``.serve(inputs)``.

        Raises:
            SpecError: if the model is not built and an input's non-batch dimensions are
                unknown in the split's element spec.

        Examples:
            >>> import funcsplit as fs, keras, tempfile, tensorflow as tf
            >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
            ...                                       "y": fs.Leaf(tf.float32, (None, 1))})
            >>> compiled = fs.compile(fs.SplitSpec(spec, inputs="x",
            ...                       losses=(fs.LossBinding("y", "mse", target="y"),)))
            >>> routed = fs.keras.RoutedModel(keras.Sequential([keras.layers.Dense(1)]),
            ...                               compiled)
            >>> directory = tempfile.mkdtemp()
            >>> routed.export(directory, verbose=False)
            >>> served = tf.saved_model.load(directory)  # keep it: it owns the variables
            >>> served.serve(tf.ones((3, 2))).shape
            TensorShape([3, 1])
        """
        self._build_if_needed()
        if input_signature is None:
            input_signature = _saving.export_signature(self.compiled_split)
        return self.model.export(
            filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs
        )

    def save(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Keras's ``save``: the inner model, the split, the compile and optimizer state.

        ``keras.models.load_model(filepath)`` (after ``import funcsplit``) gives back a
        `RoutedModel` that continues training where this one stopped. The split is written
        as its ``funcsplit.split/1`` document; its user callables are named holes, filled at
        load time from ``custom_objects`` or `funcsplit.losses.register`.

        Raises:
            SpecError: for a split part JSON cannot hold, or if the model is not built and
                an input's non-batch dimensions are unknown in the split's element spec.

        Examples:
            >>> import funcsplit as fs, keras, os, tempfile, tensorflow as tf
            >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
            ...                                       "y": fs.Leaf(tf.float32, (None, 1))})
            >>> compiled = fs.compile(fs.SplitSpec(spec, inputs="x",
            ...                       losses=(fs.LossBinding("y", "mse", target="y"),)))
            >>> routed = fs.keras.RoutedModel(keras.Sequential([keras.layers.Dense(1)]),
            ...                               compiled)
            >>> routed.compile(optimizer="adam")
            >>> path = os.path.join(tempfile.mkdtemp(), "m.keras")
            >>> routed.save(path)
            >>> loaded = keras.models.load_model(path)
            >>> loaded.compiled_split.spec == compiled.spec, type(loaded.optimizer).__name__
            (True, 'Adam')
        """
        self._build_if_needed()
        return super().save(filepath, *args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        """The inner model's and the metrics' Keras configs, and the split's document."""
        return _saving.config(self)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> RoutedModel:
        """Rebuilds a `RoutedModel` from `get_config`, filling the split's callable holes.

        Raises:
            SpecError: for a malformed split document, or a callable hole that neither
                ``custom_objects``, Keras's registry nor `funcsplit.losses.register` fills
                (naming the binding).
        """
        if custom_objects is None:  # load_model already holds its custom_objects' scope
            return cls(**_saving.arguments(config))
        with keras.saving.custom_object_scope(custom_objects):
            return cls(**_saving.arguments(config))

    def get_build_config(self) -> dict[str, Any]:
        """Says that loading builds the model from the split's element spec."""
        return {"from_split": True}

    def build_from_config(self, config: dict[str, Any]) -> None:
        """Builds the model from the split's element spec (the inner model's own, if built)."""
        del config
        if not _saving.unknown_input_dims(self.compiled_split) or not self.model.built:
            _saving.build_from_split(self)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compiles as the saved model was (its optimizer built, so its state loads)."""
        config = keras.saving.deserialize_keras_object(config)
        for key in ("loss", "loss_weights"):
            config.pop(key, None)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)
