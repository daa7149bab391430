"""State-dict conversion between this package and the two published layouts.

* Hugging Face transformers (``nvidia/segformer-b0-finetuned-ade-512-512``, ``nvidia/mit-b0``):
  ``segformer.encoder.block.0.1.attention.self.query.weight``, separate ``key`` and ``value``.
* The official NVlabs code / mmsegmentation: ``backbone.block1.1.attn.q.weight``, keys and values
  in one ``attn.kv``; ``decode_head.linear_fuse.conv`` / ``.bn`` / ``linear_pred``.

Each rule below names one tensor family in all three layouts. Placeholders: ``{i}`` stage
(0-based), ``{I}`` stage (1-based, as the official names count), ``{j}`` block, ``{p}``
parameter or buffer name.
"""

import re

import torch
from torch import Tensor

_BLOCK = "encoder.stages.{i}.blocks.{j}."
_HF_BLOCK = "segformer.encoder.block.{i}.{j}."
_MM_BLOCK = "backbone.block{I}.{j}."

# (ours, Hugging Face, official/mmseg); ``attn.kv`` is split into key and value for HF, see below
RULES: list[tuple[str, str, str]] = [
    ("encoder.stages.{i}.patch_embed.proj.{p}", "segformer.encoder.patch_embeddings.{i}.proj.{p}",
     "backbone.patch_embed{I}.proj.{p}"),
    ("encoder.stages.{i}.patch_embed.norm.{p}",
     "segformer.encoder.patch_embeddings.{i}.layer_norm.{p}", "backbone.patch_embed{I}.norm.{p}"),
    (_BLOCK + "norm1.{p}", _HF_BLOCK + "layer_norm_1.{p}", _MM_BLOCK + "norm1.{p}"),
    (_BLOCK + "attn.q.{p}", _HF_BLOCK + "attention.self.query.{p}", _MM_BLOCK + "attn.q.{p}"),
    (_BLOCK + "attn.kv.{p}", _HF_BLOCK + "attention.self.key_value.{p}", _MM_BLOCK + "attn.kv.{p}"),
    (_BLOCK + "attn.sr.{p}", _HF_BLOCK + "attention.self.sr.{p}", _MM_BLOCK + "attn.sr.{p}"),
    (_BLOCK + "attn.norm.{p}", _HF_BLOCK + "attention.self.layer_norm.{p}",
     _MM_BLOCK + "attn.norm.{p}"),
    (_BLOCK + "attn.proj.{p}", _HF_BLOCK + "attention.output.dense.{p}",
     _MM_BLOCK + "attn.proj.{p}"),
    (_BLOCK + "norm2.{p}", _HF_BLOCK + "layer_norm_2.{p}", _MM_BLOCK + "norm2.{p}"),
    (_BLOCK + "ffn.fc1.{p}", _HF_BLOCK + "mlp.dense1.{p}", _MM_BLOCK + "mlp.fc1.{p}"),
    (_BLOCK + "ffn.dwconv.{p}", _HF_BLOCK + "mlp.dwconv.dwconv.{p}",
     _MM_BLOCK + "mlp.dwconv.dwconv.{p}"),
    (_BLOCK + "ffn.fc2.{p}", _HF_BLOCK + "mlp.dense2.{p}", _MM_BLOCK + "mlp.fc2.{p}"),
    ("encoder.stages.{i}.norm.{p}", "segformer.encoder.layer_norm.{i}.{p}", "backbone.norm{I}.{p}"),
    ("decoder.linear_c.{i}.{p}", "decode_head.linear_c.{i}.proj.{p}",
     "decode_head.linear_c{I}.proj.{p}"),
    ("decoder.fuse.0.{p}", "decode_head.linear_fuse.{p}", "decode_head.linear_fuse.conv.{p}"),
    ("decoder.fuse.1.{p}", "decode_head.batch_norm.{p}", "decode_head.linear_fuse.bn.{p}"),
    ("decoder.classifier.{p}", "decode_head.classifier.{p}", "decode_head.linear_pred.{p}"),
]
LAYOUTS = ("edu", "hf", "mmseg")

# Tensors the published checkpoints carry that no SegFormer uses: ImageNet classification heads
# (HF ``classifier``, official ``head``) and mmseg's unused default ``conv_seg``.
UNUSED = re.compile(r"^(classifier|head|decode_head\.conv_seg)\.(weight|bias)$")


def _pattern(template: str) -> re.Pattern:
    regex = re.escape(template)
    groups = {"i": r"(?P<i>\d+)", "I": r"(?P<I>\d+)", "j": r"(?P<j>\d+)", "p": r"(?P<p>\w+)"}
    for name, group in groups.items():
        regex = regex.replace(re.escape("{" + name + "}"), group)
    return re.compile(f"^{regex}$")


_PATTERNS = {layout: [_pattern(rule[n]) for rule in RULES] for n, layout in enumerate(LAYOUTS)}


def _rename(key: str, source: str, target: str) -> str | None:
    for rule, pattern in zip(RULES, _PATTERNS[source]):
        match = pattern.match(key)
        if match:
            fields = match.groupdict()
            stage = int(fields["i"]) if "i" in fields else int(fields.get("I", 1)) - 1
            return rule[LAYOUTS.index(target)].format(i=stage, I=stage + 1, j=fields.get("j"),
                                                      p=fields["p"])
    return None


def _normalise_prefixes(state_dict: dict[str, Tensor], layout: str) -> dict[str, Tensor]:
    """Add the prefix that encoder-only checkpoints leave out
    (HF ``SegformerModel``, raw ImageNet MiT files)."""
    if layout == "hf":
        return {("segformer." + k if k.startswith("encoder.") else k): v
                for k, v in state_dict.items()}
    if layout == "mmseg":
        return {("backbone." + k if re.match(r"^(patch_embed|block|norm)\d", k) else k): v
                for k, v in state_dict.items()}
    return state_dict


def detect_layout(state_dict: dict[str, Tensor]) -> str:
    """``"edu"``, ``"hf"`` or ``"mmseg"``, from the key names."""
    keys = list(state_dict)
    if any(k.startswith("encoder.stages.") for k in keys):
        return "edu"
    if any(".patch_embeddings." in k or k.startswith("decode_head.linear_c.") for k in keys):
        return "hf"
    if any(re.match(r"^(backbone\.)?(patch_embed|block)\d", k)
           or k.startswith("decode_head.linear_c1") for k in keys):
        return "mmseg"
    raise ValueError(f"cannot tell which SegFormer layout this state dict uses; first keys: "
                     f"{keys[:5]}")


def to_edu(state_dict: dict[str, Tensor],
           layout: str | None = None) -> tuple[dict[str, Tensor], list[str]]:
    """Convert an HF or official/mmseg state dict to ours. Returns
    (state dict, keys not understood)."""
    layout = layout or detect_layout(state_dict)
    if layout == "edu":
        return dict(state_dict), []
    state_dict = _normalise_prefixes(state_dict, layout)
    if layout == "hf":
        state_dict = _merge_key_value(state_dict)
    converted, unknown = {}, []
    for key, value in state_dict.items():
        new_key = _rename(key, layout, "edu")
        if new_key is not None:
            converted[new_key] = value
        elif not UNUSED.match(key):
            unknown.append(key)
    return converted, unknown


def from_edu(state_dict: dict[str, Tensor], layout: str) -> dict[str, Tensor]:
    """Convert our state dict to ``"hf"`` or ``"mmseg"`` layout."""
    if layout not in ("hf", "mmseg"):
        raise ValueError(f"layout must be 'hf' or 'mmseg', got {layout!r}")
    converted = {}
    for key, value in state_dict.items():
        new_key = _rename(key, "edu", layout)
        if new_key is None:
            raise ValueError(f"no {layout} name for parameter {key!r}")
        converted[new_key] = value
    return _split_key_value(converted) if layout == "hf" else converted


def _merge_key_value(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF keeps key and value projections apart; ours
    (and the official code) stack them as ``kv``."""
    merged = {}
    for key, value in state_dict.items():
        if ".attention.self.value." in key:
            continue
        if ".attention.self.key." in key:
            partner = key.replace(".attention.self.key.", ".attention.self.value.")
            if partner not in state_dict:
                raise ValueError(f"checkpoint has {key!r} but not its partner {partner!r}")
            merged[key.replace(".key.", ".key_value.")] = torch.cat([value, state_dict[partner]],
                                                                    dim=0)
        else:
            merged[key] = value
    return merged


def _split_key_value(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    split = {}
    for key, value in state_dict.items():
        if ".attention.self.key_value." in key:
            # the first half of kv's outputs are the keys
            key_part, value_part = value.chunk(2, dim=0)
            split[key.replace(".key_value.", ".key.")] = key_part
            split[key.replace(".key_value.", ".value.")] = value_part
        else:
            split[key] = value
    return split
