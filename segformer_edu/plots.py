"""The book's figures: sized for the page's column, with text legible there, and shared drawings.

Every chapter calls ``book_style()`` once, before its first figure (``with book_style():``
keeps it to a block; ``restore()`` undoes it). It sets matplotlib's
defaults (figures as wide as the book's text column, ``COLUMN_INCHES`` at ``DPI``, so that a page
shows them at their natural size; fonts of 10 points) and, in a notebook, stores each figure as a
PNG that records the size of its smallest text in pixels (``TEXT_KEY``). The rendered-book test
reads that record and the width the page gives the image, and checks that every figure's text is
at least 9 px as displayed.
"""

import base64
import io
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from matplotlib.text import Text
from torch import nn


DPI = 100
COLUMN_INCHES = 7.7  # the text column is 785 px wide at a 1280 px window and 775 px at 1024 px
TEXT_KEY = "Smallest text (px)"  # a PNG text chunk: the smallest font size, in pixels at its dpi
STYLE = {
    "figure.dpi": DPI, "savefig.dpi": DPI, "figure.figsize": (COLUMN_INCHES, 3.6),
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 10,
    "ytick.labelsize": 10, "legend.fontsize": 10, "figure.titlesize": 11,
}


def smallest_text_px(fig: Figure) -> float:
    """The smallest font size of the figure's drawn text (titles, labels, ticks, legends, notes), in
    pixels of the image saved at the figure's dpi (its tight bounding box holds all of that text);
    infinity for a figure without text."""
    fig.canvas.draw()  # tick labels exist only once the figure has been drawn
    renderer = fig.canvas.get_renderer()
    sizes = [text.get_fontsize() for text in fig.findobj(Text)
             if text.get_visible() and text.get_text().strip()
             and text.get_window_extent(renderer).width > 0]
    return min(sizes) * fig.dpi / 72 if sizes else float("inf")


def png_bytes(fig: Figure) -> bytes:
    """The figure as a notebook shows it (tight bounding box), ``TEXT_KEY`` in its metadata."""
    smallest = smallest_text_px(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight",
                facecolor=fig.get_facecolor(), metadata={TEXT_KEY: f"{smallest:.2f}"})
    return buffer.getvalue()


class BookStyle:
    """The book's figure style, set when it is made and undone by ``restore()`` or at the end of a
    ``with`` block: matplotlib's defaults (``STYLE``) and, in IPython, ``png_bytes`` as the PNG
    formatter of figures. A chapter calls ``book_style()`` once and keeps the style for its
    kernel; ``with book_style(): ...`` keeps it to a block."""

    def __init__(self):
        # every default as it is now, as matplotlib.rc_context keeps them (the backend stays)
        self.saved = {k: v for k, v in matplotlib.rcParams.copy().items() if k != "backend"}
        matplotlib.rcParams.update(STYLE)
        self.formatter, self.previous = None, None
        try:
            from IPython import get_ipython
        except ImportError:
            return
        shell = get_ipython()
        if shell is None:
            return
        import matplotlib.pyplot as plt

        # loads the inline backend now, which registers its PNG formatter (ours replaces it) and
        # its rc
        plt.close(plt.figure())
        matplotlib.rcParams.update(STYLE)
        self.formatter = shell.display_formatter.formatters["image/png"]
        self.previous = self.formatter.for_type(
            Figure,
            lambda fig: base64.b64encode(png_bytes(fig)).decode("ascii") if fig.axes else None)

    def restore(self) -> None:
        """matplotlib's defaults and IPython's PNG formatter as they were before."""
        if self.formatter is not None:
            if self.previous is None:
                self.formatter.type_printers.pop(Figure, None)
            else:
                self.formatter.for_type(Figure, self.previous)
            self.formatter = None
        if self.saved is not None:
            dict.update(matplotlib.rcParams, self.saved)
            self.saved = None

    def __enter__(self) -> "BookStyle":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def _ipython_display_(self) -> None:
        """Nothing to show: a chapter's first cell ends with ``book_style()``."""


def book_style() -> BookStyle:
    """The book's defaults for figures (``BookStyle``), until ``restore()`` or a ``with`` block's
    end."""
    return BookStyle()


def box(ax, x, y, width, height, text, color="white", fontsize=10, **text_style):
    """A rounded box with centred text, in data coordinates (the book's diagrams)."""
    ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor="black", linewidth=1))
    ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=fontsize,
            **text_style)


def arrow(ax, start, end, **style):
    """An arrow from ``start`` to ``end`` in data coordinates."""
    style = {"arrowstyle": "-|>", "mutation_scale": 12, "linewidth": 1.2} | style
    ax.add_patch(FancyArrowPatch(start, end, **style))


def class_legend(target, names, palette, **options):
    """A legend of colour swatches, one per class, on an Axes or a Figure; ``palette``: RGB."""
    handles = [Patch(color=np.array(colour) / 255, label=name)
               for name, colour in zip(names, palette)]
    options = {"frameon": False} | options
    return target.legend(handles=handles, **options)


def plot_curves(out_dir: str | Path):
    """Training loss and validation mIoU against iterations, from the run's
    logs; saved as curves.png."""
    import matplotlib.pyplot as plt

    from .runs import read_jsonl  # here: a chapter that imports book_style reads no dataset code

    out_dir = Path(out_dir)
    log, val = read_jsonl(out_dir / "train_log.jsonl"), read_jsonl(out_dir / "metrics.jsonl")
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot([r["iter"] for r in log], [r["loss"] for r in log])
    ax_loss.set(xlabel="iteration", ylabel="training loss (cross-entropy)", title="loss")
    ax_miou.plot([r["iter"] for r in val], [100 * r["miou"] for r in val], marker="o")
    ax_miou.set(xlabel="iteration", ylabel="validation mIoU (%)", title="mIoU")
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=100)
    plt.close(fig)
    return fig


def save_prediction_grid(model: nn.Module, dataset, dataset_name: str, path: Path, count: int = 3):
    """Rows of image | ground truth | prediction for the first ``count`` images,
    in the dataset's palette."""
    import matplotlib.pyplot as plt

    from . import palette as palettes
    from .datasets import palette_of
    from .inference import predict_labels
    from .transforms import denormalize

    colours = palette_of(dataset, dataset_name)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    fig, axes = plt.subplots(count, 3, figsize=(10, 2.6 * count), squeeze=False)
    for row, index in enumerate(range(min(count, len(dataset)))):
        image, label = dataset[index]
        prediction = predict_labels(model, image[None].to(device), label.shape[-2:])[0].cpu()
        panels = (denormalize(image), palettes.colorize(label, colours),
                  palettes.colorize(prediction, colours))
        for ax, panel, title in zip(axes[row], panels, ("image", "ground truth", "prediction")):
            ax.imshow(panel)
            ax.set_title(title)
            ax.axis("off")
    model.train(was_training)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return fig
