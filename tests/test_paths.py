"""Tests for `fs.Path` and path resolution against structures."""

import collections

import pytest

import funcsplit as fs
from funcsplit._src import paths

Point = collections.namedtuple("Point", ["x", "y"])

TREE = {
    "image/filename": "leaf-a",
    "image": {"filename": "leaf-b", "pixels": "leaf-c"},
    "objects": {"bbox": "leaf-d"},
    "pair": ("t0", ["l0", "l1"]),
    "point": Point("px", "py"),
}


class TestPath:
    def test_parse_gives_string_keys(self):
        assert fs.Path.parse("label_dict/category_1") == fs.Path(("label_dict", "category_1"))

    def test_is_an_immutable_hashable_sequence(self):
        path = fs.Path(("a", 0, "b"))
        assert tuple(path) == ("a", 0, "b")
        assert len(path) == 3 and path[1] == 0
        assert hash(path) == hash(fs.Path(("a", 0, "b")))
        with pytest.raises(AttributeError):
            path.keys = ("c",)

    def test_str_and_repr(self):
        assert str(fs.Path(("a", 0))) == "a/0"
        assert repr(fs.Path(("image/filename",))) == "Path(('image/filename',))"
        assert str(fs.Path(())) == "<root>"

    def test_join(self):
        assert fs.Path(("a",)) / 1 == fs.Path(("a", 1))

    @pytest.mark.parametrize("text", ["", "a//b", "/a", "a/"], ids=repr)
    def test_parse_rejects_empty_segments(self, text):
        with pytest.raises(fs.SpecError, match="empty segment"):
            fs.Path.parse(text)

    @pytest.mark.parametrize(
        "keys",
        [(1.5,), (True,), ("",), (-1,), (None,)],
        ids=["float", "bool", "empty", "neg", "none"],
    )
    def test_rejects_bad_keys(self, keys):
        with pytest.raises(fs.SpecError):
            fs.Path(keys)

    def test_a_bare_string_is_not_keys(self):
        with pytest.raises(fs.SpecError, match="Path.parse"):
            fs.Path("a/b")

    def test_spec_error_is_a_value_error(self):
        assert issubclass(fs.SpecError, ValueError)


class TestResolve:
    @pytest.mark.parametrize(
        ("path", "keys"),
        [
            ("objects/bbox", ("objects", "bbox")),
            ("image/pixels", ("image", "pixels")),
            ("pair/1/0", ("pair", 1, 0)),
            ("point/y", ("point", "y")),
            ("point/1", ("point", "y")),
            (fs.Path(("image/filename",)), ("image/filename",)),
            (fs.Path(("image", "filename")), ("image", "filename")),
            (fs.Path(("pair", "1")), ("pair", 1)),
        ],
        ids=str,
    )
    def test_resolves_to_canonical_keys(self, path, keys):
        assert paths.resolve(TREE, path, "test") == keys

    def test_ambiguous_string_path_names_candidates_and_the_tuple_fix(self):
        with pytest.raises(fs.SpecError) as info:
            paths.resolve(TREE, "image/filename", "test")
        message = str(info.value)
        assert "('image/filename',)" in message and "('image', 'filename')" in message
        assert "tuple form" in message
        assert info.value.paths == ("image/filename",)

    def test_keys_with_slash_resolve_when_unambiguous(self):
        tree = {"image/filename": "a", "image": "b"}
        assert paths.resolve(tree, "image/filename", "test") == ("image/filename",)

    def test_unknown_path_suggests_nearby_paths(self):
        with pytest.raises(fs.SpecError) as info:
            paths.resolve(TREE, "objects/bbx", "losses[0] 'box' target")
        message = str(info.value)
        assert "objects/bbx" in message
        assert "did you mean: objects/bbox" in message
        assert "losses[0] 'box' target" in message

    @pytest.mark.parametrize("path", ["pair/2", "pair/0/0", "point/z", "nothing"], ids=str)
    def test_paths_that_name_nothing(self, path):
        with pytest.raises(fs.SpecError, match="no such path"):
            paths.resolve(TREE, path, "test")
