"""The book's figures record their smallest text, which tests/test_rendered_book.py checks as displayed."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from segformer_edu import plots  # noqa: E402


def test_the_smallest_text_is_found_and_recorded_in_the_png():
    plots.book_style()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    ax.set_title("a title", fontsize=14)
    ax.text(0.5, 0.5, "a small note", fontsize=6.5)
    assert abs(plots.smallest_text_px(fig) - 6.5 * plots.DPI / 72) < 1e-6
    recorded = Image.open(io.BytesIO(plots.png_bytes(fig))).info[plots.TEXT_KEY]
    assert float(recorded) == round(6.5 * plots.DPI / 72, 2)
    ax.tick_params(labelsize=5)  # tick labels exist once the figure is drawn, and count
    assert abs(plots.smallest_text_px(fig) - 5 * plots.DPI / 72) < 1e-6
    plt.close(fig)


def test_figures_default_to_the_width_of_the_page_column():
    plots.book_style()
    fig = plt.figure()
    assert fig.get_size_inches()[0] * fig.dpi <= 775  # the column at a 1024 px window
    plt.close(fig)


def test_the_style_is_undone_by_restore_or_a_with_block():
    """book_style changes matplotlib's defaults only until restore() or the end of its with block."""
    before = dict(matplotlib.rcParams)
    with plots.book_style():
        assert matplotlib.rcParams["figure.figsize"] == [plots.COLUMN_INCHES, 3.6]
        assert matplotlib.rcParams["font.size"] == 10
    assert dict(matplotlib.rcParams) == before
    style = plots.book_style()
    assert matplotlib.rcParams["figure.dpi"] == plots.DPI
    style.restore()
    assert dict(matplotlib.rcParams) == before
