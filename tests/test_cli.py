"""The ``funcsplit`` command: help without TensorFlow, ``describe`` of every kind of target,
one-line errors with exit status 2, and a demo run free of TensorFlow's start-up noise."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

import _funcsplit_cli
import funcsplit as fs

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOISE = ("I0000", "W0000", "E0000", "absl::InitializeLog", "oneDNN", "cuda", "cpu_feature_guard")


def run_cli(*args: str, cwd: pathlib.Path = ROOT, env: dict | None = None, python=()):
    """Runs ``funcsplit ARGS`` in a fresh interpreter, as the console script does."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    environment.update(env or {})
    command = [sys.executable, *python, "-m", "_funcsplit_cli", *args]
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module with a split, a compiled split, factories and other values."""
    (tmp_path / "user_splits.py").write_text(
        textwrap.dedent(
            """
            import tensorflow as tf
            import funcsplit as fs

            element = fs.ElementSpec.from_structure(
                {"x": fs.Leaf(tf.float32, (None, 3)), "y": fs.Leaf(tf.float32, (None, 3))})

            def my_dice(y_true, y_pred):
                return tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)

            split = fs.SplitSpec(element, inputs="x", losses=fs.LossBinding("y", my_dice, "y"))
            compiled = fs.compile(split)
            number = 3

            def make_split():
                return split

            def make_with(size):
                return split

            class Holder:
                split = split
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("user_splits", None)


class TestHelp:
    @pytest.mark.parametrize(
        "args, example",
        [
            (["--help"], "funcsplit describe split.json"),
            (["describe", "--help"], "funcsplit describe funcsplit.demo.example_split:split"),
            (["demo", "--help"], "funcsplit demo --epochs 2"),
        ],
        ids=["top", "describe", "demo"],
    )
    def test_help_has_an_example_and_imports_no_tensorflow(self, args, example):
        done = run_cli(*args, python=("-X", "importtime"))
        assert done.returncode == 0, done.stderr
        assert "examples:" in done.stdout and example in done.stdout
        imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
        assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "funcsplit")]

    def test_every_command_has_its_example_in_the_top_help(self):
        text = _funcsplit_cli.parser().format_help()
        assert "funcsplit demo" in text and "funcsplit describe" in text

    def test_help_imports_nothing_heavy_in_process_either(self):
        code = (
            "import sys, _funcsplit_cli\n"
            "try:\n    _funcsplit_cli.main(['describe', '--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'funcsplit') if m in sys.modules))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == "[]"


class TestDescribe:
    @pytest.mark.parametrize("name", ["split", "compiled", "make_split", "Holder.split"])
    def test_a_split_a_compiled_split_or_a_factory(self, user_module, capsys, name):
        assert _funcsplit_cli.main(["describe", f"user_splits:{name}"]) == 0
        out = capsys.readouterr().out
        assert "target of y" in out and "my_dice" in out
        import user_splits

        assert f"fingerprint {user_splits.split.fingerprint()}" in out

    def test_a_json_file_is_read_without_its_callables(self, user_module, capsys):
        import user_splits

        (user_module / "split.json").write_text(user_splits.split.to_json())
        assert _funcsplit_cli.main(["describe", "split.json"]) == 0
        out = capsys.readouterr().out
        assert "my_dice" in out and f"fingerprint {user_splits.split.fingerprint()}" in out

    @pytest.mark.parametrize(
        "target, message",
        [
            ("no_such_module:split", "no module named 'no_such_module'"),
            ("user_splits:nothing", "has no name 'nothing'"),
            ("user_splits:make_with", "needs arguments (size)"),
            ("user_splits:number", "is of type int, not a SplitSpec"),
            ("missing.json", "no such file: missing.json"),
            ("user_splits", "expected MODULE:NAME or a .json file"),
            ("bad.json", "JSON text"),
        ],
        ids=["module", "name", "factory-args", "not-a-split", "file", "no-colon", "bad-json"],
    )
    def test_a_mistake_is_one_line_and_exit_status_2(self, user_module, capsys, target, message):
        (user_module / "bad.json").write_text("{not json")
        assert _funcsplit_cli.main(["describe", target]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert message in captured.err
        assert "Traceback" not in captured.err
        if target != "bad.json":  # a SpecError lists its problems on a few lines
            assert len(captured.err.strip().splitlines()) == 1

    def test_in_a_fresh_process_describe_prints_the_table_and_no_noise(self, tmp_path):
        split = fs.SplitSpec(
            fs.ElementSpec({"x": fs.Leaf(tf.float32, (None, 2))}), inputs="x", strict=True
        )
        (tmp_path / "split.json").write_text(split.to_json())
        done = run_cli("describe", "split.json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"fingerprint {split.fingerprint()}" in done.stdout
        assert done.stderr == ""
        verbose = run_cli("describe", "--verbose", "split.json", cwd=tmp_path)
        assert verbose.returncode == 0 and verbose.stdout == done.stdout
        if not verbose.stderr:
            pytest.skip("TensorFlow printed nothing at start-up on this machine")
        assert any(word in verbose.stderr for word in NOISE)


def test_the_package_entry_point_runs_the_same_command(capsys):
    assert _funcsplit_cli.main(["describe", "funcsplit.demo.example_split:split"]) == 0
    assert "fingerprint" in capsys.readouterr().out


def test_building_the_demo_data_prints_no_downloading(tmp_path, capsys):
    from funcsplit.demo import digits

    digits.builder(str(tmp_path))
    out = capsys.readouterr().out
    assert "Downloading" not in out and "downloaded and prepared" not in out
    assert "nothing is downloaded" in out


def test_a_demo_run_keeps_tensorflow_noise_out(tmp_path):
    done = run_cli(
        "demo", "--epochs", "1", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Downloading" not in done.stdout and "nothing is downloaded" in done.stdout
    noisy = [line for line in done.stderr.splitlines() if any(w in line for w in NOISE)]
    assert noisy == []
    assert (tmp_path / "out" / "losses.png").exists()
