"""Citations and the bibliography with the same labels: "Xie et al., 2021" in the text and in the list.

sphinxcontrib-bibtex cites "[Xie et al., 2021]" with its author_year referencing style, but labels the list with
pybtex's alpha labels ("[XWY+21]"). This extension gives the list author-year labels (``author_year`` formatting
style, entries sorted by author, year and title), with "a", "b"... after the year where two works share an author
and a year, and cites with those labels' years (``author_year_labels`` referencing style), so that "Chen et al.,
2018a" in the text is "Chen et al., 2018a" in the list.
"""
from collections import Counter
from dataclasses import dataclass

import pybtex.plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
from sphinxcontrib.bibtex.style.referencing.basic_author_year import (
    BasicAuthorYearParentheticalReferenceStyle,
    BasicAuthorYearTextualReferenceStyle,
)
from sphinxcontrib.bibtex.style.template import join, join2, node, post_text, pre_text, reference

LAST_NAMES = pybtex.plugin.find_plugin("pybtex.style.names", "last")()


def authors(entry) -> str:
    """As the author_year citations name them: one or two last names, or the first and "et al."."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [LAST_NAMES.format(person, True).format().render_as("text") for person in persons]
    if not names:
        return entry.fields.get("title", entry.key)
    if len(names) <= 2:
        return " and ".join(names)
    return f"{names[0]} et al."


class AuthorYearLabels(BaseLabelStyle):
    """Labels "Author, year", with a letter after the year for works that share both."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        bases = [f"{authors(entry)}, {entry.fields.get('year', 'n.d.')}" for entry in entries]
        shared, seen = Counter(bases), Counter()
        for base in bases:
            if shared[base] > 1:
                seen[base] += 1
                yield base + "abcdefghijklmnopqrstuvwxyz"[seen[base] - 1]
            else:
                yield base


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "author_year"
    default_sorting_style = "author_year_title"


@node
def label_year(children, data):
    """The year as the entry's label has it: "2018a" where two works share an author and a year."""
    assert not children
    return Text(data["formatted_entry"].label.rsplit(", ", 1)[-1])


@dataclass
class LabelYearParenthetical(BasicAuthorYearParentheticalReferenceStyle):
    def inner(self, role_name):
        return join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
            pre_text,
            reference[join(sep=self.author_year_sep)[
                self.person.author_or_editor_or_title(full="s" in role_name), label_year]],
            post_text,
        ]


@dataclass
class LabelYearTextual(BasicAuthorYearTextualReferenceStyle):
    def inner(self, role_name):
        return join(sep=self.text_reference_sep)[
            self.person.author_or_editor_or_title(full="s" in role_name),
            join[self.bracket.left,
                 join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[pre_text, reference[label_year], post_text],
                 self.bracket.right],
        ]


@dataclass
class AuthorYearLabelsReferenceStyle(AuthorYearReferenceStyle):
    """author_year, with the year (and its letter) taken from the bibliography's label."""

    def __post_init__(self):
        super().__post_init__()
        parenthetical, textual = self.styles[0], self.styles[1]
        self.styles[0] = LabelYearParenthetical(
            bracket=parenthetical.bracket, person=parenthetical.person, author_year_sep=parenthetical.author_year_sep,
            pre_text_sep=parenthetical.pre_text_sep, post_text_sep=parenthetical.post_text_sep)
        self.styles[1] = LabelYearTextual(
            bracket=textual.bracket, person=textual.person, text_reference_sep=textual.text_reference_sep,
            pre_text_sep=textual.pre_text_sep, post_text_sep=textual.post_text_sep)
        self.role_style.update((name, style) for style in self.styles[:2] for name in style.role_names())


pybtex.plugin.register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
pybtex.plugin.register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
register_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_labels", AuthorYearLabelsReferenceStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
