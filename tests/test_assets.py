"""The book's files: found beside the chapters, else fetched once from the repository (here a file:// copy)."""

import json
import re
from pathlib import Path

from segformer_edu import assets, data

BOOK = Path(__file__).resolve().parents[1] / "book"


def test_a_file_beside_the_chapters_is_used_as_it_is():
    assert assets.book_file(assets.FRAME, BOOK) == BOOK / assets.FRAME


def test_a_missing_file_is_fetched_once_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(assets, "REPOSITORY_FILES", BOOK.parent.as_uri() + "/")
    fetched = assets.book_file(assets.FRAME, tmp_path / "a_lone_chapter")
    assert fetched == tmp_path / "cache" / "book" / assets.FRAME
    assert fetched.read_bytes() == (BOOK / assets.FRAME).read_bytes()
    monkeypatch.setattr(data, "urlopen", None)  # a second call must not download again
    assert assets.book_file(assets.FRAME, tmp_path / "a_lone_chapter") == fetched


def test_segment_frame_is_the_evaluation_protocol():
    import numpy as np
    import torch
    import torch.nn.functional as F

    from segformer_edu import SegFormer
    from segformer_edu.transforms import EvalTransform

    torch.manual_seed(0)
    model = SegFormer.from_config("b0", num_classes=5).eval()
    frame = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    labels = assets.segment_frame(model, frame, scale=(60, 45))
    images, _ = EvalTransform(scale=(60, 45))(frame, np.zeros((90, 120), np.uint8))
    assert images.shape == (3, 64, 64)  # 60x45 aligned up to multiples of 32
    with torch.no_grad():
        expected = F.interpolate(model(images[None]), size=(90, 120), mode="bilinear").argmax(1)[0]
    assert labels.shape == (90, 120) and np.array_equal(labels, expected.numpy())


def test_a_stored_result_is_fetched_for_a_lone_chapter(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(assets, "REPOSITORY_FILES", BOOK.parent.as_uri() + "/")
    fetched = assets.result_file("camvid_b0_cpu/deployment.json", tmp_path / "a_lone_chapter")
    assert fetched.read_bytes() == (BOOK / "results/camvid_b0_cpu/deployment.json").read_bytes()


def test_chapters_read_the_books_files_through_the_package():
    """On Colab a chapter arrives without book/: a file it opens as Path("results/...") is not there."""
    opened = re.compile(r"""Path\(\s*["'](?:results|assets)/""")
    for chapter in sorted(BOOK.glob("*.ipynb")):
        code = "".join("".join(c["source"]) for c in json.loads(chapter.read_text())["cells"] if c["cell_type"] == "code")
        assert not opened.search(code), f"{chapter.name}: use assets.book_file or assets.result_file"


def test_a_lone_chapter_offline_gets_one_line_that_says_what_to_do(tmp_path, monkeypatch):
    import urllib.error

    def offline(request, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(data, "urlopen", offline)
    try:
        assets.book_file(assets.FRAME, tmp_path / "a_lone_chapter")
    except ConnectionError as error:
        shown = error._render_traceback_()  # what IPython prints instead of a traceback
    assert len(shown) == 1 and shown[0].startswith(f"DownloadError: book/{assets.FRAME} is neither in ")
    assert "run the chapter from the book/ folder of a checkout" in shown[0]
    assert "SEGFORMER_DATA" not in shown[0] and ".part" not in shown[0]


def test_the_stored_cnn_loads_in_eval_mode_with_camvids_classes():
    model = assets.trained_camvid_cnn(BOOK)
    assert not model.training and model.config.num_classes == len(data.CAMVID_CLASSES)
    config = json.loads((BOOK / assets.TRAINED_CAMVID_CNN / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(11)] == list(data.CAMVID_CLASSES)
