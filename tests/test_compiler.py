"""Tests for `fs.compile`: resolving, the split function, `apply`, `describe`."""

import collections

import numpy as np
import pytest
import tensorflow as tf

import funcsplit as fs

Example = collections.namedtuple("Example", ["image", "meta"])


def element_spec():
    return fs.ElementSpec.from_structure(
        {
            "image": fs.Leaf(tf.float32, (None, 4, 4, 1)),
            "image/filename": fs.Leaf(tf.string),
            "label_dict": {"category_1": fs.Leaf(tf.int32), "category_2": fs.Leaf(tf.int32)},
            "mask": fs.Leaf(tf.int32, (None, 4, 4, 1)),
            "task": fs.Leaf(tf.int32),
            "weight": fs.Leaf(tf.float32, (None, 1)),
        }
    )


def bindings():
    return (
        fs.LossBinding(
            "category_1",
            "sparse_categorical_crossentropy",
            target="label_dict/category_1",
            output="category_1",
            sample_weight="weight",
            route=fs.route("task", equals=1),
        ),
        fs.LossBinding(
            "category_2",
            "sparse_categorical_crossentropy",
            target="label_dict/category_2",
            output="category_2",
            weight=0.5,
        ),
        fs.LossBinding("mask", "dice", target="mask", output="mask"),
    )


def tfds_like(el):
    """The element as NumPy values (``tfds.as_numpy`` gives these), nested dicts kept."""
    return tf.nest.map_structure(lambda v: v.numpy(), el)


def split_spec(**kwargs):
    base = dict(
        element=element_spec(),
        inputs={"image": "image"},
        losses=bindings(),
        drop=(fs.Path(("image/filename",)),),
    )
    base.update(kwargs)
    return fs.SplitSpec(**base)


def element(batch=3):
    rng = np.random.default_rng(batch)
    return {
        "image": tf.constant(rng.normal(size=(batch, 4, 4, 1)), tf.float32),
        "image/filename": tf.constant([f"f{i}" for i in range(batch)]),
        "label_dict": {
            "category_1": tf.constant(rng.integers(0, 3, batch), tf.int32),
            "category_2": tf.constant(rng.integers(0, 3, batch), tf.int32),
        },
        "mask": tf.constant(rng.integers(0, 2, (batch, 4, 4, 1)), tf.int32),
        "task": tf.constant(rng.integers(0, 2, batch), tf.int32),
        "weight": tf.constant(rng.uniform(size=(batch, 1)), tf.float32),
    }


class TestResolve:
    def test_roles_account_for_every_leaf(self):
        plan = fs.compile(split_spec()).plan
        roles = {str(p): r for p, _, r in plan.roles}
        assert roles == {
            "image": ("input image",),
            "image/filename": ("dropped",),
            "label_dict/category_1": ("target of category_1",),
            "label_dict/category_2": ("target of category_2",),
            "mask": ("target of mask",),
            "task": ("route of category_1",),
            "weight": ("sample weight of category_1",),
        }

    def test_a_leaf_may_serve_several_roles(self):
        spec = fs.ElementSpec.from_structure({"image": fs.Leaf(tf.float32, (None, 3))})
        split = fs.SplitSpec(
            spec, inputs="image", losses=(fs.LossBinding("recon", "mse", target="image"),)
        )
        roles = fs.compile(split).plan.roles
        assert roles[0][2] == ("input", "target of recon")

    def test_unaccounted_leaves_are_listed_together(self):
        with pytest.raises(fs.SpecError) as info:
            fs.compile(split_spec(drop=()))
        assert info.value.paths == ("image/filename",)
        with pytest.raises(fs.SpecError) as info:
            fs.compile(split_spec(drop=(), losses=bindings()[1:]))
        assert set(info.value.paths) == {
            "image/filename",
            "label_dict/category_1",
            "task",
            "weight",
        }

    def test_a_misspelled_path_is_the_fix_for_the_leaf_it_missed(self):
        """Issue 13 item 9: a typo in inputs is not fixed by dropping the leaf it meant."""
        with pytest.raises(fs.SpecError) as info:
            fs.compile(split_spec(inputs={"image": "imgae"}))
        fixes = {p.path: p.fix for p in info.value.problems}
        assert set(fixes) == {"imgae", "image"}
        assert "fix the path 'imgae' of inputs image" in fixes["image"]
        assert "drop" not in fixes["image"]

    def test_non_strict_keeps_unused_leaves_visible(self):
        compiled = fs.compile(split_spec(drop=(), strict=False))
        assert [str(p) for p in compiled.plan.unused] == ["image/filename"]
        assert "UNUSED" in compiled.describe()

    def test_every_mistake_is_reported_at_once(self):
        broken = (
            fs.LossBinding("a", "sparse_categorical_crossentropy", target="label_dict/categry_1"),
            fs.LossBinding("a", "mse", target="mask", sample_weight="mask"),
            fs.LossBinding("c", "mse", target="image", route=fs.route("image/filename")),
        )
        with pytest.raises(fs.SpecError) as info:
            fs.compile(split_spec(losses=broken, inputs={"image": "imagee"}))
        message = str(info.value)
        assert "did you mean: label_dict/category_1" in message
        assert "unique binding names" in message
        assert "per-example dense leaf" in message
        assert "route(path, equals='value')" in message
        assert {"imagee", "label_dict/categry_1", "mask", "image/filename"} <= set(info.value.paths)

    @pytest.mark.parametrize(
        ("binding", "expected"),
        [
            (fs.LossBinding("b", "mse", target="label_dict"), "a leaf for mse"),
            (fs.LossBinding("b", "mse", target="image/filename"), "a numeric leaf"),
            (fs.LossBinding("b", "sequence_crossentropy", target="mask"), "integer tokens"),
            (fs.LossBinding("b", "dice", target="mask", sample_weight="weight"), "batch-level"),
            (
                fs.LossBinding("b", "mse", target="mask", route=fs.route("task", equals=1.5)),
                "fit the leaf's dtype int32",
            ),
            (
                fs.LossBinding("b", "mse", target="mask", route=fs.route("task", equals="x")),
                "fit the leaf's dtype",
            ),
            (fs.LossBinding("b", "mse", target="mask", sample_weight="mask"), "per-example"),
        ],
        ids=[
            "subtree",
            "string",
            "tokens",
            "dice-weights",
            "route-float",
            "route-str",
            "weight-shape",
        ],
    )
    def test_binding_checks(self, binding, expected):
        with pytest.raises(fs.SpecError, match=expected):
            fs.compile(split_spec(losses=(binding,), strict=False))

    def test_callables_may_take_subtrees(self):
        fn = lambda y, p: (tf.cast(y["category_1"], tf.float32) - p) ** 2
        binding = fs.LossBinding("sub", fn, target="label_dict")
        compiled = fs.compile(split_spec(losses=(binding,), strict=False))
        _, targets, _ = compiled.split(element())
        assert set(targets["sub"]) == {"category_1", "category_2"}

    def test_dropping_a_used_leaf_is_an_error(self):
        with pytest.raises(fs.SpecError, match="remove it from drop="):
            fs.compile(split_spec(drop=("task", fs.Path(("image/filename",)))))

    def test_groups_need_inputs_keyed_by_group(self):
        grouped = tuple(
            fs.LossBinding(b.name, b.fn, target=b.target, group="g") for b in bindings()[1:]
        )
        with pytest.raises(fs.SpecError, match="keyed by the groups"):
            fs.compile(split_spec(losses=grouped, strict=False, inputs={"image": "image"}))
        mixed = (*grouped, bindings()[0])
        with pytest.raises(fs.SpecError, match="other bindings have one"):
            fs.compile(split_spec(losses=mixed, inputs={"g": "image"}))
        fs.compile(split_spec(losses=grouped, strict=False, inputs={"g": "image"}))

    def test_compile_rejects_non_specs(self):
        with pytest.raises(fs.SpecError, match="a SplitSpec"):
            fs.compile({"inputs": "x"})


class TestSplit:
    def test_routes_each_leaf_by_path(self):
        compiled = fs.compile(split_spec())
        el = element()
        inputs, targets, weights = compiled.split(el)
        np.testing.assert_array_equal(inputs["image"], el["image"])
        np.testing.assert_array_equal(targets["category_1"], el["label_dict"]["category_1"])
        np.testing.assert_array_equal(targets["category_2"], el["label_dict"]["category_2"])
        np.testing.assert_array_equal(targets["mask"], el["mask"])
        assert set(weights) == {"category_1"}
        np.testing.assert_array_equal(weights["category_1"]["route"], el["task"])
        np.testing.assert_array_equal(weights["category_1"]["sample_weight"], el["weight"])

    def test_key_order_of_the_element_does_not_matter(self):
        compiled = fs.compile(split_spec())
        el = element()
        reordered = dict(reversed(list(el.items())))
        reordered["label_dict"] = dict(reversed(list(el["label_dict"].items())))
        a, b = compiled.split(el), compiled.split(reordered)
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)

    def test_traces_once_across_batch_sizes(self):
        compiled = fs.compile(split_spec())
        for batch in (1, 3, 7, 2):
            compiled.split(element(batch))
        assert compiled.split.experimental_get_tracing_count() == 1

    def test_single_path_input_gives_the_tensor(self):
        compiled = fs.compile(split_spec(inputs="image"))
        inputs, _, _ = compiled.split(element())
        assert isinstance(inputs, tf.Tensor)

    def test_nested_inputs_keep_their_structure_lists_as_tuples(self):
        compiled = fs.compile(split_spec(inputs={"a": ["image", "task"], "b": ("mask",)}))
        inputs, _, _ = compiled.split(element())
        assert isinstance(inputs["a"], tuple) and isinstance(inputs["b"], tuple)
        np.testing.assert_array_equal(inputs["a"][1], element()["task"])

    def test_one_unbatched_example_is_split(self):
        """Issue 13 item 4: ``next(iter(ds))`` of an unbatched dataset, split as it is."""
        compiled = fs.compile(split_spec())
        example = next(iter(tf.data.Dataset.from_tensor_slices(element(3))))
        inputs, targets, weights = compiled.split(example)
        np.testing.assert_array_equal(inputs["image"], element(3)["image"][0])
        assert targets["category_1"].shape == () and weights["category_1"]["route"].shape == ()
        numpy_example = {k: v for k, v in tfds_like(example).items()}
        assert compiled.split(numpy_example)[0]["image"].shape == (4, 4, 1)

    def test_a_wrong_example_is_named_without_tensorflows_message(self):
        compiled = fs.compile(split_spec())
        example = next(iter(tf.data.Dataset.from_tensor_slices(element(3))))
        example["image"] = tf.zeros((4, 4), tf.float32)  # neither one example nor a batch
        with pytest.raises(fs.SpecError) as info:
            compiled.split(example)
        assert "image" in info.value.paths
        assert info.value.__cause__ is None and info.value.__suppress_context__

    def test_numpy_arrays_keep_their_dtype_as_tensors_do(self):
        """Issue 13 item 9: a float64 array is refused like a float64 tensor, by path."""
        compiled = fs.compile(split_spec())
        el = {k: v for k, v in tfds_like(element()).items()}
        compiled.split(el)  # arrays of the spec's dtypes
        el["weight"] = el["weight"].astype(np.float64)
        with pytest.raises(fs.SpecError, match="np.asarray") as info:
            compiled.split(el)
        assert info.value.paths == ("weight",)
        el = element()
        el["weight"] = tf.cast(el["weight"], tf.float64)
        with pytest.raises(fs.SpecError) as info:
            compiled.split(el)
        assert info.value.paths == ("weight",)

    def test_a_wrong_element_is_a_spec_error_naming_the_path(self):
        compiled = fs.compile(split_spec())
        el = element()
        el["task"] = tf.cast(el["task"], tf.int64)
        with pytest.raises(fs.SpecError) as info:
            compiled.split(el)
        assert info.value.paths == ("task",)

    def test_namedtuple_elements(self):
        spec = fs.ElementSpec.from_structure(
            Example(fs.Leaf(tf.float32, (None, 2)), {"y": fs.Leaf(tf.float32, (None, 2))})
        )
        split = fs.SplitSpec(spec, inputs="image", losses=(fs.LossBinding("y", "mse", "meta/y"),))
        compiled = fs.compile(split)
        el = Example(tf.ones((2, 2)), {"y": tf.zeros((2, 2))})
        _, targets, _ = compiled.split(el)
        np.testing.assert_array_equal(targets["y"], np.zeros((2, 2)))
        assert compiled.plan.losses[0].target == fs.Path(("meta", "y"))


class TestApply:
    def test_batched_and_unbatched_datasets(self):
        compiled = fs.compile(split_spec())
        data = tf.data.Dataset.from_tensor_slices(element(6))
        for mapped in (compiled.apply(data.batch(4)), compiled.apply(data).batch(4)):
            inputs, targets, weights = next(iter(mapped))
            np.testing.assert_array_equal(inputs["image"], element(6)["image"][:4])
            np.testing.assert_array_equal(targets["mask"], element(6)["mask"][:4])
            np.testing.assert_array_equal(weights["category_1"]["route"], element(6)["task"][:4])

    def test_tuple_elements_are_passed_whole(self):
        spec = fs.ElementSpec.from_structure(
            (fs.Leaf(tf.float32, (None, 2)), fs.Leaf(tf.float32, (None, 1)))
        )
        split = fs.SplitSpec(spec, inputs="0", losses=(fs.LossBinding("y", "mse", target="1"),))
        ds = tf.data.Dataset.from_tensor_slices((tf.ones((4, 2)), tf.zeros((4, 1)))).batch(2)
        inputs, targets, weights = next(iter(fs.compile(split).apply(ds)))
        assert inputs.shape == (2, 2) and targets["y"].shape == (2, 1) and weights == {}

    def test_list_inputs_reach_the_model_as_separate_inputs(self):
        """Issue 13 item 5: tf.data would stack a list into one tensor; a tuple stays apart."""
        import keras

        compiled = fs.compile(split_spec(inputs=["image", "weight"]))
        mapped = compiled.apply(tf.data.Dataset.from_tensor_slices(element(6)).batch(3))
        assert [s.shape.as_list() for s in mapped.element_spec[0]] == [[None, 4, 4, 1], [None, 1]]
        image, weight = keras.Input((4, 4, 1)), keras.Input((1,))
        model = keras.Model([image, weight], keras.layers.Flatten()(image) * weight)
        inputs, _, _ = next(iter(mapped))
        expected = tf.reshape(element(6)["image"][:3], (3, -1)) * element(6)["weight"][:3]
        np.testing.assert_allclose(model(inputs), expected, rtol=1e-6)

    def test_checks_the_dataset_first(self):
        compiled = fs.compile(split_spec())
        el = element(4)
        el["mask"] = tf.zeros((4, 4, 4), tf.int32)
        with pytest.raises(fs.SpecError) as info:
            compiled.apply(tf.data.Dataset.from_tensor_slices(el).batch(2))
        assert info.value.paths == ("mask",)


class TestDescribeAndPurity:
    def test_describe_lists_every_leaf_and_binding(self):
        text = fs.compile(split_spec()).describe()
        for needle in (
            "image/filename",
            "dropped",
            "route of category_1",
            "task == 1",
            "sample weight of category_1",
            "dice",
            "0.5",
        ):
            assert needle in text

    def test_compile_is_pure(self):
        a, b = fs.compile(split_spec()), fs.compile(split_spec())
        assert a.plan == b.plan and a.spec == b.spec
        el = element()
        tf.nest.map_structure(np.testing.assert_array_equal, a.split(el), b.split(el))

    def test_cli_describe(self, capsys):
        import _funcsplit_cli

        assert _funcsplit_cli.main(["describe", "funcsplit.demo.example_split:split"]) == 0
        assert "target of label" in capsys.readouterr().out


class TestInsideTraces:
    def test_split_and_loss_join_the_callers_trace(self):
        compiled = fs.compile(split_spec(inputs="image"))

        @tf.function
        def step(el):
            _, targets, weights = compiled.split(el)
            preds = {
                "category_1": tf.nn.softmax(tf.ones((tf.shape(el["task"])[0], 3))),
                "category_2": tf.nn.softmax(tf.ones((tf.shape(el["task"])[0], 3))),
                "mask": tf.fill(tf.shape(el["mask"]), 0.5),
            }
            return compiled.loss(targets, preds, weights).total

        graph = step.get_concrete_function(element(3)).graph
        # inline: no nested function call ops from funcsplit in the caller's graph
        assert not [op for op in graph.get_operations() if op.type == "StatefulPartitionedCall"]
        assert compiled.split.experimental_get_tracing_count() == 0
        assert np.isfinite(step(element(3)).numpy())

    def test_a_wrong_element_inside_a_trace_names_the_path(self):
        compiled = fs.compile(split_spec())
        el = element()
        del el["label_dict"]["category_2"]
        with pytest.raises(fs.SpecError) as info:
            tf.function(compiled.split)(el)
        assert info.value.paths == ("label_dict/category_2",)

    def test_errors_in_a_users_autograph_function_stay_spec_errors(self):
        compiled = fs.compile(split_spec(inputs="image"))

        @tf.function
        def step(el):
            _, targets, weights = compiled.split(el)
            return compiled.loss(targets, {"category_1": el["image"]}, weights).total

        with pytest.raises(fs.SpecError) as info:
            step(element())
        assert "did you mean" in str(info.value) or info.value.paths
