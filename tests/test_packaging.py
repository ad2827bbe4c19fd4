"""The package's public face: `__all__`, the README's commands and example, CI."""

import pathlib
import re
from importlib import metadata

import funcsplit as fs

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_public_names_of_the_contract():
    contract = {
        "Path",
        "Leaf",
        "ElementSpec",
        "LossBinding",
        "route",
        "SplitSpec",
        "compile",
        "CompiledSplit",
        "LossResult",
        "SpecError",
        "losses",
    }
    assert contract <= set(fs.__all__)
    for name in fs.__all__:
        assert getattr(fs, name) is not None
        assert getattr(fs, name).__doc__, name


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = [line for line in ci.splitlines() if "pytest" in line and not line.startswith("#")]
    assert len(command) == 1
    assert command[0].strip() in README


def test_readme_has_the_demo_command():
    assert re.search(r'pip install -e "\.\[demo\]" && funcsplit demo', README)


def test_readme_example_runs():
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert set(namespace["targets"]) == {"digit", "parity"}


def test_installed_metadata_has_the_extras_and_the_script():
    meta = metadata.metadata("funcsplit")
    assert {"test", "demo", "docs", "jax"} <= set(meta.get_all("Provides-Extra"))
    assert any(r.startswith("tensorflow>=2.16") for r in meta.get_all("Requires-Dist"))
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts["funcsplit"] == "_funcsplit_cli:main"  # parses --help without TensorFlow


def test_import_funcsplit_does_not_import_optional_integrations():
    import subprocess
    import sys

    code = (
        "import sys, funcsplit; "
        "print(any(m in sys.modules for m in ('tensorflow_datasets', 'funcsplit.jax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")
