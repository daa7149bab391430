"""What a reader's `pip install` brings: every chapter, run alone on Colab, installs what it imports.

Each chapter's first cell installs `segformer_edu[book]` from git; pyproject.toml's dependencies and its `book` extra
(which includes `export`) must then cover every third-party module the chapter or the package imports.
"""

import ast
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# modules a notebook on Colab has without installing anything
COLAB_PROVIDES = {"google": "google.colab, Colab's own", "IPython": "the notebook's kernel"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution(requirement: str) -> str:
    return normalise(re.match(r"[A-Za-z0-9_.-]+", requirement)[0])


def installed_by(extra: str | None) -> set[str]:
    """The distributions that `pip install segformer_edu[extra]` asks for (extras of extras followed)."""
    names = {distribution(r) for r in PROJECT["dependencies"]}
    pending = [extra] if extra else []
    while pending:
        for requirement in PROJECT["optional-dependencies"][pending.pop()]:
            inner = re.fullmatch(r"segformer_edu\[(\w+)\]", requirement)
            if inner:
                pending.append(inner[1])
            else:
                names.add(distribution(requirement))
    return names


def third_party(source: str) -> set[str]:
    """The top-level modules that ``source`` imports, less the standard library's and the package's own."""
    lines = source.splitlines()  # IPython's %magic and !shell lines are not Python: a `pass` in their place
    code = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
                     for line in lines)
    modules = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"segformer_edu"}


def missing(modules: set[str], installed: set[str]) -> list[str]:
    """The modules that no installed distribution provides (as this environment maps modules to distributions)."""
    providers = importlib.metadata.packages_distributions()
    lacking = []
    for module in sorted(modules - set(COLAB_PROVIDES)):
        if not {normalise(d) for d in providers.get(module, [])} & installed:
            lacking.append(f"{module} (from {providers.get(module, ['no installed distribution'])})")
    return lacking


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_a_chapter_installs_what_it_imports(chapter):
    cells = json.loads(chapter.read_text(encoding="utf-8"))["cells"]
    install = "".join(cells[0]["source"])
    assert "segformer_edu[book] @ git+" in install, f"{chapter.name}: the install cell must ask for the book extra"
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    lacking = missing(third_party(code), installed_by("book"))
    assert not lacking, f"{chapter.name}: {lacking}"


# modules that need an extra of their own; plain `pip install segformer_edu` covers the others
EXTRA_OF_MODULE = {"export.py": "export", "corruptions.py": "robustness"}


def test_the_package_declares_what_it_imports():
    """Plain `pip install segformer_edu` covers the package; export and corruptions need their extra only."""
    for module in sorted((ROOT / "segformer_edu").glob("*.py")):
        extra = EXTRA_OF_MODULE.get(module.name)
        lacking = missing(third_party(module.read_text()), installed_by(extra))
        assert not lacking, f"{module.name}: {lacking}"


def test_the_makefile_installs_the_corruptions_without_the_opencv_that_needs_libgl():
    """The Makefile installs imagecorruptions-imaug with --no-deps, pinned as the `robustness` extra; requirements.txt
    then has to carry each of its declared dependencies, with OpenCV's headless build for opencv-python."""
    (pin,) = PROJECT["optional-dependencies"]["robustness"]
    assert re.search(rf"^CORRUPTIONS := {re.escape(pin)}$", (ROOT / "Makefile").read_text(), re.M)
    assert "install -q --no-deps $(CORRUPTIONS)" in (ROOT / "Makefile").read_text()
    required = {distribution(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    declared = importlib.metadata.requires(distribution(pin))
    needed = {distribution(r) for r in declared if "extra ==" not in r and "python_version" not in r}
    needed = {"opencv-python-headless" if name == "opencv-python" else name for name in needed}
    assert needed - required == set(), f"requirements.txt lacks {sorted(needed - required)}"
    assert distribution(pin) not in required  # pip would bring opencv-python with it

    assert missing({"imagecorruptions"}, installed_by(None)) and not missing({"imagecorruptions"}, installed_by("book"))


def test_the_check_finds_an_undeclared_import():
    assert missing({"onnxruntime"}, installed_by(None)) and not missing({"onnxruntime"}, installed_by("export"))
