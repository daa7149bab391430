"""Every chapter's exercises, as a self-learner needs them: each has a hint, and a worked solution that stays
collapsed until opened (a `{dropdown}` in words; code solutions run under nbval with input and output hidden)."""

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
    for cell in cells:
        source = "".join(cell["source"]).lstrip()
        solution = re.match(r"# Solution to exercise (\d+)", source)
        if cell["cell_type"] == "code" and solution:
            assert int(solution[1]) in found, f"{chapter.name}: a solution to exercise {solution[1]}, not asked"
            tags = cell["metadata"].get("tags", [])
            assert {"hide-input", "hide-output"} <= set(tags), f"{chapter.name}, solution {solution[1]}: {tags}"
