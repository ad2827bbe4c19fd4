"""Properties of routing, drawn with funcsplit's own strategies (`funcsplit.testing`).

Each test states something a user relies on, for every structure, split and batch that
the strategies draw: the leaf at a path is the leaf you get, nothing is lost, key order is
irrelevant, tracing happens once, and every mistake is a `fs.SpecError` naming its path.
Loss values are in `test_properties_losses.py`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import assume
from hypothesis import given
from hypothesis import strategies as st

import funcsplit as fs
from funcsplit.testing import strategies as fst

SMALL = {"max_leaves": 7}
BATCH = st.integers(1, 3)


pytestmark = pytest.mark.usefixtures("quiet_retracing_warnings")


# ---------------------------------------------------------------- helpers (independent of core)


def get(node: Any, keys: tuple) -> Any:
    """The value at ``keys``: dict keys, namedtuple field names, sequence indices."""
    for key in keys:
        node = getattr(node, key) if isinstance(key, str) and isinstance(node, tuple) else node[key]
    return node


def is_namedtuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(type(node), "_fields")


def map_paths(node: Any, fn) -> Any:
    """Maps ``fn`` over the `fs.Path` leaves of a declared structure (inputs)."""
    if isinstance(node, fs.Path):
        return fn(node)
    if isinstance(node, Mapping):
        return {k: map_paths(v, fn) for k, v in node.items()}
    return type(node)(map_paths(v, fn) for v in node)


def as_numpy(value: Any) -> Any:
    if isinstance(value, tf.RaggedTensor):
        return ("ragged", value.to_list())
    if isinstance(value, tf.SparseTensor):
        return (
            "sparse",
            value.indices.numpy().tolist(),
            value.values.numpy().tolist(),
            value.dense_shape.numpy().tolist(),
        )
    return np.asarray(value)


def assert_same(found: Any, expected: Any, where: str = "") -> None:
    """Same containers (dict keys, sequence lengths) and equal values, dtypes and shapes."""
    if isinstance(expected, Mapping):
        assert isinstance(found, Mapping) and set(found) == set(expected), where
        for key in expected:
            assert_same(found[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(found, (list, tuple)) and len(found) == len(expected), where
        assert is_namedtuple(found) == is_namedtuple(expected), where
        for i, (a, b) in enumerate(zip(found, expected)):
            assert_same(a, b, f"{where}/{i}")
    else:
        assert type(found) is type(expected) or isinstance(found, tf.Tensor), where
        assert found.dtype == expected.dtype, where
        a, b = as_numpy(found), as_numpy(expected)
        if isinstance(b, np.ndarray):
            assert a.shape == b.shape, where
            np.testing.assert_array_equal(a, b, err_msg=where)
        else:
            assert a == b, where


def leaves_under(spec: fs.ElementSpec, path: fs.Path) -> list[fs.Path]:
    return [p for p in spec.paths if p.keys[: len(path)] == path.keys]


def input_paths(node: Any) -> list[fs.Path]:
    out: list[fs.Path] = []
    map_paths(node, out.append)
    return out


@st.composite
def splits(draw, min_bindings: int = 0, **structure_bounds) -> tuple[fs.SplitSpec, Any]:
    """A structure, a valid split over it and one batch that fits."""
    spec = draw(fst.structures(**{**SMALL, **structure_bounds}))
    split = draw(fst.split_specs(spec, min_bindings=min_bindings))
    return split, draw(fst.elements(split, batch_size=BATCH))


# ------------------------------------------------------------------------- 1. the right leaves


@given(splits())
def test_split_returns_exactly_the_leaf_at_each_declared_path(case):
    """Every input, target, route key and sample weight is the element's leaf at its path."""
    split, element = case
    inputs, targets, weights = fs.compile(split).split(element)
    assert_same(inputs, map_paths(split.inputs, lambda p: get(element, p.keys)), "inputs")
    assert set(targets) == {b.name for b in split.losses}
    for b in split.losses:
        assert_same(targets[b.name], get(element, b.target.keys), f"target of {b.name}")
        expected = {}
        if b.route is not None:
            expected["route"] = get(element, b.route.path.keys)
        if b.sample_weight is not None:
            expected["sample_weight"] = get(element, b.sample_weight.keys)
        assert_same(weights.get(b.name, {}), expected, f"weights of {b.name}")


@given(fst.structures(max_leaves=10, max_depth=4))
def test_tuple_paths_always_work_and_string_paths_never_pick_another_leaf(spec):
    """`spec[path]` finds every node; its 'a/b' string is the same node or a loud error."""
    nodes = {
        p for leaf in spec.paths for p in (fs.Path(leaf.keys[:n]) for n in range(1, len(leaf) + 1))
    }
    for path in nodes:
        assert spec.resolve(path) == path
        text = str(path)
        try:
            found = spec.resolve(text)
        except fs.SpecError as err:
            empty_segment = "//" in text or text.startswith("/") or text.endswith("/")
            assert empty_segment or "names several" in str(err), (text, str(err))
            continue
        assert found == path, (text, found, path)
    for path, leaf in spec.leaves:
        assert spec[path] == leaf


# ------------------------------------------------------------------- 2. nothing silently lost


def expected_roles(split: fs.SplitSpec) -> dict[fs.Path, set[str]]:
    spec = split.element
    roles: dict[fs.Path, set[str]] = {p: set() for p in spec.paths}
    for path in input_paths(split.inputs):
        for leaf in leaves_under(spec, path):
            roles[leaf].add("input")
    for b in split.losses:
        declared = [(b.target, f"target of {b.name}")]
        if b.sample_weight is not None:
            declared.append((b.sample_weight, f"sample weight of {b.name}"))
        if b.route is not None:
            declared.append((b.route.path, f"route of {b.name}"))
        for path, role in declared:
            for leaf in leaves_under(spec, path):
                roles[leaf].add(role)
    for path in split.drop:
        for leaf in leaves_under(spec, path):
            roles[leaf].add("dropped")
    return roles


@given(splits())
def test_every_leaf_is_an_input_target_weight_route_or_dropped(case):
    """The plan gives each leaf its declared roles, and split hands on every undropped leaf."""
    split, element = case
    compiled = fs.compile(split)
    found = {path: set(roles) for path, _, roles in compiled.plan.roles}
    assert set(found) == set(split.element.paths)
    expected = expected_roles(split)
    for path, roles in found.items():
        assert roles, f"{path} has no role"
        plain = {"input" if r.startswith("input") else r for r in roles}
        assert plain == expected[path], path
    # Eagerly, split hands on the element's own tensor objects: every one not dropped is out.
    outputs = tf.nest.flatten(compiled.split.python_function(element), expand_composites=False)
    handed_on = {id(value) for value in outputs}
    for path in split.element.paths:
        used = expected[path] - {"dropped"}
        assert (id(get(element, path.keys)) in handed_on) == bool(used), path


# ----------------------------------------------------------- 3. key order and re-created containers


def reordered(node: Any, rng: random.Random) -> Any:
    """The same structure re-created: new containers, dict keys in a shuffled order."""
    if isinstance(node, Mapping):
        items = list(node.items())
        rng.shuffle(items)
        return {k: reordered(v, rng) for k, v in items}
    if is_namedtuple(node):
        return type(node)(*(reordered(v, rng) for v in node))
    if isinstance(node, (list, tuple)):
        return type(node)(reordered(v, rng) for v in node)
    return node


@given(splits(), st.randoms(use_true_random=False))
def test_dict_key_order_and_container_copies_change_nothing(case, rng):
    """Specs equal and hash alike; compiled results agree on reordered elements."""
    split, element = case
    spec2 = fs.ElementSpec(reordered(split.element.structure, rng))
    assert spec2 == split.element and hash(spec2) == hash(split.element)
    losses2 = tuple(attrs.evolve(b) for b in split.losses)
    split2 = fs.SplitSpec(
        spec2, inputs=reordered(split.inputs, rng), losses=losses2, drop=tuple(split.drop)
    )
    assert split2 == split and hash(split2) == hash(split)
    element2 = reordered(element, rng)
    first, second = fs.compile(split), fs.compile(split2)
    assert_same(second.split(element2), first.split(element))
    assert_same(first.split(element2), first.split(element))
    assert [str(r) for r in second.plan.roles] == [str(r) for r in first.plan.roles]


# ------------------------------------------------------------------------ 7. traced once


@given(splits(), st.lists(st.integers(1, 5), min_size=2, max_size=3, unique=True), st.data())
def test_split_traces_once_across_batch_sizes_and_unknown_dims(case, sizes, data):
    """One trace serves every batch size (and every size of the spec's unknown dimensions)."""
    split, first = case
    compiled = fs.compile(split)
    compiled.split(first)
    for size in sizes:
        compiled.split(data.draw(fst.elements(split, batch_size=size)))
    assert compiled.split.experimental_get_tracing_count() == 1


# ------------------------------------------------- 8. every mistake is a SpecError naming its path


def raises_naming(paths: list[str], fn, *args, **kwargs) -> fs.SpecError:
    with pytest.raises(fs.SpecError) as info:
        fn(*args, **kwargs)
    for path in paths:
        assert path in info.value.paths, (path, info.value.paths)
        assert f"'{path}'" in str(info.value)
    return info.value


SPLITS = fst.structures(**SMALL).flatmap(fst.split_specs)


@given(SPLITS, st.data())
def test_a_path_that_does_not_exist_is_named(split, data):
    spec = split.element
    leaf = data.draw(st.sampled_from(spec.paths))
    bad = fs.Path((*leaf.keys, data.draw(st.sampled_from(["nope", 0]))))
    field = data.draw(st.sampled_from(["input", "target", "route", "sample_weight", "drop"]))
    if field == "input":
        broken = attrs.evolve(split, inputs={"model": split.inputs, "extra": bad})
    elif field == "drop":
        broken = attrs.evolve(split, drop=(*split.drop, bad))
    else:
        assume(split.losses)
        b = data.draw(st.sampled_from(split.losses))
        change = {
            "target": {"target": bad},
            "sample_weight": {"sample_weight": bad},
            "route": {"route": fs.route(bad)},
        }[field]
        losses = tuple(attrs.evolve(x, **change) if x is b else x for x in split.losses)
        broken = attrs.evolve(split, losses=losses)
    raises_naming([str(bad)], fs.compile, broken)


def without(node: Any, path: fs.Path) -> Any:
    """The inputs structure with every occurrence of ``path`` taken out."""
    if node == path:
        return {}
    if isinstance(node, fs.Path):
        return node
    if isinstance(node, Mapping):
        return {k: without(v, path) for k, v in node.items() if v != path}
    return type(node)(without(v, path) for v in node if v != path)


@given(SPLITS, st.data())
def test_an_unaccounted_leaf_is_named(split, data):
    """Taking a leaf out of drop= (or out of the inputs) is an error listing the leaf."""
    spec = split.element
    roles = expected_roles(split)
    declared = input_paths(split.inputs)

    def only_an_input(path: fs.Path) -> bool:
        under = leaves_under(spec, path)
        others = [q for q in declared if q != path]
        return all(roles[leaf] == {"input"} for leaf in under) and not any(
            set(under) & set(leaves_under(spec, q)) for q in others
        )

    choices = [("drop", p) for p in split.drop]
    choices += [("input", p) for p in dict.fromkeys(declared) if only_an_input(p)]
    assume(choices)
    kind, path = data.draw(st.sampled_from(choices))
    if kind == "drop":
        broken = attrs.evolve(split, drop=tuple(p for p in split.drop if p != path))
    else:
        broken = attrs.evolve(split, inputs=without(split.inputs, path))
    raises_naming([str(p) for p in leaves_under(spec, path)], fs.compile, broken)


@given(SPLITS, st.data())
def test_a_duplicate_binding_name_is_named(split, data):
    assume(split.losses)
    b = data.draw(st.sampled_from(split.losses))
    err = raises_naming(
        [str(b.target)], fs.compile, attrs.evolve(split, losses=(*split.losses, attrs.evolve(b)))
    )
    assert repr(b.name) in str(err)


@given(SPLITS, st.data())
def test_a_route_on_a_leaf_that_is_not_per_example_is_named(split, data):
    spec = split.element
    wide = [p for p in spec.paths if p not in fst.per_example_paths(spec)]
    assume(wide)
    path = data.draw(st.sampled_from(wide))
    binding = fs.LossBinding(
        "routed", fst.leafwise_squared_error, target=spec.paths[0], route=fs.route(path, equals=1)
    )
    group = {"group": split.losses[0].group} if split.losses and split.losses[0].group else {}
    broken = attrs.evolve(
        split,
        losses=(*split.losses, attrs.evolve(binding, **group)),
        drop=tuple(p for p in split.drop if not set(leaves_under(spec, p)) & {spec.paths[0], path}),
    )
    raises_naming([str(path)], fs.compile, broken)


@given(SPLITS, st.data())
def test_a_route_value_the_leaf_cannot_hold_is_named(split, data):
    """``route(label, not_equal=-1)`` on a uint8 leaf must not silently become ``!= 255``."""
    spec = split.element
    ints = [p for p in fst.per_example_paths(spec) if spec[p].dtype.is_integer]
    assume(ints)
    path = data.draw(st.sampled_from(ints))
    dtype = spec[path].dtype
    value = data.draw(st.sampled_from([dtype.max + 1, dtype.min - 1]))
    op = data.draw(st.sampled_from(["equals", "not_equal", "one_of"]))
    route = fs.route(path, **{op: (value,) if op == "one_of" else value})
    binding = fs.LossBinding("routed", fst.leafwise_squared_error, target=path, route=route)
    group = {"group": split.losses[0].group} if split.losses and split.losses[0].group else {}
    broken = attrs.evolve(
        split,
        losses=(*split.losses, attrs.evolve(binding, **group)),
        drop=tuple(p for p in split.drop if path not in leaves_under(spec, p)),
    )
    raises_naming([str(path)], fs.compile, broken)


@given(fst.structures(**SMALL), fst.binding_names(), st.data())
def test_an_unknown_loss_name_is_named(spec, name, data):
    path = data.draw(st.sampled_from(spec.paths))
    typo = data.draw(st.sampled_from(["msee", "sparse_categorical_crossentropi", "dice_loss"]))
    err = raises_naming([str(path)], fs.LossBinding, name, typo, target=path)
    assert "did you mean" in str(err)


def _mutated_type_specs(spec: fs.ElementSpec, path: fs.Path, mutate) -> Any:
    def walk(node: Any, keys: tuple) -> Any:
        if isinstance(node, fs.Leaf):
            return mutate(node) if keys == path.keys else node.type_spec(relax_batch=True)
        if isinstance(node, Mapping):
            return {k: walk(v, (*keys, k)) for k, v in node.items()}
        if is_namedtuple(node):
            return type(node)(*(walk(v, (*keys, f)) for f, v in zip(node._fields, node)))
        return type(node)(walk(v, (*keys, i)) for i, v in enumerate(node))

    return walk(spec.structure, ())


def _other_dtype(dtype: tf.DType, data) -> tf.DType:
    return data.draw(
        st.sampled_from([d for d in (tf.float32, tf.int64, tf.string, tf.bool) if d != dtype])
    )


@given(fst.structures(**SMALL), st.data())
def test_a_dataset_leaf_of_another_dtype_or_rank_is_named(spec, data):
    """`ElementSpec.check` names the leaf whose dtype or rank differs in the dataset."""
    path = data.draw(st.sampled_from(spec.paths))
    change = data.draw(st.sampled_from(["dtype", "more dims", "fewer dims"]))
    leaf = spec[path]
    if change == "dtype":
        mutated = attrs.evolve(leaf, dtype=_other_dtype(leaf.dtype, data))
    elif change == "more dims":
        mutated = leaf.with_shape((*leaf.shape, 2))
    else:
        assume(leaf.rank >= 2 + (leaf.kind == "ragged"))
        mutated = leaf.with_shape(leaf.shape[:-1])
    found = _mutated_type_specs(spec, path, lambda _: mutated.type_spec(relax_batch=True))
    # Fewer dims can read as an unbatched dataset of a one-leaf spec: say it is batched.
    batched = True if change == "fewer dims" else None
    raises_naming([str(path)], spec.check, found, batched=batched)


@given(fst.structures(**SMALL), st.data())
def test_a_leaf_missing_from_the_dataset_is_named(spec, data):
    def parent_allows_removal(path: fs.Path) -> bool:
        parent = get(spec.structure, path.keys[:-1]) if len(path) else None
        if isinstance(parent, Mapping):
            return len(parent) > 1
        return (
            isinstance(parent, (list, tuple))
            and not is_namedtuple(parent)
            and path.keys[-1] == len(parent) - 1
            and len(parent) > 1
        )

    removable = [p for p in spec.paths if parent_allows_removal(p)]
    assume(removable)
    path = data.draw(st.sampled_from(removable))
    found = _mutated_type_specs(spec, path, lambda _: "REMOVE")

    def remove(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: remove(v) for k, v in node.items() if not _is(v, "REMOVE")}
        if isinstance(node, list):
            return [remove(v) for v in node if not _is(v, "REMOVE")]
        if is_namedtuple(node):
            return type(node)(*(remove(v) for v in node))
        if isinstance(node, tuple):
            return tuple(remove(v) for v in node if not _is(v, "REMOVE"))
        return node

    raises_naming([str(path)], spec.check, remove(found))


def _is(value: Any, marker: str) -> bool:
    return isinstance(value, str) and value == marker


@given(splits(), st.data())
def test_calling_split_with_a_wrongly_typed_leaf_names_it(case, data):
    """A batch that does not fit the spec is a SpecError, not a TensorFlow error."""
    split, element = case
    spec = split.element
    path = data.draw(
        st.sampled_from([p for p, leaf in spec.leaves if leaf.kind == "dense"] or [None])
    )
    assume(path is not None)
    value = get(element, path.keys)
    other = tf.string if value.dtype != tf.string else tf.int32
    wrong = (
        tf.zeros(tf.shape(value), other) if other != tf.string else tf.fill(tf.shape(value), "x")
    )

    def replace(node: Any, keys: tuple) -> Any:
        if keys == path.keys:
            return wrong
        if isinstance(node, Mapping):
            return {k: replace(v, (*keys, k)) for k, v in node.items()}
        if is_namedtuple(node):
            return type(node)(*(replace(v, (*keys, f)) for f, v in zip(node._fields, node)))
        if isinstance(node, (list, tuple)):
            return type(node)(replace(v, (*keys, i)) for i, v in enumerate(node))
        return node

    raises_naming([str(path)], fs.compile(split).split, replace(element, ()))


# ------------------------------------------------- regressions found by the properties above


@pytest.mark.parametrize(
    ("dtype", "route"),
    [
        (tf.uint8, {"not_equal": -1}),  # was silently `!= 255`
        (tf.uint8, {"equals": 256}),  # was silently `== 0`
        (tf.int32, {"one_of": (2**31,)}),  # was silently `in (-2**31,)`
        (tf.float32, {"equals": 1e300}),  # was silently `== inf`
    ],
    ids=["uint8 != -1", "uint8 == 256", "int32 in 2**31", "float32 == 1e300"],
)
def test_regression_a_route_value_outside_the_dtype_is_a_spec_error(dtype, route):
    spec = fs.ElementSpec.from_structure({"label": fs.Leaf(dtype, (None,))})
    binding = fs.LossBinding("b", "mse", target="label", route=fs.route("label", **route))
    raises_naming(["label"], fs.compile, fs.SplitSpec(spec, inputs={}, losses=(binding,)))


def test_regression_check_names_a_missing_leaf_beside_a_ragged_leaf():
    """Checking a spec with a ``[B, None]`` ragged leaf crashed on the unbatched reading."""
    spec = fs.ElementSpec.from_structure(
        {"tokens": fs.Leaf(tf.int32, (None, None), kind="ragged"), "label": fs.Leaf(tf.int32)}
    )
    found = {"tokens": tf.RaggedTensorSpec((None, None), tf.int32, 1)}
    raises_naming(["label"], spec.check, found)


# ------------------------------------ 9. what real code brings: examples, NumPy, pipelines


def tuples(node: Any) -> Any:
    """A declared structure as `split` returns it: lists as tuples."""
    if isinstance(node, Mapping):
        return {k: tuples(v) for k, v in node.items()}
    if isinstance(node, list):
        return tuple(tuples(v) for v in node)
    if is_namedtuple(node):
        return type(node)(*(tuples(v) for v in node))
    if isinstance(node, tuple):
        return tuple(tuples(v) for v in node)
    return node


def tensor(value: Any) -> Any:
    composite = isinstance(value, (tf.RaggedTensor, tf.SparseTensor))
    return value if composite else tf.convert_to_tensor(value)


@given(splits(), st.data())
def test_one_unbatched_example_is_split_at_its_paths(case, data):
    """`split` on what an unbatched dataset yields (each leaf one rank short): the leaf at
    each declared path, lists as tuples; as tensors or as NumPy arrays."""
    split, _ = case
    example = data.draw(fst.examples(split, as_numpy=data.draw(st.booleans())))
    inputs, targets, _ = fs.compile(split).split(example)
    expected = map_paths(tuples(split.inputs), lambda p: get(example, p.keys))
    assert_same(inputs, tf.nest.map_structure(tensor, expected), "inputs")
    assert not any(isinstance(v, list) for v in tf.nest.flatten(inputs, expand_composites=False))
    for b in split.losses:
        assert_same(targets[b.name], tf.nest.map_structure(tensor, get(example, b.target.keys)))


@given(splits(), st.data())
def test_numpy_batches_split_as_their_tensors(case, data):
    """``tfds.as_numpy``-style batches (arrays of the spec's dtypes) give the tensors' split."""
    split, _ = case
    arrays = data.draw(fst.elements(split, batch_size=2, as_numpy=True))
    tensors = tf.nest.map_structure(
        lambda v: tf.constant(v) if isinstance(v, np.ndarray) else v, arrays
    )
    compiled = fs.compile(split)
    assert_same(compiled.split(arrays), compiled.split(tensors))


@given(splits())
def test_apply_yields_what_split_returns_list_inputs_kept_apart(case):
    """Through a `tf.data` map (where a returned list would be stacked into one tensor) the
    elements are what `split` returns: same structure, same tensors."""
    split, element = case
    compiled = fs.compile(split)
    expected = compiled.split(element)
    assume(tf.nest.flatten(expected))  # tf.data cannot map to an empty structure
    element = tuples(element)  # tf.data holds tuples, never lists
    mapped = next(iter(compiled.apply(tf.data.Dataset.from_tensors(element))))
    assert_same(mapped, expected)
