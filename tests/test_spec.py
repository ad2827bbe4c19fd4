"""Tests for `fs.Leaf` and `fs.ElementSpec`."""

import collections

import pytest
import tensorflow as tf

import funcsplit as fs

Pair = collections.namedtuple("Pair", ["left", "right"])


def _spec():
    return fs.ElementSpec.from_structure(
        {
            "image": tf.TensorSpec((None, 8, 8, 3), tf.float32),
            "label_dict": {"category_1": fs.Leaf(tf.int32, (None,)), "b": fs.Leaf(tf.int64)},
            "tokens": tf.RaggedTensorSpec((None, None), tf.int32, 1),
            "image/filename": fs.Leaf(tf.string),
            "pair": Pair(fs.Leaf(tf.bool), [fs.Leaf(tf.float32, (None, 2))]),
        }
    )


class TestLeaf:
    def test_from_type_specs(self):
        assert fs.Leaf.from_type_spec(tf.TensorSpec((None, 3), tf.float32)) == fs.Leaf(
            tf.float32, (None, 3)
        )
        ragged = fs.Leaf.from_type_spec(tf.RaggedTensorSpec((None, None, 4), tf.float32, 1))
        assert ragged.kind == "ragged" and ragged.ragged_rank == 1
        sparse = fs.Leaf.from_type_spec(tf.SparseTensorSpec((None, 5), tf.int64))
        assert sparse.kind == "sparse"

    def test_type_spec_round_trip_and_relaxed_batch(self):
        leaf = fs.Leaf(tf.float32, (16, 3))
        assert leaf.type_spec() == tf.TensorSpec((16, 3), tf.float32)
        assert leaf.type_spec(relax_batch=True) == tf.TensorSpec((None, 3), tf.float32)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"dtype": "no-such-dtype"},
            {"dtype": tf.float32, "shape": 3},
            {"dtype": tf.float32, "shape": (None, -1)},
            {"dtype": tf.float32, "shape": (None,), "kind": "ragged"},
            {"dtype": tf.float32, "shape": (None, 2), "ragged_rank": 1},
        ],
        ids=["dtype", "int-shape", "negative-dim", "ragged-rank-1", "ragged-rank-on-dense"],
    )
    def test_rejects_bad_leaves(self, kwargs):
        with pytest.raises((fs.SpecError, ValueError)):
            fs.Leaf(**kwargs)

    def test_hashable_and_equal_by_value(self):
        assert hash(fs.Leaf("int32", [None])) == hash(fs.Leaf(tf.int32, (None,)))


class TestElementSpec:
    def test_paths_in_tf_nest_order(self):
        spec = _spec()
        flat = tf.nest.flatten(spec.type_spec(), expand_composites=False)
        assert len(spec.paths) == len(flat)
        assert [str(p) for p in spec.paths] == [
            "image",
            "image/filename",
            "label_dict/b",
            "label_dict/category_1",
            "pair/left",
            "pair/right/0",
            "tokens",
        ]
        # the order is tf.nest's: each path's leaf matches tf.nest's flattened spec
        for path, spec_leaf in zip(spec.paths, flat):
            assert spec[path].type_spec(relax_batch=True) == spec_leaf

    def test_getitem_returns_leaves_and_subtrees(self):
        spec = _spec()
        assert spec["label_dict/category_1"] == fs.Leaf(tf.int32, (None,))
        sub = spec["label_dict"]
        assert isinstance(sub, fs.ElementSpec)
        assert [str(p) for p in sub.paths] == ["b", "category_1"]
        assert spec[("image/filename",)] == fs.Leaf(tf.string)
        assert spec["pair/right/0"] == fs.Leaf(tf.float32, (None, 2))

    def test_equal_and_hash_ignore_dict_key_order(self):
        a = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.int32), "y": {"p": fs.Leaf(tf.bool)}})
        b = fs.ElementSpec.from_structure({"y": {"p": fs.Leaf(tf.bool)}, "x": fs.Leaf(tf.int32)})
        assert a == b and hash(a) == hash(b)
        c = fs.ElementSpec.from_structure({"x": fs.Leaf(tf.int64), "y": {"p": fs.Leaf(tf.bool)}})
        assert a != c

    def test_tuple_and_list_differ(self):
        a = fs.ElementSpec.from_structure((fs.Leaf(tf.int32),))
        b = fs.ElementSpec.from_structure([fs.Leaf(tf.int32)])
        assert a != b

    def test_bad_structure_names_every_path(self):
        with pytest.raises(fs.SpecError) as info:
            fs.ElementSpec.from_structure({"a": 3, "b": {"c": "text"}, "d": fs.Leaf(tf.int32)})
        assert set(info.value.paths) == {"a", "b/c"}

    def test_from_dataset_batched_and_unbatched(self):
        ds = tf.data.Dataset.from_tensor_slices(
            {"x": tf.zeros((8, 3)), "y": tf.zeros((8,), tf.int32)}
        )
        unbatched = fs.ElementSpec.from_dataset(ds)
        batched = fs.ElementSpec.from_dataset(ds.batch(4))
        assert unbatched == batched
        assert batched["x"] == fs.Leaf(tf.float32, (None, 3))

    def test_from_dataset_asks_when_it_cannot_tell(self):
        ds = tf.data.Dataset.from_generator(
            lambda: iter(()), output_signature={"x": tf.TensorSpec((4, 3, 2), tf.float32)}
        )
        with pytest.raises(fs.SpecError, match="batched="):
            fs.ElementSpec.from_dataset(ds)
        spec = fs.ElementSpec.from_dataset(ds, batched=True)
        assert spec["x"].shape == (4, 3, 2)
        known = tf.data.Dataset.from_tensor_slices({"x": tf.zeros((8, 3, 2))}).batch(4, True)
        assert fs.ElementSpec.from_dataset(known) == spec  # the pipeline says it: batch

    def test_batched_adds_a_leading_dimension(self):
        spec = fs.ElementSpec.from_structure(
            {"t": tf.RaggedTensorSpec((None,), tf.int32, 0), "s": fs.Leaf(tf.int32, ())},
            batched=False,
        )
        assert spec["s"].shape == (None,)
        assert spec["t"].shape == (None, None)


class TestCheck:
    def _ds(self, **override):
        data = {
            "image": tf.zeros((4, 8, 8, 3)),
            "label": tf.zeros((4,), tf.int32),
            "mask": tf.zeros((4, 8, 8, 1), tf.int32),
        }
        data.update(override)
        return tf.data.Dataset.from_tensor_slices(data)

    def _spec(self):
        return fs.ElementSpec.from_dataset(self._ds().batch(2))

    def test_accepts_batched_and_unbatched(self):
        spec = self._spec()
        spec.check(self._ds())
        spec.check(self._ds().batch(3))
        spec.check(self._ds().batch(2, drop_remainder=True))

    def test_names_every_mismatch(self):
        ds = self._ds(label=tf.zeros((4,), tf.int64), mask=tf.zeros((4, 8, 7, 1), tf.int32))
        with pytest.raises(fs.SpecError) as info:
            self._spec().check(ds.batch(2))
        assert set(info.value.paths) == {"label", "mask"}
        message = str(info.value)
        assert "dtype int32" in message and "int64" in message
        assert "int32[None, 8, 8, 1]" in message and "int32[None, 8, 7, 1]" in message

    def test_missing_and_extra_leaves(self):
        data = {"image": tf.zeros((4, 8, 8, 3)), "labels": tf.zeros((4,), tf.int32)}
        data["mask"] = tf.zeros((4, 8, 8, 1), tf.int32)
        with pytest.raises(fs.SpecError) as info:
            self._spec().check(tf.data.Dataset.from_tensor_slices(data).batch(2))
        assert set(info.value.paths) == {"label", "labels"}
        assert "did you mean: labels" in str(info.value)

    def test_ragged_versus_dense(self):
        spec = fs.ElementSpec.from_structure({"t": tf.RaggedTensorSpec((None, None), tf.int32, 1)})
        with pytest.raises(fs.SpecError, match="ragged"):
            spec.check({"t": tf.TensorSpec((None, 5), tf.int32)})


# One example of each kind, as a per-example dataset yields it; tf.data's own ragged_batch
# makes the batch spec, so the rule is held against TensorFlow, not against funcsplit.
_EXAMPLES = {
    "boxes": tf.TensorSpec((None, 4), tf.float32),
    "image": tf.TensorSpec((None, None, 3), tf.uint8),
    "inner-unknown": tf.TensorSpec((2, None, 5), tf.float32),
    "tokens-of-words": tf.RaggedTensorSpec((None, None), tf.int64, 1),
    "rank-4-ragged-2": tf.RaggedTensorSpec((None, None, None, 2), tf.float32, 2),
}


def _per_example(example: tf.TypeSpec) -> tf.data.Dataset:
    return tf.data.Dataset.from_generator(lambda: iter(()), output_signature={"x": example})


class TestCheckRaggedExamples:
    @pytest.mark.parametrize("example", _EXAMPLES.values(), ids=_EXAMPLES.keys())
    def test_one_example_of_a_ragged_batch_fits(self, example):
        ds = _per_example(example)
        spec = fs.ElementSpec.from_dataset(ds.ragged_batch(3), batched=True)
        assert spec["x"].kind == "ragged"
        spec.check(ds)  # one example: dense, or ragged with one ragged dimension fewer
        spec.check(ds, batched=False)
        spec.check(ds.ragged_batch(3))
        spec.check(ds.ragged_batch(3), batched=True)

    @pytest.mark.parametrize("name", ["boxes", "image", "inner-unknown", "rank-4-ragged-2"])
    def test_an_example_as_ragged_as_the_batch_is_named(self, name):
        spec = fs.ElementSpec.from_dataset(_per_example(_EXAMPLES[name]).ragged_batch(3))
        leaf = spec["x"]
        too_ragged = tf.RaggedTensorSpec(leaf.shape[1:], leaf.dtype, leaf.ragged_rank)
        with pytest.raises(fs.SpecError) as info:
            spec.check({"x": too_ragged}, batched=False)
        assert info.value.paths == ("x",)

    def test_a_batch_with_another_ragged_rank_is_named(self):
        spec = fs.ElementSpec.from_structure(
            {"x": tf.RaggedTensorSpec((None, None, None), tf.float32, 1)}
        )
        with pytest.raises(fs.SpecError) as info:
            spec.check({"x": tf.RaggedTensorSpec((None, None, None), tf.float32, 2)}, batched=True)
        assert info.value.paths == ("x",)
        assert "ragged_rank 1" in str(info.value) and "ragged_rank 2" in str(info.value)

    def test_compiled_apply_works_before_and_after_ragged_batch(self):
        ds = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[1.0, 2.0], [3.0]]))
        ds = ds.map(lambda t: {"boxes": tf.reshape(t, (-1, 1)), "n": tf.size(t)})
        spec = fs.ElementSpec.from_dataset(ds.ragged_batch(2))
        compiled = fs.compile(
            fs.SplitSpec(spec, inputs="n", losses=(fs.LossBinding("b", _sum_loss, "boxes"),))
        )
        example = next(iter(compiled.apply(ds)))
        assert example[1]["b"].shape == (2, 1)
        _, targets, _ = next(iter(compiled.apply(ds).ragged_batch(2)))
        assert targets["b"].to_list() == [[[1.0], [2.0]], [[3.0]]]


def _sum_loss(y_true, y_pred):
    return tf.reduce_sum(y_true.to_tensor(), axis=[1, 2]) - y_pred


# -- batched or not: from the pipeline, else clear shapes, else a SpecError asking --------------
# Every leaf is a sequence of unknown length, so the shapes alone cannot tell one sentence from
# a batch of scalars (conll2003's examples look like that): only the pipeline can.


def _sentences() -> tf.data.Dataset:
    tokens = tf.ragged.constant([[1, 2, 3], [4], [5, 6]])
    return tf.data.Dataset.from_tensor_slices({"tokens": tokens, "tags": tokens * 2}).map(
        lambda ex: {"tokens": ex["tokens"], "tags": ex["tags"]}
    )


def _generated() -> tf.data.Dataset:
    return tf.data.Dataset.from_generator(
        lambda: iter([{"tokens": [1, 2], "tags": [2, 4]}]),
        output_signature={k: tf.TensorSpec((None,), tf.int32) for k in ("tokens", "tags")},
    )


_PIPELINES = {
    "from_tensor_slices+map": (lambda: _sentences(), False),
    "padded_batch": (lambda: _sentences().padded_batch(2), True),
    "ragged_batch": (lambda: _sentences().ragged_batch(2), True),
    "batch-then-many": (
        lambda: (
            _sentences()
            .padded_batch(2)
            .map(lambda b: b, num_parallel_calls=2)
            .filter(lambda b: True)
            .shuffle(2)
            .repeat(2)
            .take(3)
            .cache()
            .prefetch(1)
        ),
        True,
    ),
    "unbatch": (lambda: _sentences().padded_batch(2).unbatch(), False),
    "zip-batched": (
        lambda: tf.data.Dataset.zip((_sentences().padded_batch(2), _generated().padded_batch(2))),
        True,
    ),
    "sample_from_batched": (
        lambda: tf.data.Dataset.sample_from_datasets(
            [_sentences().padded_batch(2), _sentences().padded_batch(3)], seed=0
        ),
        True,
    ),
    "generator-padded_batch": (lambda: _generated().padded_batch(2), True),
    "generator": (lambda: _generated(), None),
    "interleave": (lambda: _sentences().interleave(lambda ex: _sentences()), None),
    "zip-mixed": (
        lambda: tf.data.Dataset.zip((_sentences().padded_batch(2), _sentences())),
        None,
    ),
}


class TestFromDatasetBatched:
    @pytest.mark.parametrize("make, expected", _PIPELINES.values(), ids=_PIPELINES.keys())
    def test_the_pipeline_says_it_or_a_spec_error_asks(self, make, expected):
        ds = make()
        if expected is None:
            with pytest.raises(fs.SpecError) as info:
                fs.ElementSpec.from_dataset(ds)
            assert "batched=False" in str(info.value) and "batched=True" in str(info.value)
            assert "tags: " in str(info.value)  # the leaves it could not read are shown
            return
        spec = fs.ElementSpec.from_dataset(ds)
        assert spec == fs.ElementSpec.from_dataset(ds, batched=expected)
        # held against the data: a batch's leading dimension is the batch, an example's is
        # its sequence (the spec adds the batch dimension in front of it)
        first = tf.nest.flatten(next(iter(ds)), expand_composites=False)[0]
        assert first.shape.rank == spec.leaves[0][1].rank - (0 if expected else 1)

    def test_a_scalar_leaf_still_means_examples(self):
        ds = _generated().map(lambda ex: {**ex, "length": tf.size(ex["tokens"])})
        spec = fs.ElementSpec.from_dataset(ds)
        assert spec["length"] == fs.Leaf(tf.int32, (None,))
        assert spec["tokens"] == fs.Leaf(tf.int32, (None, None))

    def test_a_batch_with_a_scalar_leaf_is_named(self):
        ds = _sentences().padded_batch(2).map(lambda b: {**b, "n": tf.shape(b["tokens"])[0]})
        with pytest.raises(fs.SpecError) as info:
            fs.ElementSpec.from_dataset(ds)
        assert info.value.paths == ("n",)
        with pytest.raises(fs.SpecError) as info:
            fs.ElementSpec.from_dataset(
                _generated().map(lambda ex: tf.size(ex["tokens"])), batched=True
            )
        assert info.value.paths == ("<root>",)

    def test_batched_false_on_examples_equals_the_spec_of_their_batches(self):
        examples = fs.ElementSpec.from_dataset(_generated(), batched=False)
        assert examples == fs.ElementSpec.from_dataset(_generated().padded_batch(2))
        examples.check(_generated())
        examples.check(_generated().padded_batch(2))


@pytest.mark.parametrize("prefix", [(), ("x",), ("x", 0)])
def test_dict_keys_of_mixed_types_are_a_spec_error_naming_the_dict(prefix):
    """tf.nest sorts dict keys and cannot sort ``{1: ..., "a": ...}``: a SpecError, not the
    TypeError of ``sorted``, naming the dict's path."""
    node = {1: fs.Leaf(tf.float32), "a": fs.Leaf(tf.float32)}
    for key in reversed(prefix):
        node = {key: node} if isinstance(key, str) else (node,)
    with pytest.raises(fs.SpecError, match="sort together") as info:
        fs.ElementSpec.from_structure(node)
    assert info.value.problems[0].path == ("/".join(map(str, prefix)) or None)
