"""A SplitSpec is data: the funcsplit.split/1 document, named holes, fingerprints, and the
hostile-JSON battery (every malformed document is a SpecError naming its field)."""

from __future__ import annotations

import collections
import contextlib
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


# ------------------------------------------------------------------------ hostile documents


def _locations(node, prefix=()):
    """Every (path, value) inside a JSON document, the root excluded."""
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in children:
        yield (*prefix, key), value
        yield from _locations(value, (*prefix, key))


def _set(document, path, value):
    *head, last = path
    node = document
    for key in head:
        node = node[key]
    node[last] = value


def _delete(document, path):
    *head, last = path
    node = document
    for key in head:
        node = node[key]
    del node[last]


HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**64, -(2**70), 10**400, 1e308, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", "/", "a//b", "funcsplit.split/2", "float128", "ragged", "mse"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.just({"leaf": {"dtype": "float32", "shape": [None]}}),
    st.just({"callable": "os.system"}),
    st.just({"dict": [[1, {"leaf": {"dtype": "int32", "shape": []}}], ["a", None]]}),
    st.just({"namedtuple": "__import__", "fields": ["os"], "items": [None]}),
)


@st.composite
def mutated_documents(draw):
    """A valid document with one hostile change: a value replaced, a key removed or added."""
    document = json.loads(json.dumps(every_field_split().to_dict()))
    locations = list(_locations(document))
    path, _ = draw(st.sampled_from(locations))
    how = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if how == "delete" and isinstance(parent, dict):
        _delete(document, path)
    elif how == "add" and isinstance(parent, dict):
        parent[draw(st.sampled_from(["colour", "Format", "lossses", "extra"]))] = draw(HOSTILE)
    else:
        _set(document, path, draw(HOSTILE))
    return path, document


def _load(document):
    holes = every_field_split().callables()
    return fs.SplitSpec.from_dict(document, losses=holes, namedtuples={"Pair": Pair})


@settings(max_examples=150, deadline=None)
@given(mutated_documents())
def test_a_mutated_document_loads_or_names_its_field(mutated):
    path, document = mutated
    for load in (_load, lambda d: _load(json.loads(json.dumps(d)))):
        try:
            load(document)
        except fs.SpecError as error:
            assert str(path[0]) in str(error) or "format" in str(error), (path, str(error))
    text = json.dumps(document)  # NaN and Infinity come out as JSON's non-standard literals
    with contextlib.suppress(fs.SpecError):
        fs.SplitSpec.from_json(text, losses=every_field_split().callables())


@pytest.mark.parametrize(
    "text, field",
    [
        ('{"format": "funcsplit.split/2"}', "upgrade funcsplit"),
        ('{"format": "other"}', "field 'format'"),
        ("[1, 2]", "a JSON object"),
        ("{", "JSON text"),
        ('{"a": 1, "a": 2}', "twice"),
        ("[" * 100_000 + "]" * 100_000, "nested"),
        ("1" * 5000, "5000 characters"),
        ("NaN", "NaN"),
        (b"\xff\xfe", "UTF-8"),
    ],
    ids=[
        "newer-version",
        "other-format",
        "not-an-object",
        "truncated",
        "duplicate-key",
        "deep-nesting",
        "huge-number",
        "nan",
        "not-utf8",
    ],
)
def test_hostile_text_is_a_spec_error(text, field):
    with pytest.raises(fs.SpecError, match=field):
        fs.SplitSpec.from_json(text)


def _with(change) -> dict:
    document = json.loads(json.dumps(every_field_split().to_dict()))
    change(document)
    return document


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.update(colour=1), "field 'colour'"),
        (lambda d: d["losses"][0].update(wieght=2), "did you mean: weight"),
        (lambda d: d["losses"][0].update(weight=float("nan")), r"losses\[0\].weight"),
        (lambda d: d["losses"][0].update(weight=1e400), r"losses\[0\].weight"),
        (lambda d: d["losses"][0].update(weight=True), r"losses\[0\].weight"),
        (lambda d: d["losses"][1].update(name=""), r"losses\[1\].name"),
        (lambda d: d["losses"][1].update(fn="msee"), r"losses\[1\].fn"),
        (lambda d: d["losses"][0]["route"].update(op="greater"), r"losses\[0\].route.op"),
        (lambda d: d["losses"][0]["route"].update(value=[]), r"losses\[0\].route.value"),
        (lambda d: d["losses"][0]["fn"]["options"].update(x=1), r"losses\[0\].fn.options.x"),
        (lambda d: d["losses"][0]["fn"]["options"].update(from_logits=1), "from_logits"),
        (lambda d: d["losses"][0].update(class_weight=[[-1, 1.0]]), "class_weight"),
        (lambda d: d["losses"][1].update(target=["a", -1]), r"losses\[1\].target\[1\]"),
        (lambda d: d["losses"][1].update(target=2**80), r"losses\[1\].target"),
        (lambda d: d.update(strict="yes"), "field 'strict'"),
        (lambda d: d.update(drop=[["x", True]]), r"drop\[0\]"),
        (lambda d: d["element"]["dict"]["task"]["leaf"].update(dtype="float128"), "dtype"),
        (lambda d: d["element"]["dict"]["task"]["leaf"].update(shape=[-1]), "shape"),
        (lambda d: d["element"]["dict"]["task"]["leaf"].update(shape=[2**70]), "shape"),
        (lambda d: d["element"]["dict"]["task"]["leaf"].update(kind="jagged"), "kind"),
        (lambda d: d["element"]["dict"]["by_id"]["dict"][0].__setitem__(0, "x"), "by_id"),
        (lambda d: d["element"]["dict"]["pair"].update(namedtuple="os.path"), "identifier"),
        (lambda d: d["inputs"].update(list=[]), "inputs"),
        (lambda d: d.update(element={"dict": {"a": {"dict": {}}}} if False else 3), "element"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_wrong_field_is_named(change, field):
    with pytest.raises(fs.SpecError, match=field):
        _load(_with(change))


def test_every_broken_binding_is_reported_at_once():
    def break_two(document):
        document["losses"][0]["weight"] = "heavy"
        document["losses"][2]["fn"] = {"callable": "missing"}

    with pytest.raises(fs.SpecError) as info:
        _load(_with(break_two))
    assert len(info.value.problems) == 2
    assert "losses[0].weight" in str(info.value) and "'missing'" in str(info.value)


def test_deeply_nested_structures_built_in_python_are_refused():
    node = {"leaf": {"dtype": "float32", "shape": [None]}}
    for _ in range(200):
        node = {"tuple": [node]}
    with pytest.raises(fs.SpecError, match="nested at most"):
        fs.SplitSpec.from_dict(
            {"format": "funcsplit.split/1", "element": node, "inputs": {"dict": {}}}
        )


class TestKerasLosses:
    def split(self, loss) -> fs.SplitSpec:
        spec = fs.ElementSpec.from_structure(
            {"x": fs.Leaf(tf.float32, (None, 2)), "y": fs.Leaf(tf.float32, (None, 2))}
        )
        return fs.SplitSpec(spec, inputs="x", losses=fs.LossBinding("y", loss, target="y"))

    def test_a_keras_builtin_loss_loads_from_its_description(self):
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
        back = fs.SplitSpec.from_json(self.split(loss).to_json())
        assert type(back.losses[0].fn) is keras.losses.CategoricalCrossentropy
        assert back.losses[0].fn.get_config() == loss.get_config()
        y, p = tf.constant([[0.0, 1.0]]), tf.constant([[2.0, 0.0]])
        assert float(back.losses[0].fn(y, p)) == pytest.approx(float(loss(y, p)))

    def test_a_keras_loss_whose_config_loses_an_argument_is_a_plain_hole(self):
        # Keras 3.15's Huber.get_config() has no delta: rebuilt, it would silently be 1.0.
        document = self.split(keras.losses.Huber(delta=0.5)).to_dict()
        assert document["losses"][0]["fn"] == {"callable": "Huber"}
        assert (
            "Huber"
            in self.split(keras.losses.Huber()).to_dict()["losses"][0]["fn"]["keras"]["class_name"]
        )

    def test_a_registered_keras_loss_loads_through_keras_registry(self):
        @keras.saving.register_keras_serializable("funcsplit_tests")
        class ScaledMSE(keras.losses.Loss):
            def __init__(self, scale=1.0, **kwargs):
                super().__init__(**kwargs)
                self.scale = scale

            def call(self, y_true, y_pred):
                return self.scale * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

            def get_config(self):
                return {**super().get_config(), "scale": self.scale}

        document = self.split(ScaledMSE(scale=3.0)).to_dict()
        assert document["losses"][0]["fn"]["keras"]["registered_name"] == (
            "funcsplit_tests>ScaledMSE"
        )
        back = fs.SplitSpec.from_dict(document)
        assert type(back.losses[0].fn) is ScaledMSE and back.losses[0].fn.scale == 3.0
        keras.saving.get_custom_objects().pop("funcsplit_tests>ScaledMSE")
        with pytest.raises(fs.SpecError, match="register_keras_serializable"):
            fs.SplitSpec.from_dict(document)

    def test_an_unregistered_keras_loss_is_a_plain_hole(self):
        class Local(keras.losses.Loss):
            def call(self, y_true, y_pred):
                return keras.ops.mean(y_true - y_pred, axis=-1)

        document = self.split(Local()).to_dict()
        assert document["losses"][0]["fn"] == {"callable": "Local"}

    def test_a_description_naming_something_else_is_refused(self):
        document = self.split(keras.losses.MeanSquaredError()).to_dict()
        document["losses"][0]["fn"]["keras"]["class_name"] = "Model"
        with pytest.raises(fs.SpecError, match="keras.class_name"):
            fs.SplitSpec.from_dict(document)

    def test_a_lambda_in_a_keras_config_is_not_loaded(self):
        @keras.saving.register_keras_serializable("funcsplit_tests")
        class WithFn(keras.losses.Loss):
            def __init__(self, fn=None, **kwargs):
                super().__init__(**kwargs)
                self.fn = fn

            def call(self, y_true, y_pred):
                return keras.ops.mean(y_true - y_pred, axis=-1)

            def get_config(self):
                fn = keras.saving.serialize_keras_object(self.fn)
                return {**super().get_config(), "fn": fn}

            @classmethod
            def from_config(cls, config):
                fn = keras.saving.deserialize_keras_object(config.pop("fn"))
                return cls(fn=fn, **config)

        try:
            document = self.split(WithFn()).to_dict()
            hole = document["losses"][0]["fn"]
            assert hole["keras"]["registered_name"] == "funcsplit_tests>WithFn"
            # Keras's description of a lambda: its marshalled code, run on deserialization
            hole["keras"]["config"]["fn"] = {
                "class_name": "__lambda__",
                "config": {"value": ["4wIAAAAAAAAAAAAAAAIAAAADAAAA8wwAAAA=", None, None]},
            }
            with pytest.raises(fs.SpecError, match=r"losses\[0\].fn.keras.config") as info:
                fs.SplitSpec.from_dict(document)
            assert "lambda" in str(info.value)
        finally:
            keras.saving.get_custom_objects().pop("funcsplit_tests>WithFn")
