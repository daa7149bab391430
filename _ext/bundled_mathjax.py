"""Serve MathJax from the built book itself, so that math typesets with no network.

`make mathjax` installs the npm package `mathjax` (pinned in package.json) into node_modules/. At the end of an
HTML build this extension copies its `es5` folder to `_static/mathjax/` of the output, and `mathjax_path` in
_config.yml points there. It is not listed in `html_static_path` on purpose: Jupyter Book adds every .js file of
the static folders to every page, which would load all of MathJax's components at once.
"""
from pathlib import Path
import shutil

from sphinx.errors import ExtensionError


def _source(app):
    return Path(app.srcdir, app.config.bundled_mathjax_dir)


def _check_installed(app):
    if app.builder.format != "html":
        return
    source = _source(app)
    if not (source / "tex-mml-chtml.js").is_file():
        raise ExtensionError(
            f"MathJax is not installed in {source}: run `make mathjax` (npm ci) before building the book"
        )


def _copy(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source = _source(app)
    target = Path(app.outdir, "_static", "mathjax")
    shutil.copytree(source, target, dirs_exist_ok=True)
    licence = source.parent / "LICENSE"  # Apache-2.0: ships with the copy
    if licence.is_file():
        shutil.copy2(licence, target / "LICENSE")


def setup(app):
    app.add_config_value("bundled_mathjax_dir", "node_modules/mathjax/es5", "html")
    app.connect("builder-inited", _check_installed)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
