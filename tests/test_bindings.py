"""Tests for `fs.route`, `fs.LossBinding` and `fs.SplitSpec` (checked when built)."""

import math

import attrs
import keras
import pytest
import tensorflow as tf

import funcsplit as fs


class TestRoute:
    def test_forms(self):
        assert fs.route("has_mask") == fs.Route("has_mask", "truthy", None)
        assert fs.route("task", equals=2) == fs.Route("task", "equals", 2)
        assert fs.route("label", not_equal=-1).op == "not_equal"
        assert fs.route("task", one_of=[1, 2]).value == (1, 2)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"equals": 1, "not_equal": 2},
            {"one_of": 3},
            {"one_of": ()},
            {"equals": float("nan")},
            {"equals": [1]},
        ],
        ids=["two-ops", "one_of-scalar", "one_of-empty", "nan", "list"],
    )
    def test_rejects(self, kwargs):
        with pytest.raises(fs.SpecError):
            fs.route("task", **kwargs)

    def test_rejects_malformed_path(self):
        with pytest.raises(fs.SpecError):
            fs.route("a//b")


class TestLossBinding:
    def _binding(self, **kwargs):
        base = dict(name="cls", fn="sparse_categorical_crossentropy", target="label")
        base.update(kwargs)
        return fs.LossBinding(**base)

    def test_defaults_and_value_semantics(self):
        b = self._binding()
        assert (b.output, b.weight, b.sample_weight, b.route, b.group) == (
            None,
            1.0,
            None,
            None,
            None,
        )
        assert b == self._binding() and hash(b) == hash(self._binding())
        assert attrs.evolve(b, weight=2).weight == 2.0

    def test_accepts_callables_keras_losses_and_registry_losses(self):
        self._binding(fn=lambda y, p: y - p)
        self._binding(fn=keras.losses.MeanSquaredError())
        self._binding(fn=fs.losses.huber(delta=2.0))

    def test_paths_in_tuple_and_path_form(self):
        b = self._binding(target=("image/filename",), output=fs.Path(("0",)))
        assert b.target == fs.Path(("image/filename",))

    def test_class_weight_is_frozen(self):
        b = self._binding(class_weight={1: 2.0, 0: 1.0})
        assert b.class_weight == ((0, 1.0), (1, 2.0))
        hash(b)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"name": ""}, "non-empty name"),
            ({"name": "  "}, "non-empty name"),
            ({"weight": math.nan}, "finite"),
            ({"weight": math.inf}, "finite"),
            ({"weight": "1"}, "number"),
            ({"target": "a//b"}, "empty segment"),
            ({"output": "/x"}, "empty segment"),
            ({"sample_weight": ""}, "empty segment"),
            ({"fn": "sparse_categorical_crossentropyy"}, "did you mean"),
            ({"fn": 3}, "callable"),
            ({"group": ""}, "group"),
            ({"class_weight": {-1: 1.0}}, "class ids"),
            ({"class_weight": {0: math.nan}}, "finite class weights"),
            ({"reduction": "sum"}, "reduction"),
        ],
        ids=lambda v: v if isinstance(v, str) else next(iter(v)) if isinstance(v, dict) else "",
    )
    def test_rejects_at_construction(self, kwargs, message):
        with pytest.raises(fs.SpecError, match=message):
            self._binding(**kwargs)

    def test_unknown_loss_name_names_the_binding_and_target(self):
        with pytest.raises(fs.SpecError) as info:
            self._binding(fn="mse_loss", target="label_dict/x")
        assert info.value.paths == ("label_dict/x",)
        assert "'cls'" in str(info.value)


def test_numpy_scalars_are_accepted_wherever_numbers_are():
    """Issue 13 item 7: weights, class ids from ``np.unique``, route values, path keys,
    shapes and loss options may be NumPy scalars; the specs hold the Python values."""
    import numpy as np

    classes = np.unique(np.array([2, 0, 2]))
    binding = fs.LossBinding(
        "y",
        fs.losses.huber(delta=np.float32(2.0)),
        target=("y", np.int64(0)),
        weight=np.float32(0.5),
        class_weight=dict(zip(classes, np.array([1.5, 3.0]))),
        route=fs.route("task", one_of=classes),
    )
    plain = fs.LossBinding(
        "y",
        fs.losses.huber(delta=2.0),
        target=("y", 0),
        weight=0.5,
        class_weight={0: 1.5, 2: 3.0},
        route=fs.route("task", one_of=(0, 2)),
    )
    assert binding == plain and type(binding.route.value[0]) is int
    assert fs.route("t", equals=np.bool_(True)) == fs.route("t", equals=True)
    assert fs.Leaf(tf.float32, (None, np.int64(3))).shape == (None, 3)


class TestSplitSpec:
    def _element(self):
        return fs.ElementSpec.from_structure(
            {"x": fs.Leaf(tf.float32, (None, 2)), "y": fs.Leaf(tf.int32)}
        )

    def test_value_semantics_with_nested_inputs(self):
        b = fs.LossBinding("y", "sparse_categorical_crossentropy", target="y")
        a = fs.SplitSpec(self._element(), inputs={"a": "x", "b": ["x"]}, losses=(b,))
        c = fs.SplitSpec(self._element(), inputs={"b": ["x"], "a": "x"}, losses=[b])
        assert a == c and hash(a) == hash(c)
        assert a != attrs.evolve(a, inputs={"a": "x", "b": ("x",)})

    def test_one_binding_and_one_drop_are_accepted_bare(self):
        b = fs.LossBinding("y", "sparse_categorical_crossentropy", target="y")
        split = fs.SplitSpec(self._element(), inputs="x", losses=b, drop="y")
        assert split.losses == (b,) and split.drop == ("y",)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"inputs": {"a": 3}},
            {"inputs": "a//b"},
            {"losses": ("not a binding",)},
            {"drop": ("//",)},
        ],
        ids=["input-int", "input-malformed", "losses", "drop"],
    )
    def test_rejects(self, kwargs):
        base = dict(element=self._element(), inputs="x")
        base.update(kwargs)
        with pytest.raises(fs.SpecError):
            fs.SplitSpec(**base)

    def test_groups_in_order_of_first_use(self):
        bs = [
            fs.LossBinding(n, "mse", target="x", group=g)
            for n, g in (("a", "text"), ("b", "image"), ("c", "text"))
        ]
        split = fs.SplitSpec(self._element(), inputs={"text": "x", "image": "x"}, losses=bs)
        assert split.groups == ("text", "image")
