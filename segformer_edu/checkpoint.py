"""Loading and saving checkpoints: Hugging Face folders and hub ids, official/mmseg files, our own.

``SegFormer.from_pretrained`` lands here. The key renaming itself lives in ``convert``.
"""

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import VARIANTS, SegFormerConfig
from .convert import detect_layout, from_edu, to_edu

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
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

# transformers fields that change the computation but that SegFormer fixes, with the one value implemented here.
# (layer_norm_eps is not read by transformers' SegFormer; reshape_last_stage and the loss's ignore index do not
# change the logits.)
FIXED_HF_FIELDS = {"hidden_act": "gelu"}


def config_from_hf(hf_config: dict, num_classes: int | None = None) -> SegFormerConfig:
    """Our config from the fields of a Hugging Face ``config.json``; a field this package cannot reproduce is
    refused, naming it, rather than loaded into a model that computes something else."""
    if hf_config.get("model_type", "segformer") != "segformer":
        raise ValueError(f"config.json describes a {hf_config['model_type']!r} model, not a SegFormer")
    for name, implemented in FIXED_HF_FIELDS.items():
        if hf_config.get(name, implemented) != implemented:
            raise ValueError(f"config.json sets {name}={hf_config[name]!r}; segformer_edu implements only "
                             f"{name}={implemented!r}, so its logits would differ")
    stages = len(hf_config.get("hidden_sizes", SegFormerConfig.embed_dims))
    if hf_config.get("num_encoder_blocks", stages) != stages:
        raise ValueError(f"config.json sets num_encoder_blocks={hf_config['num_encoder_blocks']!r} but lists "
                         f"{stages} stages in hidden_sizes; segformer_edu builds one stage per listed width")
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
        "num_encoder_blocks": config.num_stages, "hidden_act": "gelu", "layer_norm_eps": config.block_norm_eps,
        "reshape_last_stage": True, "semantic_loss_ignore_index": 255,
        "id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items()},
    }


def infer_config_name(state_dict: dict[str, Tensor]) -> str:
    """Which official variant a state dict (our layout) holds, from its widths and depths."""
    dims = tuple(state_dict[f"encoder.stages.{i}.norm.weight"].shape[0] for i in range(4)
                 if f"encoder.stages.{i}.norm.weight" in state_dict)
    depths = tuple(len({k.split(".")[4] for k in state_dict if k.startswith(f"encoder.stages.{i}.blocks.")})
                   for i in range(4))
    for name, (embed_dims, variant_depths, _) in VARIANTS.items():
        if (embed_dims, variant_depths) == (dims, depths):
            return name
    raise ValueError(f"the checkpoint's widths {dims} and depths {depths} match no official variant; "
                     "pass config='b0'...'b5' and overrides explicitly")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors from a .safetensors file or a torch pickle (unwrapping ``state_dict``/``model`` wrappers)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a state dict")
    return data


def _download(hub_id: str) -> Path:
    """Fetch config.json and the weights of ``hub_id`` into the Hugging Face cache; return the folder."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as error:
        raise ImportError("loading from the hub needs huggingface_hub: pip install huggingface_hub") from error
    try:
        folder = Path(hf_hub_download(hub_id, "config.json")).parent
        for name in WEIGHT_FILES:
            try:
                hf_hub_download(hub_id, name)
                return folder
            except EntryNotFoundError:
                continue
    except Exception as error:
        raise OSError(f"could not download {hub_id!r} from the Hugging Face hub ({type(error).__name__}: {error}). "
                      "Check the id and your network; offline, download the repository elsewhere and pass its "
                      "local folder instead") from error
    raise FileNotFoundError(f"{hub_id!r} on the hub has none of {WEIGHT_FILES}")


def resolve(source: str | Path) -> tuple[Path, dict | None]:
    """(weights file, parsed config.json or None) for a folder, a file, or a hub id."""
    path = Path(source).expanduser()
    if not path.exists():
        if isinstance(source, str) and HUB_ID.match(source) and not source.startswith((".", "/")):
            path = _download(source)
        else:
            raise FileNotFoundError(f"no checkpoint at {source!r}: expected a folder with config.json and "
                                    f"{' or '.join(WEIGHT_FILES)}, a weights file, or a hub id like 'nvidia/mit-b0'")
    folder = path if path.is_dir() else path.parent
    config_file = folder / "config.json"
    hf_config = json.loads(config_file.read_text()) if config_file.exists() else None
    if path.is_dir():
        found = [path / name for name in WEIGHT_FILES if (path / name).exists()]
        if not found:
            raise FileNotFoundError(f"{path} has none of {WEIGHT_FILES}")
        path = found[0]
    return path, hf_config


def check_and_load(module: nn.Module, state_dict: dict[str, Tensor], what: str, may_miss: tuple[str, ...] = ()) -> None:
    """``load_state_dict`` with an error that lists the first offending keys of each kind.

    Keys of the module that start with one of ``may_miss`` may be absent (a classifier that starts fresh).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.startswith(may_miss)]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
             for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    problems = [f"{len(keys)} {kind} (first: {keys[:SHOWN]})"
                for kind, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong))
                if keys]
    if problems:
        raise ValueError(f"{what} does not fit this model: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=False)


def load_pretrained(cls, source, num_classes=None, config_name=None, **overrides):
    """What ``SegFormer.from_pretrained`` does: resolve, read, convert, build the config, check, load."""
    weights, hf_config = resolve(source)
    state_dict, unknown = to_edu(read_state_dict(weights))
    if unknown:
        raise ValueError(f"{weights} has {len(unknown)} keys that are not SegFormer weights (first: {unknown[:SHOWN]})")
    if not any(k.startswith("decoder.") for k in state_dict):
        if num_classes is None:
            raise ValueError(f"{source} holds only an encoder (no decode head); pass num_classes=... for the new decoder")
        model = cls(_config(state_dict, hf_config, config_name, num_classes, overrides))
        check_and_load(model.encoder, {k.removeprefix("encoder."): v for k, v in state_dict.items()}, str(weights))
        return model
    classifier = state_dict.get("decoder.classifier.weight")
    checkpoint_classes = classifier.shape[0] if classifier is not None else None  # truer than config.json
    model = cls(_config(state_dict, hf_config, config_name, num_classes or checkpoint_classes, overrides))
    fresh_classifier = num_classes is not None and num_classes != checkpoint_classes
    if fresh_classifier:
        log.info("checkpoint has %s classes, model %d: the classifier starts fresh", checkpoint_classes, num_classes)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("decoder.classifier.")}
    check_and_load(model, state_dict, str(weights), may_miss=("decoder.classifier.",) if fresh_classifier else ())
    return model


def _config(state_dict, hf_config, config_name, num_classes, overrides) -> SegFormerConfig:
    """From ``config_name`` if given, else config.json if there is one, else the variant the weights match."""
    if config_name is None and hf_config is not None:
        config = replace(config_from_hf(hf_config), **overrides)
    else:
        config = SegFormerConfig.from_name(config_name or infer_config_name(state_dict), **overrides)
    return replace(config, num_classes=num_classes or config.num_classes)


def save_pretrained(model: nn.Module, folder: str | Path, layout: str = "hf", class_names: list[str] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in the Hugging Face layout (or ``mmseg``) to ``folder``.

    ``class_names`` become config.json's labels (id2label); ``dtype=torch.float16`` halves the file (floating-point
    tensors only; both loaders cast back to the model's float32, as config.json's ``dtype`` says).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype if dtype and v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    save_file(from_edu(state, layout) if layout != "edu" else state, str(folder / "model.safetensors"))
    config = config_to_hf(model.config, class_names) | {"dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


__all__ = ["load_pretrained", "save_pretrained", "config_from_hf", "config_to_hf", "check_and_load",
           "read_state_dict", "detect_layout", "infer_config_name"]


def evaluated_weights(state: dict) -> dict:
    """A training checkpoint's weights as validated: their moving average when the run kept one (--ema-decay)."""
    return state.get("ema") or state["model"]
