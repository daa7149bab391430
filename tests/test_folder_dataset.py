"""Your own dataset (book chapter 8): a folder of images and masks, its checks, training on it, predicting a folder."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segformer_edu import SegFormer, data, datasets, folder_dataset, inference, predict, train as trainer
from segformer_edu.checkpoint import save_pretrained
from segformer_edu.convert import from_edu
from segformer_edu.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
NAMES = ["road", "vehicle", "person", "other"]
PALETTE = [(128, 64, 128), (0, 0, 142), (220, 20, 60), (70, 70, 70)]
IGNORE_COLOUR = (0, 0, 0)
SPLITS = {"train": 4, "val": 2, "test": 2}


def quadrants(size: int = 64) -> np.ndarray:
    """Class indices (size, size): classes 0..3 in the four quadrants, an ignored (255) 8x8 block in a corner."""
    half = size // 2
    label = np.zeros((size, size), np.uint8)
    label[:half, half:], label[half:, :half], label[half:, half:] = 1, 2, 3
    label[:8, :8] = data.IGNORE_INDEX
    return label


def write_dataset(root: Path, colour_masks: bool = False, classes: dict | list | None = None, size: int = 64) -> Path:
    """A folder dataset at ``root``: each image shows its label's class colours plus noise (learnable in a few
    steps), masks as indices or, with ``colour_masks``, as RGB; ``classes`` goes to classes.json."""
    rng = np.random.default_rng(0)
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(PALETTE)], lut[data.IGNORE_INDEX] = PALETTE, IGNORE_COLOUR
    for split, count in SPLITS.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for index in range(count):
            label = np.rot90(quadrants(size), index).copy()
            noise = rng.integers(-20, 21, (size, size, 3))
            image = np.clip(lut[label].astype(int) + noise, 0, 255).astype(np.uint8)
            suffix = ".jpg" if index % 2 else ".png"
            Image.fromarray(image).save(root / split / "images" / f"{split}_{index}{suffix}")
            Image.fromarray(lut[label] if colour_masks else label).save(root / split / "masks" / f"{split}_{index}.png")
    spec = classes if classes is not None else {"names": NAMES, "palette": PALETTE, "ignore_colours": [IGNORE_COLOUR]}
    (root / "classes.json").write_text(json.dumps(spec))
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """check_labels' manifests go to the test's own folder."""
    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "cache")


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    return write_dataset(tmp_path / "mine")


def run_cli(*args, timeout=300):
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(done, *fragments):
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


# ----------------------------------------------------------------------------- reading masks

def test_index_masks_and_classes_json(dataset_root):
    train = folder_dataset.folder(dataset_root, "train")
    assert len(train) == 4 and train.names == NAMES and train.palette == PALETTE
    assert np.array_equal(train.load_label(0), quadrants())
    image, label = train[1]
    assert image.shape == (3, 64, 64) and label.dtype == torch.int64


def test_colour_masks_are_mapped_through_the_palette(tmp_path):
    root = write_dataset(tmp_path / "colour", colour_masks=True)
    masks = folder_dataset.folder(root, "train")
    assert Image.open(masks.label_paths[0]).mode == "RGB"
    for index in range(len(masks)):
        assert np.array_equal(masks.load_label(index), np.rot90(quadrants(), index))  # classes and ignore colour


def test_reduce_zero_label_ignores_zero_and_shifts_the_classes(tmp_path):
    root = write_dataset(tmp_path / "ade_style", classes=NAMES)
    for path in sorted((root / "train" / "masks").iterdir()):  # store ADE20K-style: 0 = other, class k as k + 1
        label = np.array(Image.open(path))
        Image.fromarray(np.where(label == 255, 0, label + 1).astype(np.uint8)).save(path)
    reduced = folder_dataset.folder(root, "train", reduce_zero_label=True).load_label(0)
    assert np.array_equal(reduced, quadrants())
    with pytest.raises(ValueError, match=r"holds values \[4\]"):  # without the option, value 4 is no class of 4
        folder_dataset.folder(root, "train").load_label(0)
    assert folder_dataset.folder(root, "train", class_names=[*NAMES, "fifth"]).load_label(0).max() == 4


def test_another_ignore_value_becomes_255(tmp_path):
    root = write_dataset(tmp_path / "ignore7", classes=NAMES)
    path = root / "train" / "masks" / "train_0.png"
    label = np.array(Image.open(path))
    Image.fromarray(np.where(label == 255, 7, label).astype(np.uint8)).save(path)
    assert np.array_equal(folder_dataset.folder(root, "train", ignore_index=7).load_label(0), quadrants())
    with pytest.raises(ValueError, match=r"train_0\.png holds values \[7\]"):
        folder_dataset.folder(root, "train").load_label(0)
    with pytest.raises(ValueError, match="ignore value 2 is one of the classes"):
        folder_dataset.folder(root, "train", ignore_index=2)


def test_classes_from_flags_and_disagreements(tmp_path):
    root = write_dataset(tmp_path / "flags")
    (root / "classes.json").unlink()
    assert folder_dataset.folder(root, "train", num_classes=4).names == ["class_0", "class_1", "class_2", "class_3"]
    assert folder_dataset.folder(root, "train", class_names=["a", "b", "c", "d"]).names == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="no classes for .*classes.json.*--num-classes"):
        folder_dataset.folder(root, "train")
    with pytest.raises(ValueError, match="--num-classes 3 but 4 class names"):
        folder_dataset.folder(root, "train", num_classes=3, class_names=["a", "b", "c", "d"])
    (root / "classes.json").write_text(json.dumps({"names": NAMES, "palette": PALETTE[:2]}))
    with pytest.raises(ValueError, match="palette has 2 entries for 4 classes"):
        folder_dataset.folder(root, "train")
    # --class-names replaces the file's names: its palette of another length is set aside, with a warning
    (root / "classes.json").write_text(json.dumps({"names": NAMES[:3], "palette": PALETTE[:3]}))
    with pytest.warns(UserWarning, match="palette \\(3 colours\\) is not used: --class-names gives 4"):
        flagged = folder_dataset.folder(root, "train", class_names=["a", "b", "c", "d"])
    labels = flagged[0][1]
    assert flagged.names == ["a", "b", "c", "d"] and set(labels.unique().tolist()) <= {0, 1, 2, 3, 255}


# ----------------------------------------------------------------------------- bad data, found before training

def size_mismatch(root):
    path = root / "train" / "masks" / "train_1.png"
    Image.fromarray(quadrants(48)).save(path)
    return "train_1.png", "is 64x64 but its label"


def value_outside_classes(root):
    path = root / "train" / "masks" / "train_2.png"
    label = quadrants()
    label[40, 40] = 9
    Image.fromarray(label).save(path)
    return "train_2.png", "holds values [9] outside the classes 0..3"


def colour_missing_from_palette(root):
    path = root / "train" / "masks" / "train_3.png"
    mask = np.array(Image.open(path).convert("RGB"))
    mask[10, 40] = (1, 2, 3)
    Image.fromarray(mask).save(path)
    return "train_3.png", "colours missing from the palette (first: (1, 2, 3))"


def image_without_mask(root):
    (root / "train" / "masks" / "train_1.png").unlink()
    return "train_1.jpg", "has no mask"


def mask_without_image(root):
    (root / "val" / "images" / "val_0.png").unlink()
    return "val_0.png", "has no image"


BAD_DATA = [size_mismatch, value_outside_classes, colour_missing_from_palette, image_without_mask, mask_without_image]


@pytest.mark.parametrize("spoil", BAD_DATA, ids=[f.__name__ for f in BAD_DATA])
def test_bad_data_is_one_line_naming_the_file(tmp_path, spoil):
    root = write_dataset(tmp_path / "bad", colour_masks=spoil is colour_missing_from_palette)
    name, message = spoil(root)
    with pytest.raises(ValueError) as raised:  # the label scan finds it without decoding images
        for split in ("train", "val"):
            folder_dataset.folder(root, split).check_labels()
    assert name in str(raised.value) and message in str(raised.value)
    done = run_cli("-m", "segformer_edu.train", "--dataset", "folder", "--data-root", str(root), "--out-dir",
                   str(tmp_path / "run"), "--max-iters", "2", "--no-progress")
    assert_one_line_error(done, name, message)
    assert not (tmp_path / "run" / "latest.pt").exists()


def test_report_shares_and_a_warning_for_a_class_never_seen(dataset_root):
    train = folder_dataset.folder(dataset_root, "train")
    counts = train.check_labels()
    assert counts.sum() == 4 * 64 * 64 and counts[-1] == 4 * 64
    assert np.array_equal(counts, train.preload().pixel_counts())  # from the frames in memory, the same counts
    report, warnings = datasets.data_report({"train": (4, counts), "val": (2, None)}, NAMES)
    assert report.startswith("data: train 4 images, val 2 images") and "ignore 1.6%" in report
    assert "road 23.4%" in report and warnings == []
    counts[1] = 0
    assert datasets.data_report({"train": (4, counts)}, NAMES)[1] == [
        "warning: class 1 (vehicle) never appears in the training masks"]


# ----------------------------------------------------------------------------- pretrained weights, new head

def test_pretrained_folder_gets_a_new_head_for_the_dataset_classes(tmp_path):
    torch.manual_seed(0)
    released = SegFormer.from_config("b0", num_classes=19)
    save_pretrained(released, tmp_path / "hf")
    model = trainer.build_model(TrainConfig(pretrained=str(tmp_path / "hf")), num_classes=4)
    assert model.config.num_classes == 4
    assert torch.equal(model.encoder.stages[3].norm.weight, released.encoder.stages[3].norm.weight)
    assert torch.equal(model.decoder.fuse[0].weight, released.decoder.fuse[0].weight)


def test_predict_loads_a_hugging_face_folder(tmp_path):
    save_pretrained(SegFormer.from_config("b0", num_classes=3), tmp_path / "hf", class_names=["a", "b", "c"])
    model, info = predict.load_model(str(tmp_path / "hf"), torch.device("cpu"))
    assert not model.training and info["names"] == ["a", "b", "c"] and len(info["palette"]) == 3  # config.json's


# ----------------------------------------------------------------------------- the two commands, end to end

def test_train_evaluate_predict_through_the_command_line(tmp_path, dataset_root):
    released = tmp_path / "released.pth"  # an official-style .pth (mmseg keys) with 19 classes
    torch.save({"state_dict": from_edu(SegFormer.from_config("b0", num_classes=19).state_dict(), "mmseg")}, released)
    run = tmp_path / "run"
    done = run_cli("-m", "segformer_edu.train", "--dataset", "folder", "--data-root", str(dataset_root),
                   "--pretrained", str(released), "--out-dir", str(run), "--crop-size", "64", "64",
                   "--scale", "64", "64", "--batch-size", "2", "--max-iters", "4", "--warmup-iters", "1",
                   "--val-interval", "2", "--log-interval", "1", "--test", "--no-progress")  # default workers
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data: train 4 images, val 2 images, test 2 images" in done.stdout
    assert "ignore 1.6%; by class:" in done.stdout and "road 23.4%" in done.stdout
    assert "test mIoU" in done.stdout and "IoU per class (%): road " in done.stdout
    tested = json.loads((run / "test_metrics.json").read_text())
    assert tested["classes"] == NAMES and len(tested["iou"]) == 4
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["classes"] == NAMES and [tuple(c) for c in best["palette"]] == PALETTE

    out = tmp_path / "predicted"
    done = run_cli("-m", "segformer_edu.predict", "--model", str(run), "--images",
                   str(dataset_root / "test" / "images"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "predicting" in done.stderr  # the progress bar
    assert "2 images" in done.stdout and "road, vehicle, person, other" in done.stdout
    for stem in ("test_0", "test_1"):
        mask = Image.open(out / "masks" / f"{stem}.png")
        assert mask.mode == "P" and mask.size == (64, 64)
        assert np.array(mask).max() < 4  # class indices
        assert Image.open(out / "overlays" / f"{stem}.jpg").size == (64, 64)


@pytest.mark.parametrize("problem", ["missing checkpoint", "empty folder", "unwritable output"])
def test_predict_errors_are_one_line(tmp_path, dataset_root, problem):
    model, images, out = tmp_path / "no_run", dataset_root / "test" / "images", tmp_path / "out"
    model.mkdir()
    expected = f"no model in {model}"
    if problem == "empty folder":
        images, expected = tmp_path / "empty", f"no images ({', '.join(data.IMAGE_SUFFIXES)}) in {tmp_path / 'empty'}"
        images.mkdir()
    if problem == "unwritable output":
        (tmp_path / "a_file").write_text("")
        out, expected = tmp_path / "a_file" / "out", f"cannot write to {tmp_path / 'a_file' / 'out'}"
    done = run_cli("-m", "segformer_edu.predict", "--model", str(model), "--images", str(images), "--out", str(out))
    assert_one_line_error(done, expected)


def test_class_flags_parse_and_belong_to_folder_datasets_only(tiny_dataset):
    cfg = trainer.parse_args(["--dataset", "folder", "--class-names", "road", "sky", "--ignore-index", "0"])
    assert cfg.class_names == ("road", "sky") and cfg.ignore_index == 0 and cfg.num_classes is None
    with pytest.raises(ValueError, match="--class-names applies to --dataset folder only"):
        trainer.build_split(TrainConfig(dataset="camvid", data_root=str(tiny_dataset), class_names=("a",)), "train")


# ----------------------------------------------------------------------------- predict as a user meets it

@pytest.fixture
def hf_model(tmp_path) -> Path:
    torch.manual_seed(0)
    save_pretrained(SegFormer.from_config("b0", num_classes=4), tmp_path / "hf", class_names=NAMES)
    return tmp_path / "hf"


def photo(path: Path, size=(48, 64), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_takes_one_image_and_keeps_inputs_of_one_stem_apart(tmp_path, hf_model, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "a.jpg", seed=1), photo(photos / "a.png", seed=2), photo(photos / "b.png", seed=3)
    assert predict.main(["--model", str(hf_model), "--images", str(photos / "b.png"), "--out",
                         str(tmp_path / "one"), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "one" / "masks").iterdir()) == ["b.png"]
    assert predict.main(["--model", str(hf_model), "--images", str(photos), "--out", str(tmp_path / "all"),
                         "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "all" / "masks").iterdir()) == ["a.jpg.png", "a.png.png", "b.png"]
    assert "3 images:" in capsys.readouterr().out


def test_predict_skips_and_names_images_it_cannot_segment(tmp_path, hf_model, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "good.png")
    (photos / "broken.jpg").write_bytes(photo(tmp_path / "x.jpg").read_bytes()[:100])
    photo(photos / "tiny.png", size=(20, 20))
    out = tmp_path / "out"
    assert predict.main(["--model", str(hf_model), "--images", str(photos), "--out", str(out),
                         "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"skipped {photos / 'broken.jpg'}: corrupt or unreadable image")
    assert err[1].startswith(f"skipped {photos / 'tiny.png'}: images must be at least 29x29 pixels")
    assert err[2].startswith("1 of 3 images segmented") and err[2].endswith("skipped 2 (said above): "
                                                                            "broken.jpg, tiny.png")
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["good.png"]


def test_predict_never_replaces_an_output_unless_told(tmp_path, hf_model, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "a.png")
    argv = ["--model", str(hf_model), "--images", str(photos), "--out", str(tmp_path / "out"), "--no-progress"]
    assert predict.main(argv) == 0
    mask = tmp_path / "out" / "masks" / "a.png"
    mask.write_bytes(b"my edits")
    assert predict.main(argv) == 1
    assert f"error: {mask} exists (2 outputs would be replaced): pass another --out, or --overwrite" in \
        capsys.readouterr().err
    assert mask.read_bytes() == b"my edits"
    assert predict.main(argv + ["--overwrite"]) == 0 and mask.read_bytes() != b"my edits"


def test_ctrl_c_in_predict_is_one_line_and_exit_130(tmp_path, hf_model, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        photo(photos / f"{k}.png", seed=k)
    segment, calls = predict.segment_image, []

    def segment_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return segment(*args, **kwargs)

    monkeypatch.setattr(predict, "segment_image", segment_then_ctrl_c)
    out = tmp_path / "out"
    assert predict.main(["--model", str(hf_model), "--images", str(photos), "--out", str(out),
                         "--no-progress"]) == 130
    assert capsys.readouterr().err == f"interrupted: the 1 masks written are in {out}\n"


def test_preprocess_takes_a_pil_image_or_an_array_as_predict_does(hf_model):
    model = SegFormer.from_pretrained(hf_model)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    from_pil, from_array = predict.preprocess(image, (60, 45)), predict.preprocess(np.asarray(image), (60, 45))
    assert from_pil.shape == (1, 3, 64, 64) and torch.equal(from_pil, from_array)  # 60x45 aligned up to 32
    with torch.no_grad():
        assert np.array_equal(predict.segment_image(model, image, (60, 45)),
                              torch.nn.functional.interpolate(model(from_pil), size=(90, 120),
                                                              mode="bilinear").argmax(1)[0].numpy())
    with pytest.raises(ValueError, match="at least 29x29"):
        predict.preprocess(np.zeros((20, 40, 3), np.uint8), config=model.config)
    with pytest.raises(ValueError, match=r"expected an RGB image \(H, W, 3\) uint8"):
        predict.preprocess(np.zeros((20, 40), np.uint8))
    from segformer_edu import preprocess

    assert preprocess is predict.preprocess


def test_classes_json_with_another_key_says_what_it_holds(tmp_path):
    root = write_dataset(tmp_path / "keyed", classes={"classes": NAMES})
    with pytest.raises(ValueError, match=r"classes\.json holds 'classes' but no \"names\": expected "
                                         r"\{\"names\": \[\.\.\.\]"):
        folder_dataset.folder(root, "train")


def test_predict_reads_images_as_displayed_sixteen_bit_and_phone_photos(tmp_path, hf_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    gray8 = np.random.default_rng(0).integers(0, 256, (48, 64), dtype=np.uint8)
    Image.fromarray(gray8).save(photos / "eight.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(photos / "sixteen.png")
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(np.stack([gray8] * 3, -1))))  # 64 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # display turned 90 degrees clockwise: 48 tall, 64 wide
    stored.save(photos / "phone.jpg", exif=exif)
    assert predict.main(["--model", str(hf_model), "--images", str(photos), "--out", str(tmp_path / "out"),
                         "--no-progress"]) == 0
    masks = {name: np.array(Image.open(tmp_path / "out" / "masks" / f"{name}.png"))
             for name in ("eight", "sixteen", "phone")}
    assert np.array_equal(masks["eight"], masks["sixteen"])  # was 20 % of the pixels alike
    assert masks["phone"].shape == (48, 64)
    assert Image.open(tmp_path / "out" / "overlays" / "phone.jpg").size == (64, 48)
    model = SegFormer.from_pretrained(hf_model)
    sixteen = Image.open(photos / "sixteen.png")
    assert torch.equal(predict.preprocess(sixteen), predict.preprocess(Image.fromarray(gray8)))
    assert np.array_equal(predict.segment_image(model, sixteen), masks["eight"])


BAD_CLASSES = [
    ({"names": NAMES, "palette": [[128, 64, 300], *PALETTE[1:]]}, "palette: entry 0 is [128, 64, 300]; each colour "
                                                                  "is [r, g, b], three whole numbers 0..255"),
    ({"names": NAMES, "palette": [[128, 64], *PALETTE[1:]]}, "palette: entry 0 is [128, 64]; each colour is [r, g, b]"),
    ({"names": NAMES, "palette": [[1.5, 2, 3], *PALETTE[1:]]}, "entry 0 is [1.5, 2, 3]"),
    ({"names": NAMES, "palette": [PALETTE[0], PALETTE[0], *PALETTE[2:]]}, "palette lists [128, 64, 128] twice: give "
                                                                          "each class its own colour"),
    ({"names": ["Road", "car", "Road", "sky"]}, "\"names\" lists 'Road' twice: give each class its own name"),
    ({"names": NAMES, "palette": PALETTE, "ignore_colours": [[0, 0, -1]]}, "ignore_colours: entry 0 is [0, 0, -1]"),
    ({"names": NAMES, "palette": PALETTE, "ignore_colours": [PALETTE[3]]}, "colour [70, 70, 70] is both a class's"),
]


@pytest.mark.parametrize("classes, message", BAD_CLASSES)
def test_class_definitions_are_checked_before_the_first_step(tmp_path, classes, message):
    root = write_dataset(tmp_path / "bad", classes=classes)
    with pytest.raises(ValueError, match="classes.json") as raised:
        folder_dataset.folder(root, "train")
    assert message in str(raised.value)


def test_a_palette_value_of_300_and_twice_named_classes_are_one_line_before_training(tmp_path):
    root = write_dataset(tmp_path / "bad", classes={"names": NAMES, "palette": [[128, 64, 300], *PALETTE[1:]]})
    done = run_cli("-m", "segformer_edu.train", "--dataset", "folder", "--data-root", str(root), "--out-dir",
                   str(tmp_path / "run"), "--max-iters", "2", "--no-progress")
    assert_one_line_error(done, f"{root / 'classes.json'}'s palette: entry 0 is [128, 64, 300]")
    done = run_cli("-m", "segformer_edu.train", "--dataset", "folder", "--data-root", str(root), "--out-dir",
                   str(tmp_path / "run"), "--max-iters", "2", "--no-progress", "--class-names", "a", "b", "a", "c")
    assert_one_line_error(done, "--class-names lists 'a' twice: give each class its own name")
    assert not (tmp_path / "run" / "latest.pt").exists()


def test_predict_draws_a_stored_palette_it_cannot_draw_with_default_colours(tmp_path, hf_model, capsys):
    state = {"model": SegFormer.from_pretrained(hf_model).state_dict(), "config": {"dataset": "folder"},
             "classes": NAMES, "palette": [[128, 64, 300], *PALETTE[1:]]}
    torch.save(state, tmp_path / "old.pt")  # as a run written before palettes were checked
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "a.png")
    assert predict.main(["--model", str(tmp_path / "old.pt"), "--images", str(photos), "--out",
                         str(tmp_path / "out"), "--no-progress"]) == 0
    assert "palette: entry 0 is [128, 64, 300]" in capsys.readouterr().err


def test_predict_takes_webp_bmp_and_tiff_and_names_the_files_it_leaves_out(tmp_path, hf_model, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for suffix in (".webp", ".bmp", ".tif", ".png"):
        photo(photos / f"frame{suffix}")
    (photos / "notes.txt").write_text("not an image")
    assert predict.main(["--model", str(hf_model), "--images", str(photos), "--out", str(tmp_path / "out"),
                         "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == [
        "frame.bmp.png", "frame.png.png", "frame.tif.png", "frame.webp.png"]
    captured = capsys.readouterr()
    assert "4 images:" in captured.out
    assert "note: 1 files in" in captured.err and "are left out: notes.txt" in captured.err


def test_masks_saved_as_jpeg_are_named_with_why_they_are_not_used(tmp_path):
    root = write_dataset(tmp_path / "jpeg")
    for mask in (root / "train" / "masks").iterdir():
        Image.open(mask).save(mask.with_suffix(".jpg"))
        mask.unlink()
    (root / "train" / "images" / "train_0.png").rename(root / "train" / "images" / "train_0.webp")
    with pytest.raises(ValueError) as raised:
        folder_dataset.folder(root, "train")
    assert str(raised.value).startswith(f"{root / 'train' / 'masks'} holds 4 masks saved as JPEG (first: "
                                        "train_0.jpg), which are not used: lossy compression changes")
    assert "has no mask" not in str(raised.value)
    for mask in (root / "train" / "masks").iterdir():
        Image.open(mask).save(mask.with_suffix(".png"))
        mask.unlink()
    assert folder_dataset.folder(root, "train").image_paths[0].name == "train_0.webp"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable GPU")
@pytest.mark.parametrize("device, message", [
    ("cuda", "--device cuda: this torch ("), ("cuda:1", "--device cuda:1: this torch ("),
    ("mps", "--device mps: this torch ("), ("gpu", "--device gpu: not a device")])
def test_a_device_this_torch_cannot_use_is_one_line_before_anything_is_written(tmp_path, hf_model, device,
                                                                               message):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "a.png")
    out = tmp_path / "new" / "out"
    done = run_cli("-m", "segformer_edu.predict", "--model", str(hf_model), "--images", str(photos), "--out",
                   str(out), "--device", device)
    assert_one_line_error(done, message)
    assert "pass --device cpu" in done.stderr or device == "gpu"
    assert not (tmp_path / "new").exists()


def test_a_failed_predict_leaves_no_empty_folders(tmp_path, hf_model, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "new" / "out"
    assert predict.main(["--model", str(tmp_path / "no_model"), "--images", str(photos), "--out", str(out)]) == 1
    assert not (tmp_path / "new").exists()
    assert predict.main(["--model", str(hf_model), "--images", str(photos), "--out", str(out),
                         "--no-progress"]) == 1  # every image skipped
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    assert predict.main(["--model", str(tmp_path / "no_model"), "--images", str(photos), "--out",
                         str(tmp_path / "kept")]) == 1
    assert (tmp_path / "kept").is_dir()  # a folder that was there stays


# ----------------------------------------------------------------------------- predict within memory

@pytest.mark.parametrize("chunk_bytes", [1 << 28, 4 * 40 * 30])  # all classes at once; one class at a time
def test_the_mask_is_the_argmax_of_the_upsampled_logits_a_few_classes_at_a_time(monkeypatch, chunk_bytes):
    logits = torch.randn(1, 7, 10, 8)
    logits[:, 3] = logits[:, 5]  # a tie everywhere between classes 3 and 5: the lower wins, as in argmax
    monkeypatch.setattr(inference, "SCORE_CHUNK_BYTES", chunk_bytes)
    expected = torch.nn.functional.interpolate(logits, size=(40, 30), mode="bilinear").argmax(1)
    assert torch.equal(inference.upsampled_argmax(logits, (40, 30)), expected)


def seen_sizes(monkeypatch) -> list:
    """The (height, width) of every input the model runs on, as predict calls it."""
    sizes, forward = [], SegFormer.forward

    def recording(self, images):
        sizes.append(tuple(images.shape[2:]))
        return forward(self, images)

    monkeypatch.setattr(SegFormer, "forward", recording)
    return sizes


def test_predict_segments_a_large_photo_at_the_models_own_scale_and_upsamples_the_mask(tmp_path, hf_model,
                                                                                      monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "large.jpg", size=(1200, 1600)), photo(photos / "small.png", size=(48, 64))
    sizes = seen_sizes(monkeypatch)
    assert predict.main(["--model", str(hf_model), "--images", str(photos), "--out", str(tmp_path / "out"),
                         "--no-progress"]) == 0
    # no scale recorded in a Hugging Face folder: the paper's 2048x512, then sides up to multiples of 32;
    # an image within it keeps its own size
    assert sizes == [(512, 704), (48, 64)]
    assert Image.open(tmp_path / "out" / "masks" / "large.png").size == (1600, 1200)
    run = {"model": SegFormer.from_pretrained(hf_model).state_dict(), "classes": NAMES,
           "config": {"dataset": "folder", "val_scale": [80, 60], "scale": [2048, 512]}}
    torch.save(run, tmp_path / "best.pt")
    sizes.clear()
    assert predict.main(["--model", str(tmp_path / "best.pt"), "--images", str(photos), "--out",
                         str(tmp_path / "run_out"), "--no-progress"]) == 0
    assert sizes == [(64, 96), (64, 96)]  # the run's validation scale, 80x60 aligned up, as it validated
    sizes.clear()
    assert predict.main(["--model", str(hf_model), "--images", str(photos / "large.jpg"), "--out",
                         str(tmp_path / "chosen"), "--no-progress", "--scale", "320", "240"]) == 0
    assert sizes == [(256, 320)]


def test_predict_refuses_a_scale_that_needs_more_memory_than_there_is_with_one_that_fits(tmp_path, hf_model,
                                                                                        monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "a.png", size=(300, 400))
    out = tmp_path / "out"
    done = run_cli("-m", "segformer_edu.predict", "--model", str(hf_model), "--images", str(photos), "--out",
                   str(out), "--scale", "40000", "30000")
    assert_one_line_error(done, f"{photos / 'a.png'} (300x400) at --scale 40000 30000 needs about ",
                          " GB available: pass --scale ")
    assert not out.exists()
    monkeypatch.setattr(predict, "available_memory", lambda device: 3 * 10**8)
    assert predict.main(["--model", str(hf_model), "--images", str(photos), "--out", str(out), "--scale",
                         "4000", "3000", "--no-progress"]) == 1
    line = capsys.readouterr().err.strip()
    assert "needs about 8.5 GB, more than the 0.3 GB available: pass --scale " in line, line
    long, short = map(int, line.split("pass --scale ")[1].split(" (")[0].split())
    config = SegFormer.from_pretrained(hf_model).config
    from segformer_edu.transforms import eval_input_size

    fits = predict.memory_needed(config, (300, 400), eval_input_size(300, 400, (long, short)))
    steps = [round(4000 * 0.9 ** k) for k in range(60)]
    previous = steps[steps.index(long) - 1]  # the scale tried before, 10 % larger: it did not fit
    bigger = predict.memory_needed(config, (300, 400),
                                   eval_input_size(300, 400, (previous, round(3000 * previous / 4000))))
    assert fits <= 3 * 10**8 < bigger and long / short == pytest.approx(4 / 3, rel=0.01)
    assert predict.main(["--model", str(hf_model), "--images", str(photos), "--out", str(out), "--scale",
                         str(long), str(short), "--no-progress"]) == 0
