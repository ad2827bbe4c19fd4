"""Whether a dataset yields batches: what its pipeline says, else what its shapes say.

An element spec alone cannot always tell a batch from one example: ``{"tokens": [None]}`` is
one sentence of conll2003 or a batch of scalars. The pipeline often can: a dataset that went
through ``batch`` / ``padded_batch`` / ``ragged_batch`` (``tfds.load(batch_size=...)`` uses
``padded_batch``) yields batches, one that went through ``unbatch`` or came from
``from_tensor_slices`` yields examples, and transformations such as ``map``, ``filter``,
``shuffle`` or ``prefetch`` keep what their input yields. Only when the pipeline does not say
(``from_generator``, ``interleave``, TFDS's readers) do the shapes decide, and only when they
are clear: a scalar leaf cannot be a batch. Anything else is a `SpecError` asking for
``batched=``: funcsplit never guesses.

`tf.data` does not expose its pipeline publicly; the transformations are read by the names
of their dataset classes, and a name funcsplit does not know makes the pipeline say nothing
(the shapes decide, or the caller is asked), never a wrong answer.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from funcsplit._src import paths
from funcsplit._src.errors import Problem
from funcsplit._src.errors import SpecError
from funcsplit._src.errors import raise_if_any

_BATCHES = frozenset(
    {
        "_BatchDataset",
        "_ParallelBatchDataset",
        "_PaddedBatchDataset",
        "_RebatchDataset",
        "_MapAndBatchDataset",
        "_DenseToSparseBatchDataset",
    }
)
_EXAMPLES = frozenset({"_UnbatchDataset", "_TensorSliceDataset", "_SparseTensorSliceDataset"})
_SAME_AS_INPUT = frozenset(
    {
        "_MapDataset",
        "_ParallelMapDataset",
        "_FilterDataset",
        "_PrefetchDataset",
        "_ShuffleDataset",
        "_RepeatDataset",
        "_TakeDataset",
        "_SkipDataset",
        "_ShardDataset",
        "CacheDataset",
        "_CacheDataset",
        "_OptionsDataset",
        "_AssertCardinalityDataset",
        "_IgnoreErrorsDataset",
        "_TakeWhileDataset",
        "_UniqueDataset",
        "_ModelDataset",
        "_MaxIntraOpParallelismDataset",
        "_PrivateThreadPoolDataset",
        "_AutoShardDataset",
        "_RestructuredDataset",
        "_SnapshotDataset",
        "_ApplyOptionsDataset",
    }
)
_ALL_INPUTS = frozenset({"_ZipDataset", "_ConcatenateDataset"})
_DATA_INPUTS = frozenset({"_DirectedInterleaveDataset"})  # the first input is the selector


def _inputs(ds: tf.data.Dataset) -> list[tf.data.Dataset]:
    try:
        return list(ds._inputs())  # tf.data walks its pipelines with it too
    except (AttributeError, NotImplementedError, TypeError):
        return []


def pipeline_batched(ds: tf.data.Dataset) -> bool | None:
    """``True`` / ``False`` when the pipeline says it yields batches / examples, else ``None``.

    Examples:
        >>> import funcsplit._src.batching as batching, tensorflow as tf
        >>> ds = tf.data.Dataset.from_tensor_slices({"tokens": tf.ragged.constant([[1], [2, 3]])})
        >>> batching.pipeline_batched(ds), batching.pipeline_batched(ds.ragged_batch(2).prefetch(1))
        (False, True)
        >>> print(batching.pipeline_batched(ds.interleave(lambda ex: ds)))
        None
    """
    name = type(ds).__name__
    if name in _BATCHES:
        return True
    if name in _EXAMPLES:
        return False
    inputs = _inputs(ds)
    if name in _SAME_AS_INPUT and len(inputs) == 1:
        return pipeline_batched(inputs[0])
    if name in _ALL_INPUTS or name in _DATA_INPUTS:
        data = inputs[1:] if name in _DATA_INPUTS else inputs
        answers = {pipeline_batched(d) for d in data}
        return answers.pop() if len(answers) == 1 else None
    return None


def infer(source: Any, leaves: list[tuple[tuple, Any]], where: str) -> bool:
    """Whether ``source`` (a dataset or an element spec) yields batches; asks when unclear.

    Args:
        source: a `tf.data.Dataset` (its pipeline is read) or its ``element_spec``.
        leaves: ``(keys, leaf)`` pairs of its leaves (`Leaf` values).
        where: names the caller in errors.

    Raises:
        SpecError: when neither the pipeline nor the shapes say it, with what to pass.
    """
    if isinstance(source, tf.data.Dataset):
        known = pipeline_batched(source)
        if known is not None:
            return known
    if any(leaf.rank == 0 for _, leaf in leaves):
        return False
    shown = ", ".join(f"{paths.render(keys)}: {leaf.describe()}" for keys, leaf in leaves[:4])
    more = f" (and {len(leaves) - 4} more)" if len(leaves) > 4 else ""
    if all(leaf.shape[0] is None for _, leaf in leaves):
        found = (
            f"every leaf's first dimension is None ({shown}{more}), and the pipeline "
            "(from_generator, interleave, a TFDS reader, ...) does not say: each leaf may be "
            "one example's sequence or a batch"
        )
    else:
        found = f"leaves with fixed first dimensions ({shown}{more}), no scalar leaf"
    raise SpecError.single(
        where,
        None,
        "a dataset that says whether it yields batches: a batch / padded_batch / "
        "ragged_batch in its pipeline (tfds.load(batch_size=...) has one), or a scalar leaf",
        found,
        "say which it is: batched=False for examples (tfds.load without batch_size), "
        "batched=True for batches",
    )


def check_batched(leaves: list[tuple[tuple, Any]], where: str) -> None:
    """A batch has a batch dimension: a `SpecError` naming every scalar leaf."""
    raise_if_any(
        [
            Problem(
                where,
                paths.render(keys),
                "a batch dimension on every leaf of a batched dataset",
                f"a scalar {leaf.describe()}",
                "give it one value per example before batching, or pass batched=False if "
                "the elements are single examples",
            )
            for keys, leaf in leaves
            if leaf.rank == 0
        ]
    )
