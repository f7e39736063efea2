"""The project's promises about itself: CI runs exactly the README's test command."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)\n(.*?)\n```", readme, flags=re.S)
    assert len(commands) >= 2, "the README opens with two commands"
    test_command = commands[1].strip()
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


def test_constraints_pin_torch_and_torchvision():
    pins = (ROOT / "constraints.txt").read_text()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins


def test_the_readmes_python_examples_run(monkeypatch):
    """Every ```python block of the README runs as written, from the repository root."""
    blocks = re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "the README shows the Python API"
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_pip_installs_no_generic_top_level_names():
    """cli.py and pipelines/ install under the freelabel namespace (pyproject's package-dir), not as `cli` and
    `pipelines`."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(name == "freelabel" or name.startswith("freelabel.") for name in setuptools["packages"])
    assert "py-modules" not in setuptools and setuptools["package-dir"]["freelabel.pipelines"] == "pipelines"
    assert (ROOT / "pipelines" / "cli.py").resolve() == (ROOT / "cli.py").resolve()
    import freelabel.pipelines.cli

    assert freelabel.pipelines.cli.main.name == "main"


def test_every_library_package_is_in_the_wheel():
    """pyproject lists packages by hand (package-dir maps pipelines/): a package left out is missing from a
    non-editable install, which editable installs hide."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "freelabel").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


def test_every_data_file_of_the_library_is_in_the_wheel():
    """Model cards, architecture configs and bundled weights ship only if a package-data glob names them."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["freelabel"]
    data = [p.relative_to(ROOT / "freelabel") for p in (ROOT / "freelabel").rglob("*")
            if p.is_file() and p.suffix in {".json", ".safetensors"} and "__pycache__" not in p.parts]
    assert data and not [str(p) for p in data if not any(p.match(glob) for glob in globs)]
