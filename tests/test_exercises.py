"""Every chapter's exercises, as a self-learner needs them: each has a hint, and a worked solution that stays
collapsed until opened, one labelled toggle per solution: a `{dropdown}` titled "Solution N" with the solution in
words, and the code cells that compute it (run under nbval) directly before it, tagged `solution`, which the book
moves inside the dropdown (_ext/solutions.py)."""

import json
import re
from pathlib import Path

import pytest

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "book").glob("*.ipynb"))
ITEM = re.compile(r"^(\d+)\. (.*?)(?=^\d+\. |\Z)", re.M | re.S)


def exercises(cells) -> dict[int, str]:
    """{number: text} of the numbered items between the '## Exercises' and '## Solutions' headings."""
    text, inside = "", False
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] != "markdown":
            continue
        if "## Exercises" in source:
            inside, source = True, source.split("## Exercises", 1)[1]
        if inside:
            text += source.split("## Solutions", 1)[0] + "\n"
        if "## Solutions" in source:
            break
    return {int(number): body for number, body in ITEM.findall(text)}


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_every_exercise_has_a_hint_and_a_collapsed_solution(chapter):
    cells = json.loads(chapter.read_text(encoding="utf-8"))["cells"]
    found = exercises(cells)
    assert found and sorted(found) == list(range(1, len(found) + 1)), f"{chapter.name}: exercises {sorted(found)}"
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for number, text in found.items():
        assert "*Hint:*" in text, f"{chapter.name}, exercise {number}: no hint"
        assert re.search(rf":::\{{dropdown\}} Solution {number}\b", markdown), f"{chapter.name}: no solution {number}"
    for index, cell in enumerate(cells):
        source = "".join(cell["source"]).lstrip()
        solution = re.match(r"# Solution to exercise (\d+)", source)
        if cell["cell_type"] == "code" and solution:
            number = int(solution[1])
            assert number in found, f"{chapter.name}: a solution to exercise {number}, not asked"
            tags = cell["metadata"].get("tags", [])
            assert "solution" in tags and not {"hide-input", "hide-output", "hide-cell"} & set(tags), (
                f"{chapter.name}, solution {number}: {tags} (tag it 'solution'; the dropdown hides it)")
            following = index + 1
            while re.match(rf"# Solution to exercise {number}\b", "".join(cells[following]["source"]).lstrip()):
                following += 1  # a solution may take several code cells
            after = "".join(cells[following]["source"]).lstrip()
            assert cells[following]["cell_type"] == "markdown" and re.match(
                rf":::\{{dropdown\}} Solution {number}\b", after), (
                f"{chapter.name}: the code of solution {number} is not followed by its dropdown")
