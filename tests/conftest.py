"""Shared fixtures: a tiny CamVid written by the tests, and the team's real CamVid beside the checkout."""

import inspect
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SPLITS = {"train": 6, "val": 3, "test": 2}


def write_sample(image_path: Path, label_path: Path, rng: np.random.Generator, size=(48, 64)) -> None:
    """A random RGB image and a label of horizontal bands of classes 0..10 with a void (11) block in a corner."""
    height, width = size
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(image_path)
    bands = rng.permutation(11)[:4]  # four classes, top to bottom
    label = np.repeat(bands, -(-height // 4))[:height, None].repeat(width, 1).astype(np.uint8)  # (H, W)
    label[:8, :8] = 11
    Image.fromarray(label).save(label_path)


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """A CamVid-layout folder (6 train, 3 val, 2 test samples, 64x48) with .jpg and .png images; its path."""
    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for split, count in SPLITS.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index in range(count):
            suffix = ".jpg" if index % 2 else ".png"  # pairing must not depend on the image format
            name = f"{split}_{index:03d}"
            write_sample(root / split / f"{name}{suffix}", root / f"{split}annot" / f"{name}.png", rng)
    return root


@pytest.fixture
def camvid_root() -> Path:
    """The team's real CamVid at <repo>/../shared/data/camvid; the test is skipped where it is absent."""
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
    if not root.is_dir():
        pytest.skip(f"no CamVid at {root}")
    return root


# The tiers (`make test-fast` runs `-m "not slow and not book"`; `make test` runs everything): files that train,
# read the real CamVid or spawn processes are slow; files that check the chapters, the rendered book or the install
# are book. A test marked in its own file keeps its mark.
SLOW = {"test_train.py", "test_run_folder.py", "test_train_cnn.py", "test_train_levers.py", "test_trained_model.py",
        "test_folder_dataset.py", "test_robustness.py", "test_cpu_runs.py", "test_export.py"}
BOOK = {"test_rendered_book.py", "test_exercises.py", "test_colab_path.py", "test_install.py",
        "test_repository_url.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        if name.endswith(".ipynb") or name in BOOK:
            item.add_marker(pytest.mark.book)
        if name in SLOW:
            item.add_marker(pytest.mark.slow)
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function is not None else ""
        except (OSError, TypeError):
            source = ""
        if any(call in source for call in (".main(", "main([", "main(argv", "subprocess.", "run_cli(")):
            item.add_marker(pytest.mark.cli)
