"""funcsplit.demo: the local TFDS dataset funcsplit_digits and a tiny run of the demo."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import _funcsplit_cli
import funcsplit as fs
from funcsplit.demo import digits
from funcsplit.demo import main
from funcsplit.demo import task
from funcsplit.demo import weightings


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """A data dir holding funcsplit_digits, prepared once for this module."""
    path = str(tmp_path_factory.mktemp("tfds"))
    digits.builder(path)
    return path


@pytest.fixture(scope="module")
def train_examples(data_dir) -> dict[str, np.ndarray]:
    ds = tfds.load(digits.NAME, data_dir=data_dir, split="train", batch_size=-1)
    return tfds.as_numpy(ds)


def test_name_tokens_spell_every_digit():
    for digit, name in enumerate(digits.DIGIT_NAMES):
        tokens = digits.name_tokens(digit)
        assert tokens.shape == (digits.NAME_LENGTH,)
        assert tokens[0] == digits.BOS
        end = list(tokens).index(digits.EOS)
        assert "".join(digits.VOCAB[t] for t in tokens[1:end]) == name
        assert set(tokens[end + 1 :]) <= {digits.PAD}


def test_dataset_reads_back_with_its_features_and_splits(data_dir):
    builder = tfds.builder(digits.NAME, data_dir=data_dir)
    assert isinstance(builder, digits.FuncsplitDigits)
    splits = builder.info.splits
    assert splits["train"].num_examples + splits["test"].num_examples == 1797
    assert splits["test"].num_examples == int(1797 * digits.TEST_FRACTION)
    assert fs.tfds.num_classes(builder) == {"label": 10, "coarse": 5}
    assert builder.info.supervised_keys == ("image", "label")
    spec = fs.tfds.element_spec(builder)
    assert {str(p): leaf for p, leaf in spec.leaves} == {
        "coarse": fs.Leaf(tf.int64),
        "id": fs.Leaf(tf.int64),
        "image": fs.Leaf(tf.uint8, (None, 8, 8, 1)),
        "label": fs.Leaf(tf.int64),
        "mask": fs.Leaf(tf.bool, (None, 8, 8, 1)),
        "name": fs.Leaf(tf.int32, (None, digits.NAME_LENGTH)),
    }
    spec.check(tfds.load(digits.NAME, data_dir=data_dir, split="test"))
    image, label = next(
        iter(tfds.load(digits.NAME, data_dir=data_dir, split="test", as_supervised=True))
    )
    assert image.shape == (8, 8, 1) and label.dtype == tf.int64


def test_examples_hold_consistent_tasks_and_missing_labels(train_examples):
    ex = train_examples
    label = ex["label"]
    missing = label == -1
    assert 0.1 < missing.mean() < 0.3  # ~20% deliberately unlabelled
    assert set(np.unique(label[~missing])) == set(range(10))
    np.testing.assert_array_equal(ex["coarse"][~missing], label[~missing] // 2)
    np.testing.assert_array_equal(ex["mask"], ex["image"] >= 128)
    for i in np.flatnonzero(~missing)[:50]:
        np.testing.assert_array_equal(ex["name"][i], digits.name_tokens(int(label[i])))
    # missing labels are still recoverable from the other tasks: the route, not the data, hides them
    assert set(np.unique(ex["coarse"][missing])) <= set(range(5))
    assert len(np.unique(ex["id"])) == len(ex["id"])


def test_demo_split_routes_only_labelled_examples_to_the_label_loss(data_dir):
    builder = digits.builder(data_dir)
    compiled = fs.compile(task.split_spec(builder))
    train, _ = task.datasets(builder, compiled, batch_size=32)
    inputs, targets, weights = next(iter(train))
    assert sorted(inputs) == ["image", "name"]
    labels = targets["label"].numpy()
    assert (labels == -1).any()  # a batch of 32 holds missing labels
    predictions = {
        "label": tf.fill((32, 10), 0.1),
        "coarse": tf.fill((32, 5), 0.2),
        "mask": tf.fill((32, 8, 8, 1), 0.5),
        "name": tf.fill((32, digits.NAME_LENGTH, len(digits.VOCAB)), 1 / len(digits.VOCAB)),
    }
    result = compiled.loss(targets, predictions, weights)
    assert int(result.counts["label"]) == int((labels != -1).sum())
    assert int(result.counts["coarse"]) == 32
    assert float(result.per_loss["label"]) == pytest.approx(np.log(10), rel=1e-5)
    assert task.labelled_fraction(builder)[1] == builder.info.splits["train"].num_examples


def test_tiny_demo_run_writes_plot_and_routing_table(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(out=str(out), epochs=1, data_dir=data_dir, limit=96, verbose=0) == 0
    png = (out / "losses.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    routing = (out / "routing.md").read_text()
    assert "label != -1" in routing and "| label | 1 |" in routing and "dropped" in routing
    history = json.loads((out / "history.json").read_text())
    for key in ("loss", "label_loss", "coarse_loss", "mask_loss", "name_loss", "val_label_loss"):
        assert len(history[key]) == 1 and np.isfinite(history[key][0])
    printed = capsys.readouterr().out
    assert "route of label" in printed and "train (last)" in printed


def test_cli_demo_passes_its_options(monkeypatch):
    calls = []
    monkeypatch.setattr("funcsplit.demo.main", lambda **kwargs: calls.append(kwargs) or 0)
    assert _funcsplit_cli.main(["demo", "--out", "o", "--epochs", "2", "--data-dir", "d"]) == 0
    assert calls == [{"out": "o", "epochs": 2, "data_dir": "d"}]


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FUNCSPLIT_DATA_DIR", str(tmp_path))
    assert digits.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("FUNCSPLIT_DATA_DIR")
    assert digits.default_data_dir().endswith("funcsplit/tfds")


def _few_methods(monkeypatch) -> tuple[str, ...]:
    """static, a loss-based method and (when on main) a Gram method: a fast comparison."""

    names = weightings.available()
    gram = [n for n in names if getattr(fs.weighting, n)().needs_gram][:1]
    few = ("static", "uncertainty", *gram)
    monkeypatch.setattr(weightings, "available", lambda: few)
    return few


def test_tiny_demo_with_a_weighting_shows_the_weights(data_dir, tmp_path, capsys, monkeypatch):
    few = _few_methods(monkeypatch)
    name = few[-1]
    out = tmp_path / "weighted"
    assert main(out=str(out), epochs=1, data_dir=data_dir, limit=96, verbose=0, weighting=name) == 0
    history = json.loads((out / "history.json").read_text())
    for task_name in ("label", "coarse", "mask", "name"):
        assert np.isfinite(history[f"{task_name}_weight"][0])
        assert f"val_{task_name}_weight" not in history
    printed = capsys.readouterr().out
    assert f"weighting=fs.weighting.{name}()" in printed and "token accuracy" in printed


def test_tiny_compare_weightings_writes_table_json_and_plot(
    data_dir, tmp_path, capsys, monkeypatch
):
    few = _few_methods(monkeypatch)
    out = tmp_path / "compare"
    assert main(out=str(out), epochs=1, data_dir=data_dir, limit=96, compare_weightings=True) == 0
    record = json.loads((out / "weightings.json").read_text())
    records = {r["method"]: r for r in record["records"]}
    assert list(records) == list(few)
    assert records["static"]["delta_m"] == 0.0
    for r in records.values():
        assert set(r["metrics"]) == {"label", "coarse", "mask", "name"}
        assert all(0.0 <= v <= 1.0 for v in r["metrics"].values())
    base, other = records["static"]["metrics"], records["uncertainty"]["metrics"]
    by_hand = 100 * np.mean([(other[t] - base[t]) / base[t] for t in base])
    assert records["uncertainty"]["delta_m"] == pytest.approx(by_hand, abs=1e-8)
    table = (out / "weightings.md").read_text()
    assert "Δm % vs static" in table and "| uncertainty |" in table
    assert (out / "weightings.png").read_bytes().startswith(b"\x89PNG")
    assert "Δm %" in capsys.readouterr().out


def test_demo_rejects_an_unknown_weighting(data_dir, tmp_path):
    with pytest.raises(SystemExit, match="unknown weighting 'nope'"):
        main(out=str(tmp_path), epochs=1, data_dir=data_dir, weighting="nope")


def test_cli_demo_passes_the_weighting_flags(monkeypatch):
    calls = []
    monkeypatch.setattr("funcsplit.demo.main", lambda **kwargs: calls.append(kwargs) or 0)
    assert _funcsplit_cli.main(["demo", "--weighting", "famo"]) == 0
    assert _funcsplit_cli.main(["demo", "--compare-weightings", "--epochs", "3"]) == 0
    assert calls[0]["weighting"] == "famo" and "compare_weightings" not in calls[0]
    assert calls[1]["compare_weightings"] is True and calls[1]["epochs"] == 3


def test_delta_m_follows_libmtl():

    # LibMTL count_improvement: mean over tasks of (-1)^{l_t} (base - new) / base with
    # l_t = 1 for higher-is-better metrics, i.e. (new - base) / base
    base = {"label": 0.8, "coarse": 0.9, "mask": 0.5, "name": 0.6}
    new = {"label": 0.84, "coarse": 0.9, "mask": 0.45, "name": 0.66}
    expected = 100 * np.mean([0.05, 0.0, -0.1, 0.1])
    assert weightings.delta_m(base, new) == pytest.approx(expected, abs=1e-9)


def test_weighting_page_quotes_the_committed_comparison():
    """docs/howto/weighting.md shows the table of benchmarks/results/weightings/."""
    root = pathlib.Path(__file__).resolve().parents[1]
    committed = (root / "benchmarks/results/weightings/weightings.md").read_text()
    page = (root / "docs/howto/weighting.md").read_text()
    start = page.index("<!-- weightings-table:start -->")
    quoted = page[start : page.index("<!-- weightings-table:end -->")]
    table = committed[committed.index("| method") :].strip()
    assert table in quoted
    records = json.loads((root / "benchmarks/results/weightings/weightings.json").read_text())
    assert [r["method"] for r in records["records"]] == list(fs.weighting.NAMES)
