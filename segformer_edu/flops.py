"""What SegFormer costs: parameters and multiply-accumulates, counted two ways (book chapter 9).

The paper's "FLOPs" (Table 1) are multiply-accumulates (MACs) for one image, as counted by
mmcv's ``get_model_complexity_info`` (forward hooks on modules) plus the attention products
that the official ``tools/get_flops.py`` adds by hand. mmcv's rules, our default ``MMCV``:

* Conv2d: k_h * k_w * C_in / groups MACs per output element, + 1 per output element for the bias;
* Linear: C_in MACs per output element (the bias is not counted);
* LayerNorm, BatchNorm (affine): 2 per input element (normalise, then scale and shift);
* ReLU: 1 per element. GELU, dropout, softmax, residual adds and the functional resize
  (``F.interpolate``) have no hook and count 0;
* attention products: Q K^T and softmax(.) V are two matmuls of N x N' x C MACs each per block
  (N queries, N' = N / R keys and values, C channels, all heads together). They are functional
  (``F.scaled_dot_product_attention`` here, ``@`` in the official code), so no module hook sees
  them: ``count_macs`` adds them with a hook on each ``EfficientSelfAttention``.

``count_macs`` counts with hooks while the model runs (on the ``meta`` device it costs no
compute); ``analytic_macs`` gives the same numbers from formulas, component by component.
Other tools' conventions are ``Convention`` settings: ``THOP`` (thop 0.1.1: no attention, no conv
bias, 4 per norm element, ReLU free) and ``MATMULS`` (only the multiplications of matrices, what
``torch.utils.flop_counter.FlopCounterMode`` counts, in FLOPs = 2 x these MACs).
"""

from collections import defaultdict
from dataclasses import dataclass
from math import prod

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .attention import EfficientSelfAttention
from .config import SegFormerConfig
from .model import SegFormer


@dataclass(frozen=True)
class Convention:
    """Which operations count, and how many MACs each element costs."""

    attention: bool = True  # Q K^T and A V, 2 * N * N' * C per block
    conv_bias: bool = True  # 1 per conv output element
    norm_per_element: int = 2  # LayerNorm / BatchNorm (all affine here)
    relu: bool = True  # 1 per element; GELU is never counted (mmcv and thop have no rule for it)


MMCV = Convention()  # the paper's numbers
THOP = Convention(attention=False, conv_bias=False, norm_per_element=4, relu=False)
MATMULS = Convention(attention=True, conv_bias=False, norm_per_element=0, relu=False)

PARTS = ("stage1", "stage2", "stage3", "stage4", "decoder")
COMPONENTS = ("patch embed", "q", "kv", "sr conv", "attention", "proj", "fc1", "dwconv", "fc2",
              "norms", "decoder linears", "fuse conv", "BN", "ReLU", "classifier")
# module name (within a stage, block index dropped; or within the decoder) -> component
COMPONENT_OF = {
    "patch_embed.proj": "patch embed", "patch_embed.norm": "norms", "norm": "norms",
    "norm1": "norms", "norm2": "norms", "attn.norm": "norms", "attn.q": "q", "attn.kv": "kv",
    "attn.sr": "sr conv", "attn": "attention", "attn.proj": "proj", "ffn.fc1": "fc1",
    "ffn.dwconv": "dwconv", "ffn.fc2": "fc2", "linear_c": "decoder linears", "fuse.0": "fuse conv",
    "fuse.1": "BN", "fuse.2": "ReLU", "classifier": "classifier",
}
COUNTED = (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.BatchNorm2d, nn.ReLU, EfficientSelfAttention)


def component(name: str) -> tuple[str, str]:
    """(part, component) of a module name, e.g. ``encoder.stages.0.blocks.1.attn.q`` -> ("stage1",
    "q")."""
    parts = name.split(".")
    if parts[0] == "encoder":
        rest = parts[5:] if parts[3] == "blocks" else parts[3:]  # drop "blocks.{j}"
        return f"stage{int(parts[2]) + 1}", COMPONENT_OF[".".join(rest)]
    rest = parts[1:2] if parts[1] == "linear_c" else parts[1:]  # drop "linear_c.{i}"
    return "decoder", COMPONENT_OF[".".join(rest)]


def module_macs(module: nn.Module, args: tuple, output, convention: Convention = MMCV) -> int:
    """MACs of one call of a counted module, from the shapes of its inputs and output."""
    if isinstance(module, nn.Conv2d):
        per_output = prod(module.kernel_size) * module.in_channels // module.groups + (
            convention.conv_bias and module.bias is not None)
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return args[0].numel() * module.out_features
    if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        return args[0].numel() * convention.norm_per_element
    if isinstance(module, nn.ReLU):
        return output.numel() * convention.relu
    if isinstance(module, EfficientSelfAttention):
        x, height, width = args  # x: (B, N, C) queries; keys and values come from the reduced map
        reduced = (height // module.sr_ratio) * (width // module.sr_ratio)  # N' = N / R
        return 2 * x.numel() * reduced * convention.attention  # Q K^T and A V: N * N' * C MACs each
    raise TypeError(f"no counting rule for {type(module).__name__}")


@torch.no_grad()
def count_macs(model: SegFormer, height: int, width: int, convention: Convention = MMCV,
               extra_rules: dict | None = None) -> dict[str, int]:
    """MACs per module for one ``height`` x ``width`` image, counted by hooks during a forward pass.

    Runs on the model's device; a model on ``torch.device("meta")`` (see ``meta_model``) counts
    B5 at 1024 x 2048 in milliseconds, because meta tensors have shapes but no data.
    ``extra_rules``: {module type: rule(module, args, output) -> MACs} for modules SegFormer does
    not have (another model's), checked before the package's rules. The decoder is counted in the
    paper's order, whichever order it is set to run in (``fuse_first``, decoder.py).
    """
    counts: dict[str, int] = defaultdict(int)
    rules = dict(extra_rules or {})

    def hook(name):
        def record(module, args, output):
            rule = next((rule for kind, rule in rules.items() if isinstance(module, kind)), None)
            if rule is None:
                counts[name] += module_macs(module, args, output, convention)
            else:
                counts[name] += rule(module, args, output)
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if isinstance(module, (*COUNTED, *rules))]
    was_training = model.training
    decoder = getattr(model, "decoder", None)
    fuse_first = getattr(decoder, "fuse_first", False)
    try:
        model.eval()
        if fuse_first:
            decoder.fuse_first = False
        device = next(model.parameters()).device
        model(torch.empty(1, model.config.in_channels, height, width, device=device))
    finally:
        model.train(was_training)
        if fuse_first:
            decoder.fuse_first = True
        for handle in handles:
            handle.remove()
    return dict(counts)


def by_component(per_module: dict[str, int]) -> dict[tuple[str, str], int]:
    """Sum per-module numbers (MACs or parameters) into {(part, component): total}, zeros
    dropped."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for name, value in per_module.items():
        totals[component(name)] += value
    return {key: value for key, value in totals.items() if value}


def analytic_macs(config: SegFormerConfig, height: int, width: int,
                  convention: Convention = MMCV) -> dict[tuple[str, str], int]:
    """The same MACs as ``by_component(count_macs(...))``, from formulas: {(part, component):
    MACs}."""
    c, norm = convention, convention.norm_per_element
    macs: dict[tuple[str, str], int] = defaultdict(int)
    in_dim, tokens = config.in_channels, []
    for i, dim in enumerate(config.embed_dims):
        part, depth, sr = f"stage{i + 1}", config.depths[i], config.sr_ratios[i]
        kernel, stride = config.patch_sizes[i], config.strides[i]
        # ceil(side / S)
        height, width = [(side + 2 * (kernel // 2) - kernel) // stride + 1
                         for side in (height, width)]
        # N, N' = N / R, 4C
        n, reduced = height * width, (height // sr) * (width // sr)
        hidden = dim * config.mlp_ratios[i]
        tokens.append((n, dim))
        macs[part, "patch embed"] += n * dim * (kernel * kernel * in_dim + c.conv_bias)
        # patch-embed LN, stage LN, norm1 + norm2 per block
        macs[part, "norms"] += n * dim * norm * (2 + 2 * depth)
        macs[part, "q"] += depth * n * dim * dim
        macs[part, "kv"] += depth * reduced * dim * 2 * dim
        if sr > 1:
            # kernel = stride = sr
            macs[part, "sr conv"] += depth * reduced * dim * (sr * sr * dim + c.conv_bias)
            macs[part, "norms"] += depth * reduced * dim * norm
        macs[part, "attention"] += depth * 2 * n * reduced * dim * c.attention  # Q K^T and A V
        macs[part, "proj"] += depth * n * dim * dim
        macs[part, "fc1"] += depth * n * dim * hidden
        macs[part, "dwconv"] += depth * n * hidden * (3 * 3 + c.conv_bias)
        macs[part, "fc2"] += depth * n * hidden * dim
        in_dim = dim
    # decoder width C; all maps are upsampled to stage 1's N1 tokens
    width_c, (n1, _) = config.decoder_dim, tokens[0]
    macs["decoder", "decoder linears"] = sum(n * dim * width_c for n, dim in tokens)
    macs["decoder", "fuse conv"] = n1 * len(tokens) * width_c * width_c  # 1x1, 4C -> C, no bias
    macs["decoder", "BN"] = n1 * width_c * norm
    macs["decoder", "ReLU"] = n1 * width_c * c.relu
    macs["decoder", "classifier"] = n1 * config.num_classes * (width_c + c.conv_bias)
    return {key: value for key, value in macs.items() if value}


def count_params(model: nn.Module) -> dict[tuple[str, str], int]:
    """Parameters per (part, component)."""
    per_module: dict[str, int] = defaultdict(int)
    for name, parameter in model.named_parameters():
        per_module[name.rsplit(".", 1)[0]] += parameter.numel()  # weight and bias of one module
    return by_component(per_module)


class LinspaceOnCpu(TorchFunctionMode):
    """Inside ``with``: ``torch.linspace`` without a device makes a CPU tensor, whatever the default
    device.

    A mode (PyTorch's own hook for calls to torch functions, active only in its ``with`` block and
    thread) rather than a patch: ``torch.linspace`` itself stays untouched, for every other caller
    too."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.linspace:
            kwargs = {"device": "cpu", **kwargs}
        return func(*args, **kwargs)


def meta_model(name: str = "b0", num_classes: int = 150, **overrides) -> SegFormer:
    """A SegFormer whose tensors live on ``torch.device("meta")``: shapes only, built and run for
    free.

    The encoder reads its stochastic-depth rates with ``torch.linspace(...).tolist()``, which needs
    real numbers, so while the model is built linspace alone stays on the CPU (``LinspaceOnCpu``).
    """
    with torch.device("meta"), LinspaceOnCpu():
        return SegFormer.from_config(name, num_classes, **overrides)


def total(counts: dict, part: str | None = None) -> int:
    """Sum of a {(part, component): n} table, or of one part ("stage1"...; "encoder" for all four
    stages)."""
    if part == "encoder":
        return sum(v for (p, _), v in counts.items() if p != "decoder")
    return sum(v for (p, _), v in counts.items() if part in (None, p))
