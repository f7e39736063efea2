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
            assert not anchor or anchor in heading_anchors(linked), \
                f"{page.relative_to(ROOT)}: no #{anchor} in {target}"


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


def _module_imports() -> dict[str, set[str]]:
    """Every project module (``freelabel.*``; ``pipelines/`` as ``freelabel.pipelines.*``) and the project modules it
    imports anywhere in its file: at the top, inside functions (lazy imports) and under ``TYPE_CHECKING``."""
    import ast

    files = {p: "freelabel." + ".".join(p.relative_to(ROOT / "freelabel").with_suffix("").parts)
             for p in (ROOT / "freelabel").rglob("*.py")}
    files.update({p: "freelabel.pipelines." + p.stem for p in (ROOT / "pipelines").glob("*.py")})
    modules = {name.removesuffix(".__init__") for name in files.values()}
    graph: dict[str, set[str]] = {}
    for path, name in files.items():
        name = name.removesuffix(".__init__")
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                imported.add(base)
                imported.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in imported if target in modules and target != name}
    return graph


def test_no_import_cycles_and_recipes_stand_alone():
    """No two project files import each other, directly or around a loop (lazy imports count too); the library
    never imports a recipe or the CLI; a recipe never imports another recipe (the CLI imports them all). A package's
    ``__init__`` re-exporting its modules is not a cycle when no module imports its own package back."""
    graph = _module_imports()
    recipes = {name for name in graph if name.startswith("freelabel.pipelines.") and name != "freelabel.pipelines.cli"}
    for name, targets in graph.items():
        if not name.startswith("freelabel.pipelines"):
            assert not {t for t in targets if t.startswith("freelabel.pipelines")}, f"{name} imports a recipe"
        elif name in recipes:
            assert not targets & recipes, f"recipe {name} imports recipe(s) {sorted(targets & recipes)}"
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"
