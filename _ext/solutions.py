"""One toggle per solution: each exercise's code cells go inside its "Solution N" dropdown on the page.

In a chapter, a solution is a code cell whose first line is ``# Solution to exercise N`` (tagged ``solution``),
followed by a Markdown cell that opens ``:::{dropdown} Solution N`` with the solution in words. In a notebook the
reader sees both, one after the other. On the page this transform moves the code cells, source and output, into
the dropdown after the words, so that a reader opens one labelled toggle and finds the whole solution. A solution
cell that is not directly followed by its dropdown stops the build with a warning naming it (the book is built
with -W), rather than being left in the open.
"""
import re

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)
SOLUTION_CELL = re.compile(r"#\s*Solution to exercise (\d+)\b")
SOLUTION_TITLE = re.compile(r"Solution (\d+)\b")


def solution_number(node):
    """N for a notebook code cell whose source starts with '# Solution to exercise N', else None."""
    if not (isinstance(node, nodes.container) and node.get("nb_element") == "cell_code" and node.children):
        return None
    source = node.children[0]
    if source.get("nb_element") != "cell_code_source":
        return None
    match = SOLUTION_CELL.match(source.astext().lstrip())
    return int(match[1]) if match else None


def dropdown_number(node):
    """N for a sphinx-design dropdown titled 'Solution N...', else None."""
    if not (isinstance(node, nodes.container) and node.get("design_component") == "dropdown"):
        return None
    if not (node.get("has_title") and node.children and isinstance(node[0], nodes.rubric)):
        return None
    match = SOLUTION_TITLE.match(node[0].astext())
    return int(match[1]) if match else None


class SolutionsInDropdowns(SphinxPostTransform):
    # before sphinx-design turns dropdowns into <details> and myst-nb wraps hidden cells (both 199)
    default_priority = 150
    formats = ("html",)

    def run(self, **kwargs):
        for dropdown in list(self.document.findall(lambda node: dropdown_number(node) is not None)):
            number, parent = dropdown_number(dropdown), dropdown.parent
            cells = []
            index = parent.index(dropdown) - 1
            while index >= 0 and solution_number(parent[index]) == number:
                cells.insert(0, parent[index])
                index -= 1
            for cell in cells:
                parent.remove(cell)
                cell["classes"].append("solution-code")
                dropdown.append(cell)
        for cell in self.document.findall(lambda node: solution_number(node) is not None):
            if "solution-code" not in cell["classes"]:
                logger.warning(f"the code of solution {solution_number(cell)} is not followed by its "
                               f"':::{{dropdown}} Solution {solution_number(cell)}': it would show open",
                               location=cell)


def setup(app):
    app.add_post_transform(SolutionsInDropdowns)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
