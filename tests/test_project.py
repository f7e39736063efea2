"""The project's promises about itself: CI runs exactly the README's test command."""

import re
import tomllib
from pathlib import Path

import pytest

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


DOCS = sorted((ROOT / "docs").glob("*.md"))


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page (plain ``` blocks are shown, not run)."""
    return re.findall(r"```python\n(.*?)\n```", page.read_text(), flags=re.S)


def test_the_readmes_python_examples_run(monkeypatch):
    """Every ```python block of the README runs as written, from the repository root."""
    blocks = python_blocks(ROOT / "README.md")
    assert blocks, "the README shows the Python API"
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_the_docs_python_examples_run(page, monkeypatch):
    """Every ```python block of docs/*.md runs as written, from the repository root, as the README's do."""
    monkeypatch.chdir(ROOT)
    for block in python_blocks(page):
        exec(compile(block, str(page.relative_to(ROOT)), "exec"), {})


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a Markdown page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.*)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_the_readme_and_docs_link_to_what_exists():
    """Relative links and images of the README and docs/*.md point to files of the repository, and their
    #anchors to headings of the page linked."""
    assert DOCS, "the details live in docs/"
    for page in [ROOT / "README.md", *DOCS]:
        for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", page.read_text()):
            linked = page.parent / target if target else page
            assert linked.exists(), f"{page.relative_to(ROOT)} links to a missing {target}"
            assert not anchor or anchor in heading_anchors(linked), f"{page.relative_to(ROOT)}: no #{anchor} in {target}"


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
