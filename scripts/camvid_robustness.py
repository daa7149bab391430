"""Robustness of the stored CamVid models to the paper's 16 corruptions (its Table 5's protocol at
CamVid scale; book chapter 11).

    python scripts/camvid_robustness.py              # the stored SegFormer-B0, the 233 test frames
    python scripts/camvid_robustness.py --model segformer-b0=book/results/camvid_b0_cpu \\
        --model deeplabv3plus-mobilenetv2=book/results/<the CNN's folder>
    python scripts/camvid_robustness.py --adapt-batchnorm cnn-adapted=book/results/camvid_cnn_cpu
    python scripts/camvid_robustness.py --time-only  # seconds per frame of each corruption

Each test frame (CamVid's 233 at 480x360, or ``--frames N`` of them, evenly spaced) is corrupted
at its own size by ``segformer_edu.corruptions`` (16 corruptions; severities 1-5, 1-3 for noise),
each frame's randomness seeded by (``--seed``, corruption, severity, frame). Every model then sees
the same corrupted frames as its test run saw the clean ones: resized to the model's evaluation
scale (``eval_scale`` in its folder's test_metrics.json), logits resized to the 360x480 label,
void ignored: ``segformer_edu.evaluation.evaluate``. The clean frames are evaluated too, as the
reference. A model given with ``--adapt-batchnorm`` is evaluated on each set of frames (the clean
ones, each corruption at each severity) after its BatchNorm statistics are re-estimated on that
set, unlabelled (``segformer_edu.adaptation``, Schneider et al. 2020).

Resumable: --out (default book/results/robustness.json) is rewritten after every (corruption,
severity, model); the same command continues where a run stopped, and a model named for the first
time is added beside the others. Results of other settings (frames, seed, severities, library
versions) or of other weights under the same model name are refused rather than mixed. With
``--frames-cache DIR`` each set of corrupted frames is also kept in DIR (about 40 MB per set of 80
frames), under a folder named by the settings, so that a model added later is tested on the same
pixels without making them again.
"""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from segformer_edu import SegFormer, cli, corruptions, data
from segformer_edu.adaptation import with_batchnorm_statistics_of
from segformer_edu.cnn import NAME as CNN_NAME
from segformer_edu.cnn import DeepLabV3Plus
from segformer_edu.system import cpu_name, machine_record, refuse_under_load
from segformer_edu.evaluation import evaluate
from segformer_edu.transforms import EvalTransform

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "results"
DEFAULT_MODELS = ("segformer-b0=book/results/camvid_b0_cpu",)
KEPT = ("miou", "acc", "iou")  # of evaluate's metrics: model_seconds is a time, not a result


class Frames(torch.utils.data.Dataset):
    """(image, label) pairs in memory, as ``transform`` (a model's test transform) makes them."""

    def __init__(self, samples: list, transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.transform(*self.samples[index])


def frame_indices(total: int, count: int | None) -> list[int]:
    """``count`` indices spread evenly over ``total`` frames (all of them without a count)."""
    if count is None or count >= total:
        return list(range(total))
    if count < 1:
        raise ValueError(f"--frames must be at least 1, got {count}")
    return [index * total // count for index in range(count)]


def load_model(folder: Path) -> torch.nn.Module:
    """A stored model in eval mode: SegFormer (a Hugging Face folder) or the package's CNN."""
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: --model expects a folder that "
                                "save_pretrained wrote (config.json + model.safetensors)")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type == CNN_NAME:
        return DeepLabV3Plus.from_pretrained(folder)
    if model_type == "segformer":
        return SegFormer.from_pretrained(folder).eval()
    raise ValueError(f"{config}: model_type {model_type!r} is neither segformer nor {CNN_NAME}")


def eval_scale(folder: Path) -> list[int] | None:
    """The scale the model's test run used, from its folder (None: the frames' own 480x360)."""
    for name in ("test_metrics.json", "summary.json"):
        path = folder / name
        if path.is_file():
            values = json.loads(path.read_text())
            if "eval_scale" in values:
                return values["eval_scale"]
    raise FileNotFoundError(f"{folder} has no test_metrics.json or summary.json with eval_scale: "
                            "the scale its test run used is needed to evaluate it the same way")


def weights_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it: no machine's paths in the results."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def parse_models(specs: list[str], flag: str = "--model") -> dict[str, Path]:
    models = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"{flag} expects NAME=FOLDER, got {spec!r}")
        if name in models:
            raise ValueError(f"{flag} names {name!r} twice: give each model its own name")
        models[name] = Path(folder)
    return models


def requested_models(args) -> dict[str, tuple[Path, bool]]:
    """{name: (folder, adapt its BatchNorm statistics)} of --model and --adapt-batchnorm."""
    plain = parse_models(args.model or ([] if args.adapt_batchnorm else list(DEFAULT_MODELS)))
    adapted = parse_models(args.adapt_batchnorm or [], "--adapt-batchnorm")
    if set(plain) & set(adapted):
        raise ValueError(f"{sorted(set(plain) & set(adapted))[0]!r} is named by --model and "
                         "--adapt-batchnorm: give the adapted model its own name")
    return {name: (folder, False) for name, folder in plain.items()} | {
        name: (folder, True) for name, folder in adapted.items()}


def score(model: torch.nn.Module, frames: Frames, adapt: bool) -> dict:
    """``evaluate`` on ``frames``; with ``adapt``, BatchNorm statistics re-estimated on them first."""
    if adapt:
        model = with_batchnorm_statistics_of(
            model, torch.stack([frames[index][0] for index in range(len(frames))]))
    metrics = evaluate(model, frames, len(data.CAMVID_CLASSES), torch.device("cpu"))
    return {key: metrics[key] for key in KEPT}


def read_results(path: Path, settings: dict) -> dict:
    """The results at ``path`` if they were made with ``settings``; a fresh record if none."""
    if not path.exists():
        return {"settings": settings, "models": {}, "results": {}}
    stored = json.loads(path.read_text())
    if stored.get("settings") != settings:
        changed = sorted(key for key in settings | stored.get("settings", {})
                         if settings.get(key) != stored.get("settings", {}).get(key))
        raise ValueError(f"{path} holds results of other settings ({', '.join(changed)}): pass "
                         "another --out, or the settings it was made with")
    return stored


def corrupted_frames(test_set, indices: list[int], name: str, severity: int, settings: dict,
                     cache: Path | None) -> list:
    """``corruptions.corrupt_frames`` of the test frames ``indices``; with ``cache``, read from it
    when it holds them (made with the same ``settings``), else made and stored in it."""
    if cache is None:
        return corruptions.corrupt_frames(test_set, indices, name, severity, settings["seed"])
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / key / f"{name}_{severity}.npy"
    if path.exists():
        images = np.load(path)  # (frames, H, W, 3) uint8
        return [(image, test_set.load(index)[1]) for image, index in zip(images, indices)]
    samples = corruptions.corrupt_frames(test_set, indices, name, severity, settings["seed"])
    if not path.parent.exists():  # a new folder: say once which settings made its frames
        path.parent.mkdir(parents=True)
        (path.parent / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    temporary = path.with_name(f".{path.stem}.tmp.npy")
    np.save(temporary, np.stack([image for image, _ in samples]))
    os.replace(temporary, path)
    return samples


def write_atomic(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(temporary, path)


def run(args) -> dict:
    requested = requested_models(args)
    names = [corruptions.check_name(name)
             for name in (args.corruptions or corruptions.CORRUPTIONS)]
    models = {}
    for name, (folder, adapt) in requested.items():  # every model loads before any work starts
        models[name] = (load_model(folder), EvalTransform(scale=eval_scale(folder)), folder, adapt)
    test_set = data.camvid(args.data_root, "test")
    indices = frame_indices(len(test_set), args.frames)
    settings = {"frames": indices, "seed": args.seed, "severities": corruptions.SEVERITIES,
                "versions": corruptions.versions()}
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples as lists)
    record = read_results(args.out, settings)
    record |= {"classes": list(data.CAMVID_CLASSES), "groups": corruptions.GROUPS,
               "machine": cpu_name()}
    for name, (model, transform, folder, adapt) in models.items():
        known = record["models"].get(name)
        digest = weights_digest(folder)
        if known is not None and known["weights_sha256"] != digest:
            raise ValueError(f"{args.out} has results of other weights named {name!r}: pass "
                             "another --out or another name")
        if known is not None and known.get("batchnorm_adapted", False) != adapt:
            raise ValueError(f"{args.out} has results of {name!r} with"
                             f"{'out' if adapt else ''} BatchNorm adaptation: pass another --out "
                             "or another name")
        if known is None:
            clean = [test_set.load(index) for index in indices]
            metrics = score(model, Frames(clean, transform), adapt)
            record["models"][name] = {"folder": shown_path(folder), "weights_sha256": digest,
                                      "eval_scale": transform.scale and list(transform.scale),
                                      "batchnorm_adapted": adapt, "clean": metrics}
            write_atomic(args.out, record)
            print(f"{name}: clean mIoU {100 * metrics['miou']:.2f} % on {len(indices)} frames",
                  flush=True)
    for name in names:
        for severity in corruptions.severities(name):
            entry = record["results"].setdefault(name, {}).setdefault(str(severity), {})
            missing = [model_name for model_name in models if model_name not in entry]
            if not missing:
                continue
            samples = corrupted_frames(test_set, indices, name, severity, settings,
                                       args.frames_cache)
            for model_name in missing:
                model, transform, _, adapt = models[model_name]
                entry[model_name] = metrics = score(model, Frames(samples, transform), adapt)
                write_atomic(args.out, record)
                print(f"{name} {severity}: {model_name} mIoU {100 * metrics['miou']:.2f} %",
                      flush=True)
    return record


def time_corruptions(args) -> dict:
    """Seconds per 480x360 frame of each corruption, averaged over its severities and --frames
    frames (default 4), after one untimed call (numba compiles glass blur on its first)."""
    test_set = data.camvid(args.data_root, "test")
    frames = [test_set.load(index)[0] for index in frame_indices(len(test_set), args.frames or 4)]
    load_before = refuse_under_load(args.max_load)
    seconds = {}
    for name in args.corruptions or corruptions.CORRUPTIONS:
        corruptions.corrupt(frames[0], name, 1, 0)
        start = time.perf_counter()
        for severity in corruptions.severities(name):
            for frame in frames:
                corruptions.corrupt(frame, name, severity, 0)
        calls = len(frames) * len(corruptions.severities(name))
        seconds[name] = (time.perf_counter() - start) / calls
        print(f"{name:17s} {1e3 * seconds[name]:7.1f} ms per frame", flush=True)
    return {"seconds_per_frame": seconds, "frames": len(frames),
            "versions": corruptions.versions(), **machine_record(load_before)}


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python scripts/camvid_robustness.py",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", metavar="NAME=FOLDER",
                        help=f"a stored model to test (repeat for several; default, without "
                             f"--adapt-batchnorm: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--adapt-batchnorm", action="append", metavar="NAME=FOLDER",
                        help="a stored model with BatchNorm to test with its statistics "
                             "re-estimated on each set of frames it is tested on (repeat for "
                             "several)")
    parser.add_argument("--out", type=Path, default=RESULTS / "robustness.json")
    parser.add_argument("--frames", type=int, default=None,
                        help="test on this many frames, evenly spaced (default: all 233)")
    parser.add_argument("--corruptions", nargs="+", default=None,
                        help="only these (default: the 16 of segformer_edu.corruptions)")
    parser.add_argument("--frames-cache", type=Path, default=None, metavar="DIR",
                        help="keep each set of corrupted frames in DIR, and read it from there "
                             "when a later run needs it (default: make them every time)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions' randomness")
    parser.add_argument("--data-root", default=None, help="CamVid folder (default: as the trainer)")
    parser.add_argument("--time-only", action="store_true",
                        help="print the seconds per frame of each corruption; store nothing")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="with --time-only: refuse to start above this 1-minute load average")
    args = parser.parse_args(argv)
    try:
        if args.time_only:
            print(json.dumps(time_corruptions(args), indent=1))
        else:
            run(args)
    except (FileNotFoundError, ValueError) as error:  # one line, before any work
        return cli.report(error)
    if not args.time_only:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
