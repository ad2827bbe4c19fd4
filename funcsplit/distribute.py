"""Scaling out: the split under `tf.distribute` and tf.data service, and exact loss sums.

funcsplit's losses are exact under `tf.distribute`: inside a replica context the
denominators of every per-example loss (routed counts, weight sums, the batch size for
``reduction="sum_over_batch_size"``) are summed across replicas, so each replica's
`LossResult` is its *share* of the global loss. Summing the shares (`reduce_result`) gives
the loss of the whole global batch, and the gradients summed over replicas (what Keras and
`tf.distribute` optimizers do) equal the single-device gradients of that batch, also when
replicas hold different numbers of routed examples. A batch-level loss (``"dice"``) cannot be
combined exactly: each replica's value is weighted by its share of the routed examples.

The helpers here are thin: they check the dataset against the spec, apply the split, and
hand over to `tf.distribute` or tf.data service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from funcsplit._src.errors import SpecError
from funcsplit._src.result import LossResult
from funcsplit._src.tf_compiler import CompiledSplit
from funcsplit._src.tf_replicas import global_sum
from funcsplit._src.tf_replicas import replicas_in_sync

__all__ = [
    "apply_with_service",
    "distribute_dataset",
    "distribute_datasets_from_function",
    "global_sum",
    "reduce_result",
    "replicas_in_sync",
]

_MODES = ("parallel_epochs", "distributed_epoch")


def _check_compiled(compiled: Any, where: str) -> None:
    if not isinstance(compiled, CompiledSplit):
        raise SpecError.single(
            where, None, "a CompiledSplit from fs.compile(split)", type(compiled).__name__
        )


def distribute_dataset(
    strategy: tf.distribute.Strategy,
    compiled: CompiledSplit,
    ds: tf.data.Dataset,
    *,
    options: tf.distribute.InputOptions | None = None,
) -> Any:
    """Checks a batched dataset, applies the split, and distributes it over a strategy.

    ``ds`` yields *global* batches; `tf.distribute` cuts each into one part per replica
    (parts may differ in size, and in routed counts: the losses stay exact). Each
    distributed element is the ``(inputs, targets, weights)`` of `CompiledSplit.split`.

    Args:
        strategy: a `tf.distribute.Strategy` (Mirrored, MultiWorkerMirrored, TPU, default).
        compiled: the compiled split.
        ds: a dataset of global batches that fits ``compiled.spec.element``.
        options: passed to ``strategy.experimental_distribute_dataset``.

    Returns:
        The distributed dataset (iterate it, and call ``strategy.run`` on each element).

    Raises:
        SpecError: if ``ds`` is not batched or does not fit the spec (every offending path
            named), before any op is built.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None,))})
        >>> c = fs.compile(fs.SplitSpec(spec, inputs="x",
        ...                             losses=(fs.LossBinding("y", "mse", target="y"),)))
        >>> ds = tf.data.Dataset.from_tensor_slices({"x": tf.ones((8, 2)), "y": tf.zeros(8)})
        >>> dist = fs.distribute.distribute_dataset(tf.distribute.get_strategy(), c, ds.batch(4))
        >>> inputs, targets, weights = next(iter(dist))
        >>> inputs.shape, sorted(targets)
        (TensorShape([4, 2]), ['y'])
        >>> fs.distribute.distribute_dataset(tf.distribute.get_strategy(), c, ds)
        Traceback (most recent call last):
        ...
        funcsplit._src.errors.SpecError: ...
    """
    _check_compiled(compiled, "distribute_dataset")
    compiled.spec.element.check(ds, batched=True)
    return strategy.experimental_distribute_dataset(compiled.apply(ds), options=options)


def distribute_datasets_from_function(
    strategy: tf.distribute.Strategy,
    compiled: CompiledSplit,
    dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    *,
    options: tf.distribute.InputOptions | None = None,
) -> Any:
    """Like ``strategy.distribute_datasets_from_function``, with the split applied per input.

    ``dataset_fn(input_context)`` returns the dataset of one input pipeline (one per worker
    under `tf.distribute.MultiWorkerMirroredStrategy`), batched to the *per-replica* batch
    size (``input_context.get_per_replica_batch_size(global_batch)``) and sharded as you
    choose. Each is checked against the spec and split where it is built.

    Args:
        strategy: a `tf.distribute.Strategy`.
        compiled: the compiled split.
        dataset_fn: builds one pipeline's batched dataset from a `tf.distribute.InputContext`.
        options: passed to ``strategy.distribute_datasets_from_function``.

    Returns:
        The distributed dataset of ``(inputs, targets, weights)``.

    Raises:
        SpecError: when a pipeline's dataset is not batched or does not fit the spec.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None,))})
        >>> c = fs.compile(fs.SplitSpec(spec, inputs="x",
        ...                             losses=(fs.LossBinding("y", "mse", target="y"),)))
        >>> def dataset_fn(ctx):
        ...     ds = tf.data.Dataset.from_tensor_slices({"x": tf.ones((8, 2)), "y": tf.zeros(8)})
        ...     ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        ...     return ds.batch(ctx.get_per_replica_batch_size(4))
        >>> dist = fs.distribute.distribute_datasets_from_function(
        ...     tf.distribute.get_strategy(), c, dataset_fn)
        >>> next(iter(dist))[0].shape
        TensorShape([4, 2])
    """
    _check_compiled(compiled, "distribute_datasets_from_function")

    def split_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = dataset_fn(context)
        compiled.spec.element.check(ds, batched=True)
        return compiled.apply(ds)

    return strategy.distribute_datasets_from_function(split_fn, options=options)


def apply_with_service(
    compiled: CompiledSplit,
    ds: tf.data.Dataset,
    *,
    service: str,
    job_name: str | None = None,
    processing_mode: str = "parallel_epochs",
    **distribute_kwargs: Any,
) -> tf.data.Dataset:
    """Checks ``ds``, applies the split, and moves the pipeline to a tf.data service.

    The split is a pure, stateless graph function, so the service's workers run it: the
    dataset (up to and including the split) is serialised to the dispatcher and each worker
    produces ``(inputs, targets, weights)``. Batch before or after: both work.

    Args:
        compiled: the compiled split.
        ds: a dataset that fits ``compiled.spec.element`` (batched or not).
        service: the dispatcher address, e.g. ``"grpc://dispatcher:5050"`` (or
            ``dispatch_server.target``).
        job_name: share one job (and its elements) among consumers with the same name.
        processing_mode: ``"parallel_epochs"`` (every worker produces the whole dataset;
            shuffle differently per worker) or ``"distributed_epoch"`` (each element once
            across workers; needs a splittable source such as ``from_tensor_slices``,
            ``range`` or ``list_files``), or a `tf.data.experimental.service.ShardingPolicy`.
        **distribute_kwargs: other arguments of `tf.data.experimental.service.distribute`.

    Returns:
        A dataset whose elements come from the service, already split.

    Raises:
        SpecError: when ``ds`` does not fit the spec, or ``processing_mode`` is unknown.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> spec = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.float32, (None, 2)),
        ...                                       "y": fs.Leaf(tf.float32, (None,))})
        >>> c = fs.compile(fs.SplitSpec(spec, inputs="x",
        ...                             losses=(fs.LossBinding("y", "mse", target="y"),)))
        >>> ds = tf.data.Dataset.from_tensor_slices({"x": tf.ones((4, 2)), "y": tf.zeros(4)})
        >>> fs.distribute.apply_with_service(c, ds, service="grpc://localhost:5050",
        ...                                  processing_mode="round_robin")
        Traceback (most recent call last):
        ...
        funcsplit._src.errors.SpecError: ...

        With a running dispatcher (``tf.data.experimental.service.DispatchServer``) and
        workers, ``apply_with_service(c, ds, service=dispatcher.target)`` yields
        ``(inputs, targets, weights)`` produced by the workers; ``docs/scaling.md`` shows
        the whole set-up.
    """
    _check_compiled(compiled, "apply_with_service")
    if isinstance(processing_mode, str) and processing_mode not in _MODES:
        raise SpecError.single(
            "apply_with_service", None, f"processing_mode in {_MODES}", repr(processing_mode)
        )
    split = compiled.apply(ds)
    return split.apply(
        tf.data.experimental.service.distribute(
            processing_mode=processing_mode,
            service=service,
            job_name=job_name,
            **distribute_kwargs,
        )
    )


def reduce_result(strategy: tf.distribute.Strategy, result: Any) -> LossResult:
    """Sums the per-replica `LossResult` of ``strategy.run`` into the global batch's result.

    Each replica's ``total`` and ``per_loss`` are its share of the global loss (the
    denominators are already global), so the global values are their **sum**, not their
    mean; ``counts`` are summed too. The task ``weights`` of a weighted step are the same on
    every replica (computed from global values), so they come back as they are. Call it in a
    cross-replica context (outside ``strategy.run``); with one replica it returns the values
    unchanged.

    Args:
        strategy: the strategy that ran the step.
        result: a `LossResult` of per-replica values (what ``strategy.run`` returned).

    Returns:
        A `LossResult` of plain tensors for the whole global batch.

    Examples:
        >>> import funcsplit as fs, tensorflow as tf
        >>> r = fs.LossResult(tf.constant(1.5), {"y": tf.constant(1.5)}, {"y": tf.constant(3)})
        >>> float(fs.distribute.reduce_result(tf.distribute.get_strategy(), r).total)
        1.5
    """

    def total(value: Any) -> Any:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

    def same(value: Any) -> Any:
        return strategy.experimental_local_results(value)[0]

    return LossResult(
        total=total(result.total),
        per_loss={name: total(v) for name, v in result.per_loss.items()},
        counts={name: total(v) for name, v in result.counts.items()},
        weights=None
        if result.weights is None
        else {name: same(v) for name, v in result.weights.items()},
    )
