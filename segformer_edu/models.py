"""Which model a checkpoint holds, and one way to load any of them (book chapters 8, 10 and 11).

``load(source)`` returns SegFormer or the CNN baseline (``cnn.DeepLabV3Plus``), in eval mode, from
what the source says: a folder's ``config.json`` (its ``model_type``), a training checkpoint's
``--model``. Every command line that takes ``--model`` (``predict``, ``export``) loads through it.
Sources are those ``SegFormer.from_pretrained`` takes: a training run's folder (its ``best.pt``) or
a ``.pt`` it wrote, a Hugging Face folder, a hub id, an official ``.pth``.
"""

from pathlib import Path

from torch import nn

from . import cnn
from .checkpoint import (check_and_load, evaluated_weights, load_pretrained, resolve,
                         training_state)
from .model import SegFormer


def class_names(hf_config: dict) -> list[str] | None:
    """The class names of a ``config.json`` (its ``id2label``), in index order."""
    id2label = hf_config.get("id2label")
    return [id2label[str(k)] for k in range(len(id2label))] if id2label else None


def load_cnn(weights: Path, hf_config: dict | None) -> tuple[nn.Module, dict] | None:
    """The CNN baseline and what its checkpoint says, if ``weights`` holds one; else None."""
    info = {"names": None, "palette": None, "scale": None, "dataset": None}
    if hf_config is not None and hf_config.get("model_type") == cnn.NAME:
        model = cnn.DeepLabV3Plus.from_pretrained(weights.parent)
        return model, info | {"names": class_names(hf_config)}
    state = training_state(weights) if hf_config is None else None
    if state is None or state["config"].get("model") != cnn.NAME:
        return None
    weights_of_state = evaluated_weights(state)
    num_classes = weights_of_state["decoder.classifier.weight"].shape[0]
    model = cnn.DeepLabV3Plus.from_config(cnn.NAME, num_classes=num_classes)
    check_and_load(model, weights_of_state, str(weights))
    config = state["config"]
    return model.eval(), info | {"names": state.get("classes"), "palette": state.get("palette"),
                                 "scale": config.get("val_scale"),
                                 "dataset": config.get("dataset")}


def load_with_info(source: str | Path) -> tuple[nn.Module, dict]:
    """(the model in eval mode, {"names", "palette", "scale", "dataset"}: what the checkpoint says
    of its classes, their colours, its validation scale and dataset, None where it says nothing)."""
    weights, hf_config = resolve(source)
    found = load_cnn(weights, hf_config)
    if found is None:
        found = load_pretrained(SegFormer, source)
    model, info = found
    model.class_names = info["names"]
    return model, info


def load(source: str | Path) -> nn.Module:
    """SegFormer or the CNN baseline, in eval mode, whichever ``source`` holds;
    ``model.class_names`` holds the checkpoint's class names, where it has them."""
    return load_with_info(source)[0]
