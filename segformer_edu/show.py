"""Show the package's own source in the book, so that chapters never keep a second copy."""

import inspect


def show_source(obj):
    """The source of a class or function of ``segformer_edu``, highlighted in a notebook."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")
