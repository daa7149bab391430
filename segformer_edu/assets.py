"""Files the book's chapters read: a CamVid frame, the CamVid models trained on a CPU (SegFormer-B0
in chapters 1, 3, 5, 6, 7, 8, 10, 11; the CNN it is compared with in chapter 11) and the stored
measurements in ``book/results`` (chapters 8-11).

Inside a checkout the chapters run from ``book/`` and find them there. On Colab a chapter arrives
alone, so each file is downloaded once from the book's repository into
``~/.cache/segformer_edu/book``.
"""

from pathlib import Path

from . import cli
from .data import cache_dir, download

REPOSITORY_FILES = "https://raw.githubusercontent.com/segformer-edu/segformer-edu/main/"
# a training frame of CamVid's sequence 0001TP, and its label
FRAME = "assets/camvid_0001TP_006690.jpg"
FRAME_LABEL = "assets/camvid_0001TP_006690_label.png"
TRAINED_CAMVID = "results/camvid_b0_cpu"  # SegFormer-B0 trained from scratch on CamVid (chapter 8)
# DeepLabV3+ / MobileNetV2 trained the same way for the same time (chapter 11)
TRAINED_CAMVID_CNN = "results/camvid_cnn_cpu"
OFFLINE = ("without a network, run the chapter from the book/ folder of a checkout of the book's "
           "repository, where the file is")


def book_file(relative: str, book_dir: str | Path = ".") -> Path:
    """``book/<relative>``: the copy in ``book_dir`` (a chapter's working directory) if there is
    one, else a copy downloaded once from the repository."""
    local = Path(book_dir) / relative
    if local.exists():
        return local
    cached = cache_dir() / "book" / relative
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            download(REPOSITORY_FILES + "book/" + relative, cached, offline_hint=OFFLINE)
        except ConnectionError as error:
            raise cli.DownloadError(f"book/{relative} is neither in {Path(book_dir).resolve()} "
                                       f"nor in {cached} and cannot be fetched "
                                       f"({cli.one_line(error)})") from None
    return cached


def result_file(name: str, book_dir: str | Path = ".") -> Path:
    """``book/results/<name>``, a stored measurement or run (chapters 8-11), found or fetched as
    ``book_file``."""
    return book_file(f"results/{name}", book_dir)


def stored_model_folder(relative: str, book_dir: str | Path = ".") -> Path:
    """The folder ``book/<relative>`` with the two files ``save_pretrained`` writes, found or
    fetched as ``book_file``."""
    files = [book_file(f"{relative}/{name}", book_dir)
             for name in ("config.json", "model.safetensors")]
    return files[0].parent


def trained_camvid_model(book_dir: str | Path = "."):
    """The CamVid model of chapter 8 (11 classes, eval mode), from the book's folder or the
    repository."""
    from .model import SegFormer

    return SegFormer.from_pretrained(stored_model_folder(TRAINED_CAMVID, book_dir))


def trained_camvid_cnn(book_dir: str | Path = "."):
    """The CNN of chapter 11, DeepLabV3+ / MobileNetV2 trained on CamVid as chapter 8's model
    (11 classes, eval mode), from the book's folder or the repository."""
    from .cnn import DeepLabV3Plus

    return DeepLabV3Plus.from_pretrained(stored_model_folder(TRAINED_CAMVID_CNN, book_dir))


def segment_frame(model, frame, scale: tuple[int, int] | None = (240, 180)):
    """Class indices (H, W) for an RGB frame (H, W, 3) uint8, the way the CamVid run was tested: the
    frame resized to ``scale`` (long, short side; EvalTransform aligns it to multiples of 32), the
    logits resized back."""
    import numpy as np

    from .inference import predict_labels
    from .transforms import EvalTransform

    frame = np.asarray(frame)
    images, _ = EvalTransform(scale=scale)(frame, np.zeros(frame.shape[:2], np.uint8))  # (3, h, w)
    return predict_labels(model, images[None], frame.shape[:2])[0].numpy()
