"""A SplitSpec is data: the funcsplit.split/1 document, named holes, fingerprints, and the
hostile-JSON battery (every malformed document is a SpecError naming its field)."""

from __future__ import annotations

import collections
import json

import keras
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import funcsplit as fs
from funcsplit._src import registry
from funcsplit.testing import _specs
from funcsplit.testing import strategies as fst

NAMEDTUPLES = {cls.__name__: cls for cls in _specs.NAMEDTUPLES.values()}
Pair = collections.namedtuple("Pair", ["first", "second"])


def my_dice(y_true, y_pred):
    return tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)


def other_loss(y_true, y_pred):
    return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)


@pytest.fixture
def clean_registry():
    saved = dict(registry._USER)
    registry._USER.clear()
    yield
    registry._USER.clear()
    registry._USER.update(saved)


def every_field_split() -> fs.SplitSpec:
    """A split that uses every field the format holds."""
    element = fs.ElementSpec.from_structure(
        {
            "image/filename": fs.Leaf(tf.string, (None,)),
            "image": fs.Leaf(tf.float32, (None, 8, 8, 3)),
            "tokens": fs.Leaf(tf.int32, (None, None, 4), kind="ragged"),
            "sparse": fs.Leaf(tf.float32, (None, 5), kind="sparse"),
            "label_dict": {"category_1": fs.Leaf(tf.int64, (None,))},
            "by_id": {7: fs.Leaf(tf.bool, (None,)), 12: fs.Leaf(tf.float32, (None,))},
            "pair": Pair(fs.Leaf(tf.float32, (None, 2)), fs.Leaf(tf.float32, (None, 1))),
            "task": fs.Leaf(tf.int32, (None,)),
            "weight": fs.Leaf(tf.float32, (None, 1)),
        }
    )
    losses = (
        fs.LossBinding(
            "category_1",
            fs.losses.sparse_categorical_crossentropy(from_logits=True),
            target="label_dict/category_1",
            output="cat",
            weight=0.5,
            sample_weight="weight",
            route=fs.route("task", one_of=[0, 2]),
            class_weight={0: 1.0, 3: 2.5},
            group="image",
        ),
        fs.LossBinding(
            "flag",
            "binary_crossentropy",
            target=("by_id", 7),
            output=fs.Path(("flag",)),
            route=fs.route("task", not_equal=-1),
            group="image",
            reduction="sum_over_batch_size",
        ),
        fs.LossBinding("pair", my_dice, target="pair", output="pair", group="text"),
        fs.LossBinding(
            "second",
            fs.losses.row_wise(other_loss),
            target=fs.Path(("pair", "second")),
            output="2",
            route=fs.route("weight"),
            group="text",
        ),
        fs.LossBinding(
            "mse", keras.losses.MeanSquaredError(), target="weight", output="w", group="text"
        ),
    )
    return fs.SplitSpec(
        element,
        inputs={
            "image": {"pixels": "image", "name": fs.Path(("image/filename",))},
            "text": ["tokens"],
        },
        losses=losses,
        drop=("sparse", ("by_id", 12)),
        strict=False,
    )


def _leaf(dtype: str) -> dict:
    return {"leaf": {"dtype": dtype, "shape": [None], "kind": "dense"}}


class TestRoundTrip:
    def test_every_field_comes_back_equal(self):
        split = every_field_split()
        text = split.to_json()
        assert fs.SplitSpec.from_json(text, losses=split.callables(), namedtuples={"Pair": Pair})
        back = fs.SplitSpec.from_json(text, losses=split.callables(), namedtuples={"Pair": Pair})
        assert back == split
        assert back.to_json() == text
        assert fs.compile(back).describe() == fs.compile(split).describe()

    def test_the_document_is_plain_json_of_known_shape(self):
        document = every_field_split().to_dict()
        assert json.loads(json.dumps(document)) == document
        assert document["format"] == "funcsplit.split/1"
        fns = [b["fn"] for b in document["losses"]]
        assert fns[0] == {
            "registry": "sparse_categorical_crossentropy",
            "options": {"from_logits": True},
        }
        assert fns[1] == "binary_crossentropy"
        assert fns[2] == {"callable": "my_dice"}
        assert fns[3] == {"row_wise": {"callable": "other_loss"}}
        assert fns[4]["callable"] == "MeanSquaredError"
        # keys with "/" stay one key; int keys are written as [key, value] pairs
        element = document["element"]["dict"]
        assert "image/filename" in element
        assert element["by_id"]["dict"] == [[7, _leaf("bool")], [12, _leaf("float32")]]
        assert document["inputs"]["dict"]["image"]["dict"]["name"] == ["image/filename"]

    def test_string_paths_and_tuple_paths_stay_distinct(self):
        spec = fs.ElementSpec.from_structure({"a": {"b": fs.Leaf(tf.float32, (None, 1))}})
        as_string = fs.SplitSpec(spec, inputs="a/b")
        as_path = fs.SplitSpec(spec, inputs=fs.Path(("a", "b")))
        assert as_string.to_dict()["inputs"] == "a/b"
        assert as_path.to_dict()["inputs"] == ["a", "b"]
        for split in (as_string, as_path):
            assert fs.SplitSpec.from_json(split.to_json()) == split

    def test_namedtuples_without_their_class_load_as_one_made_class(self):
        split = every_field_split()
        first = fs.SplitSpec.from_json(split.to_json(), losses=split.callables())
        second = fs.SplitSpec.from_json(split.to_json(), losses=split.callables())
        assert first == second
        assert type(first.element.structure["pair"])._fields == ("first", "second")
        assert fs.compile(first).describe() == fs.compile(split).describe()

    def test_different_callables_of_one_name_get_distinct_holes(self):
        spec = fs.ElementSpec.from_structure(
            {"x": fs.Leaf(tf.float32, (None, 1)), "y": fs.Leaf(tf.float32, (None, 1))}
        )
        a, b = keras.losses.MeanSquaredError(), keras.losses.MeanSquaredError()
        split = fs.SplitSpec(
            spec,
            inputs="x",
            losses=(
                fs.LossBinding("a", a, target="y", output="a"),
                fs.LossBinding("b", b, target="y", output="b"),
                fs.LossBinding("c", a, target="y", output="c"),
            ),
        )
        holes = split.callables()
        assert list(holes) == ["MeanSquaredError", "MeanSquaredError_2"]
        assert holes["MeanSquaredError"] is a and holes["MeanSquaredError_2"] is b
        back = fs.SplitSpec.from_json(split.to_json(), losses=holes)
        assert back.losses[0].fn is a and back.losses[1].fn is b and back.losses[2].fn is a


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_round_trip_of_every_drawn_split(data):
    element = data.draw(fst.structures(max_leaves=6))
    split = data.draw(fst.split_specs(element))
    text = split.to_json()
    back = fs.SplitSpec.from_json(text, losses=split.callables(), namedtuples=NAMEDTUPLES)
    assert back == split
    assert back.to_json() == text
    assert back.fingerprint() == split.fingerprint()


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_round_trip_with_int_keys(data):
    keys = st.integers(0, 30)  # a dict mixing int and str keys is no structure (tf.nest)
    element = data.draw(fst.structures(max_leaves=5, containers=("dict",), keys=keys))
    split = data.draw(fst.split_specs(element))
    back = fs.SplitSpec.from_dict(split.to_dict(), losses=split.callables())
    assert back == split


class TestHoles:
    def split(self, fn) -> fs.SplitSpec:
        spec = fs.ElementSpec.from_structure(
            {"x": fs.Leaf(tf.float32, (None, 2)), "y": fs.Leaf(tf.float32, (None, 2))}
        )
        return fs.SplitSpec(spec, inputs="x", losses=fs.LossBinding("seg", fn, target="y"))

    def test_an_unfilled_hole_names_the_binding_and_the_fix(self, clean_registry):
        text = self.split(my_dice).to_json()
        with pytest.raises(fs.SpecError, match="binding 'seg'") as info:
            fs.SplitSpec.from_json(text)
        assert "my_dice" in str(info.value)
        assert "losses={'my_dice': fn}" in str(info.value)
        assert "fs.losses.register('my_dice', fn)" in str(info.value)

    def test_a_registered_callable_fills_the_hole_and_keeps_its_name(self, clean_registry):
        fs.losses.register("dice_v2", my_dice)
        split = self.split(my_dice)
        assert split.to_dict()["losses"][0]["fn"] == {"callable": "dice_v2"}
        assert fs.SplitSpec.from_json(split.to_json()) == split

    def test_the_callers_losses_win_over_the_registry(self, clean_registry):
        fs.losses.register("my_dice", other_loss)
        back = fs.SplitSpec.from_json(self.split(my_dice).to_json(), losses={"my_dice": my_dice})
        assert back.losses[0].fn is my_dice

    def test_a_hole_filled_with_something_not_callable_is_refused(self, clean_registry):
        with pytest.raises(fs.SpecError, match="a callable for the hole 'my_dice'"):
            fs.SplitSpec.from_json(self.split(my_dice).to_json(), losses={"my_dice": "mse"})

    @pytest.mark.parametrize(
        "name, fn, message",
        [
            ("", my_dice, "non-empty name"),
            ("mse", my_dice, "not a registry loss"),
            ("x", "mse", "user callable"),
            ("x", 3, "user callable"),
        ],
        ids=["empty", "registry-name", "a-string", "not-callable"],
    )
    def test_register_refuses(self, clean_registry, name, fn, message):
        with pytest.raises(fs.SpecError, match=message):
            fs.losses.register(name, fn)

    def test_loading_imports_nothing_named_in_the_text(self, clean_registry):
        document = self.split(my_dice).to_dict()
        document["losses"][0]["fn"] = {"callable": "os.system"}
        with pytest.raises(fs.SpecError, match="os.system"):
            fs.SplitSpec.from_dict(document)


class TestFingerprint:
    def test_equal_splits_have_equal_fingerprints_whatever_the_key_order(self):
        leaf = fs.Leaf(tf.float32, (None, 1))
        a = fs.SplitSpec(fs.ElementSpec({"x": leaf, "y": leaf}), inputs={"p": "x", "q": "y"})
        b = fs.SplitSpec(fs.ElementSpec({"y": leaf, "x": leaf}), inputs={"q": "y", "p": "x"})
        assert a == b and a.fingerprint() == b.fingerprint()

    def test_any_change_changes_it(self):
        split = every_field_split()
        changed = fs.SplitSpec(split.element, split.inputs, split.losses, split.drop, strict=True)
        assert changed.fingerprint() != split.fingerprint()
