"""What the book's chapters display: the package's own source
(so that chapters never keep a second copy) and tables of measurements."""

import inspect


def show_source(obj):
    """The source of a class or function of ``segformer_edu``, highlighted in a notebook."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def markdown_table(header, rows):
    """A list of rows as a Markdown table, so that the rendered page shows a real table."""
    from IPython.display import Markdown

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return Markdown("\n".join(lines))
