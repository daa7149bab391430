"""Loading and saving checkpoints: Hugging Face folders and hub ids, official/mmseg files, our
training runs.

``SegFormer.from_pretrained`` and ``save_pretrained`` land here, and so do ``predict`` and
``export``: all take the same sources. The key renaming itself lives in ``convert``.
"""

import difflib
import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from . import cli
from .config import VARIANTS, SegFormerConfig
from .convert import detect_layout, from_edu, to_edu

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
RUN_CHECKPOINT = "best.pt"  # what a training run keeps of its best validation
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
SHOWN = 5  # offending keys listed in an error message

# Hugging Face SegformerConfig field -> our SegFormerConfig field
HF_FIELDS = {
    "num_channels": "in_channels", "hidden_sizes": "embed_dims", "depths": "depths",
    "num_attention_heads": "num_heads", "sr_ratios": "sr_ratios", "mlp_ratios": "mlp_ratios",
    "patch_sizes": "patch_sizes", "strides": "strides", "decoder_hidden_size": "decoder_dim",
    "drop_path_rate": "drop_path_rate", "attention_probs_dropout_prob": "attn_drop",
    "hidden_dropout_prob": "drop", "classifier_dropout_prob": "decoder_dropout",
}

# transformers fields that change the computation but that SegFormer fixes, with the one value
# implemented here. (layer_norm_eps is not read by transformers' SegFormer; reshape_last_stage and
# the loss's ignore index do not change the logits.)
FIXED_HF_FIELDS = {"hidden_act": "gelu"}


def config_from_hf(hf_config: dict, num_classes: int | None = None) -> SegFormerConfig:
    """Our config from the fields of a Hugging Face ``config.json``; a field this package cannot
    reproduce is refused, naming it, rather than loaded into a model that computes something
    else."""
    if hf_config.get("model_type", "segformer") != "segformer":
        raise ValueError(f"config.json describes a {hf_config['model_type']!r} model, not a "
                         "SegFormer")
    for name, implemented in FIXED_HF_FIELDS.items():
        if hf_config.get(name, implemented) != implemented:
            raise ValueError(f"config.json sets {name}={hf_config[name]!r}; segformer_edu "
                             f"implements only {name}={implemented!r}, so its logits would differ")
    stages = len(hf_config.get("hidden_sizes", SegFormerConfig.embed_dims))
    if hf_config.get("num_encoder_blocks", stages) != stages:
        raise ValueError(f"config.json sets num_encoder_blocks={hf_config['num_encoder_blocks']!r} "
                         f"but lists {stages} stages in hidden_sizes; segformer_edu builds one "
                         "stage per listed width")
    values = {ours: hf_config[theirs] for theirs, ours in HF_FIELDS.items() if theirs in hf_config}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    labels = hf_config.get("num_labels", len(hf_config.get("id2label", {})) or None)
    return SegFormerConfig(num_classes=num_classes or labels or 150, **values)


def config_to_hf(config: SegFormerConfig, class_names: list[str] | None = None) -> dict:
    """A ``config.json`` that transformers' ``SegformerForSemanticSegmentation`` reads."""
    hf = {theirs: getattr(config, ours) for theirs, ours in HF_FIELDS.items()}
    hf = {k: list(v) if isinstance(v, tuple) else v for k, v in hf.items()}
    names = class_names or [f"class_{i}" for i in range(config.num_classes)]
    if len(names) != config.num_classes:
        raise ValueError(f"{len(names)} class names for a model with {config.num_classes} classes")
    id2label = {str(i): name for i, name in enumerate(names)}
    return hf | {
        "model_type": "segformer", "architectures": ["SegformerForSemanticSegmentation"],
        "num_encoder_blocks": config.num_stages, "hidden_act": "gelu",
        "layer_norm_eps": config.block_norm_eps,
        "reshape_last_stage": True, "semantic_loss_ignore_index": 255,
        "id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items()},
    }


def infer_config_name(state_dict: dict[str, Tensor]) -> str:
    """Which official variant a state dict (our layout) holds, from its widths and depths."""
    dims = tuple(state_dict[f"encoder.stages.{i}.norm.weight"].shape[0] for i in range(4)
                 if f"encoder.stages.{i}.norm.weight" in state_dict)
    depths = tuple(len({k.split(".")[4] for k in state_dict
                        if k.startswith(f"encoder.stages.{i}.blocks.")}) for i in range(4))
    for name, (embed_dims, variant_depths, _) in VARIANTS.items():
        if (embed_dims, variant_depths) == (dims, depths):
            return name
    raise ValueError(f"the checkpoint's widths {dims} and depths {depths} match no official "
                     "variant; pass config='b0'...'b5' and overrides explicitly")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors from a .safetensors file or a torch pickle (unwrapping ``state_dict``/``model``
    wrappers)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    data = _torch_load(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a state dict")
    return data


def _torch_load(path: Path):
    kind = other_kind_of_file(path)
    if kind:
        what, advice = kind
        raise ValueError(f"{path} is {what}, not a model checkpoint: {advice}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle error says little; name the file
        raise ValueError(f"cannot read checkpoint {path}: {unreadable_why(error)}") from error


def other_kind_of_file(path: Path) -> tuple[str, str] | None:
    """(what ``path`` is, what to do with it) if it is a file people mistake for a checkpoint (an
    exported model, an image); None otherwise."""
    if path.suffix.lower() in (".onnx", ".ort"):
        return ("an ONNX file", "run it with segformer_edu.export.OnnxRuntimeModel(path), or pass "
                "the checkpoint it was exported from")
    from PIL import Image

    try:
        with Image.open(path) as image:  # reads the header only
            found = image.format
    except Exception:  # not an image: PIL's errors for other files vary
        return None
    return (f"an image ({found})", "pass a training run's folder, a .pt/.pth/.safetensors file, "
            "a Hugging Face folder or a hub id as the model")


def unreadable_why(error: Exception) -> str:
    """torch.load's error in one true line. Its advice to re-run with ``weights_only=False`` is
    left out: that runs whatever code the file holds."""
    message = cli.one_line(error)
    if not message.startswith("Weights only load failed"):
        return message
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if found:
        return (f"it holds pickled Python objects ({found.group(1)}), which are not loaded since "
                "unpickling can run any code; save the weights alone, with "
                "torch.save(model.state_dict(), path) or model.save_pretrained(folder)")
    return "not a PyTorch checkpoint (torch.load cannot unpickle it)"


# -------------------------------------------------------------------- where a checkpoint comes from

def is_hub_id(source) -> bool:
    """Whether ``source``, found nowhere on disk, names a repository on the Hugging Face hub
    (``owner/name``).

    A path that only looks like one is not: it starts with ``.``, ``/`` or ``~``, ends like a
    checkpoint file, or its first part is a local folder (``runs/mnie`` mistyped beside
    ``runs/``)."""
    if not (isinstance(source, str) and HUB_ID.match(source)) or source.startswith((".", "/", "~")):
        return False
    a_file = Path(source).suffix.lower() in CHECKPOINT_SUFFIXES
    return not a_file and not Path(source.split("/")[0]).is_dir()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connection within ``timeout`` s: offline, one quick
    check instead of huggingface_hub's half-minute of retries. Behind a proxy (``HTTPS_PROXY``) the
    hub client is left to try."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    proxies = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    if any(os.environ.get(name) for name in proxies):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _cached(hub_id: str) -> Path | None:
    """The folder of ``hub_id`` in the Hugging Face cache if config.json and a weights file are
    there."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(hub_id, "config.json")
    if not isinstance(config, str):
        return None
    found = [try_to_load_from_cache(hub_id, name) for name in WEIGHT_FILES]
    return Path(config).parent if any(isinstance(path, str) for path in found) else None


def _download(hub_id: str) -> Path:
    """Fetch config.json and the weights of ``hub_id`` into the Hugging Face cache; return the
    folder."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as error:
        raise ImportError("loading from the hub needs huggingface_hub: pip install "
                          "huggingface_hub") from error
    cached = _cached(hub_id)
    if cached is not None:
        return cached
    advice = ("check the id and your network; offline, download the repository elsewhere and pass "
              "its local folder instead")
    if not hub_reachable():
        raise OSError(f"could not download {hub_id!r}: the Hugging Face hub cannot be reached (no "
                      f"network?); {advice}")
    try:
        folder = Path(huggingface_hub.hf_hub_download(hub_id, "config.json")).parent
        for name in WEIGHT_FILES:
            try:
                huggingface_hub.hf_hub_download(hub_id, name)
                return folder
            except EntryNotFoundError:
                continue
    except Exception as error:
        raise OSError(f"could not download {hub_id!r} from the Hugging Face hub "
                      f"({type(error).__name__}: {cli.one_line(error)}); {advice}") from error
    raise FileNotFoundError(f"{hub_id!r} on the hub has none of {WEIGHT_FILES}")


def _not_found(source) -> FileNotFoundError:
    """The error for a path that does not exist, naming close names in its folder (a typo,
    usually)."""
    path = Path(source).expanduser()
    hint = ""
    if path.parent.is_dir():
        close = difflib.get_close_matches(path.name, [p.name for p in path.parent.iterdir()], n=3)
        hint = f" ({path.parent} holds {', '.join(close)})" if close else \
            f" ({path.parent} has no {path.name})"
    return FileNotFoundError(
        f"no checkpoint at {str(source)!r}{hint}: expected a training run's folder (best.pt), a "
        f".pt/.pth/.safetensors file, a folder with config.json and {' or '.join(WEIGHT_FILES)}, "
        "or a hub id like 'nvidia/mit-b0'")


def resolve(source: str | Path) -> tuple[Path, dict | None]:
    """(weights file, parsed config.json or None) for a run folder, a folder, a file, or a hub
    id."""
    path = Path(source).expanduser()
    if not path.exists():
        if not is_hub_id(source):
            raise _not_found(source)
        path = _download(source)
    if path.is_dir() and (path / RUN_CHECKPOINT).is_file():
        return path / RUN_CHECKPOINT, None
    if path.is_dir() and (path / "latest.pt").is_file():
        raise FileNotFoundError(f"{path} holds a training run without {RUN_CHECKPOINT} (written at "
                                f"its first validation): pass {path / 'latest.pt'} for its last "
                                "weights")
    folder = path if path.is_dir() else path.parent
    config_file = folder / "config.json"
    hf_config = json.loads(config_file.read_text()) if config_file.exists() else None
    if path.is_dir():
        found = [path / name for name in WEIGHT_FILES if (path / name).exists()]
        if not found:
            raise FileNotFoundError(f"no model in {path}: it has none of {WEIGHT_FILES} (with "
                                    f"config.json: a Hugging Face folder) nor {RUN_CHECKPOINT} (a "
                                    "training run's)")
        path = found[0]
    return path, hf_config


def training_state(path: Path) -> dict | None:
    """The dict segformer_edu.train saves (model, config, classes...) if ``path`` holds one, else
    None."""
    if path.suffix != ".pt":
        return None
    state = _torch_load(path)
    return state if isinstance(state, dict) and "model" in state and "config" in state else None


def evaluated_weights(state: dict) -> dict:
    """A training checkpoint's weights as validated: their moving average when the run kept one
    (--ema-decay)."""
    return state.get("ema") or state["model"]


# ----------------------------------------------------------------------------- building the model

def check_and_load(module: nn.Module, state_dict: dict[str, Tensor], what: str,
                   may_miss: tuple[str, ...] = ()) -> None:
    """``load_state_dict`` with an error that lists the first offending keys of each kind.

    Keys of the module that start with one of ``may_miss`` may be absent (a classifier that starts
    fresh).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.startswith(may_miss)]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
             for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    kinds = (("missing keys", missing), ("unexpected keys", unexpected),
             ("shape mismatches", wrong))
    problems = [f"{len(keys)} {kind} (first: {keys[:SHOWN]})" for kind, keys in kinds if keys]
    if problems:
        raise ValueError(f"{what} does not fit this model: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=False)


def read_source(source) -> tuple[dict[str, Tensor], dict | None, dict]:
    """What a checkpoint holds, in our layout: (state dict, config.json or None, {"names",
    "palette", "scale"}).

    A training checkpoint (a run's folder or ``.pt``) gives its validated weights, classes, palette,
    validation scale and training scale (``train_scale``); a Hugging Face folder its ``id2label``;
    other files nothing beyond the weights."""
    weights, hf_config = resolve(source)
    state = training_state(weights)
    if state is not None:
        config = state["config"]
        info = {"names": state.get("classes"), "palette": state.get("palette"),
                "scale": config.get("val_scale"), "train_scale": config.get("scale"),
                "dataset": config.get("dataset")}
        return dict(evaluated_weights(state)), None, info
    state_dict, unknown = to_edu(read_state_dict(weights))
    if unknown:
        raise ValueError(f"{weights} has {len(unknown)} keys that are not SegFormer weights "
                         f"(first: {unknown[:SHOWN]})")
    id2label = (hf_config or {}).get("id2label")
    names = [id2label.get(str(k), f"class_{k}") for k in range(len(id2label))] if id2label else None
    return state_dict, hf_config, {"names": names, "palette": None, "scale": None,
                                   "train_scale": None, "dataset": None}


def source_config(source, config_name: str | None = None) -> SegFormerConfig:
    """The architecture a checkpoint holds (its config.json, else inferred from the weights),
    without building a model: what ``train`` checks ``--pretrained`` against before reading any
    data."""
    state_dict, hf_config, _ = read_source(source)
    classifier = state_dict.get("decoder.classifier.weight")
    num_classes = None if classifier is None else classifier.shape[0]
    return _config(state_dict, hf_config, config_name, num_classes, {})


def load_pretrained(cls, source, num_classes=None, config_name=None, **overrides):
    """What ``SegFormer.from_pretrained`` does: resolve, read, convert, build the config, check,
    load.

    Returns (model in eval mode, {"names", "palette", "scale"}); ``model.class_names`` holds the
    names. Weights that the checkpoint does not hold (a new decoder or classifier) are said once, on
    the module's logger."""
    state_dict, hf_config, info = read_source(source)
    classifier = state_dict.get("decoder.classifier.weight")
    checkpoint_classes = None if classifier is None else classifier.shape[0]  # not config.json's
    encoder_only = not any(k.startswith("decoder.") for k in state_dict)
    if encoder_only and num_classes is None:
        raise ValueError(f"{source} holds only an encoder (no decode head); pass num_classes=... "
                         "for the new decoder")
    model = cls(_config(state_dict, hf_config, config_name, num_classes or checkpoint_classes,
                        overrides))
    fresh = ("decoder.",) if encoder_only else ()
    if not encoder_only and num_classes is not None and num_classes != checkpoint_classes:
        fresh = ("decoder.classifier.",)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(fresh)}
    if encoder_only:
        encoder = {k.removeprefix("encoder."): v for k, v in state_dict.items()}
        check_and_load(model.encoder, encoder, str(source))
    else:
        check_and_load(model, state_dict, str(source), may_miss=fresh)
    if fresh:
        new = [k for k in model.state_dict() if k.startswith(fresh)]
        shown = ", ".join(new) if len(new) <= SHOWN else f"{len(new)} tensors under {fresh[0]}"
        why = "it holds only an encoder" if encoder_only else f"it has {checkpoint_classes} classes"
        log.warning("%s: newly initialised, not in the checkpoint (%s; this model has %d classes): "
                    "%s. Train them before use.", source, why, model.config.num_classes, shown)
    names = info["names"] if not fresh and info["names"] else None
    model.class_names = list(names) if names else None
    return model.eval(), info | {"names": names}


def _config(state_dict, hf_config, config_name, num_classes, overrides) -> SegFormerConfig:
    """From ``config_name`` if given, else config.json if there is one, else the variant the weights
    match."""
    if config_name is None and hf_config is not None:
        config = replace(config_from_hf(hf_config), **overrides)
    else:
        name = config_name or infer_config_name(state_dict)
        config = SegFormerConfig.from_name(name, **overrides)
    return replace(config, num_classes=num_classes or config.num_classes)


def save_pretrained(model: nn.Module, folder: str | Path, layout: str = "hf",
                    class_names: list[str] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in the Hugging Face layout (or ``mmseg``) to
    ``folder``.

    ``class_names`` (default: the model's ``class_names``, as loaded) become config.json's labels
    (id2label); ``dtype=torch.float16`` halves the file (floating-point tensors only; both loaders
    cast back to the model's float32, as config.json's ``dtype`` says).
    """
    from safetensors.torch import save_file

    class_names = class_names or getattr(model, "class_names", None)
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():  # mkdir would only say "File exists"
        raise FileExistsError(f"cannot save to {folder}: {blocker} is a file, and save_pretrained "
                              "writes a folder (config.json and model.safetensors); pass a folder "
                              "path")
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype if dtype and v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    converted = from_edu(state, layout) if layout != "edu" else state
    save_file(converted, str(folder / "model.safetensors"))
    config = config_to_hf(model.config, class_names) | {"dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


__all__ = ["load_pretrained", "save_pretrained", "source_config", "read_source", "resolve",
           "is_hub_id", "config_from_hf", "config_to_hf", "check_and_load", "read_state_dict",
           "detect_layout", "infer_config_name", "evaluated_weights", "training_state"]
