"""Parameters and multiply-accumulates of SegFormer-B0 and the paper's CNN, DeepLabV3+ with
MobileNetV2 at output stride 8 (book chapter 11; the paper's Table 2), counted two ways.

    python scripts/cnn_cost.py            # writes book/results/cost_cnn_vs_segformer.json

1. mmcv's rules (``segformer_edu.flops.MMCV``), the ones behind the paper's "FLOPs", which are
   multiply-accumulates: conv k*k*C_in/groups per output (+1 for a bias), BatchNorm 2 and ReLU 1
   per element, SegFormer's attention products added by hand. The package's ``flops.count_macs``
   hooks SegFormer's modules; ``count_macs`` below passes it two extra rules that mmcv has and
   SegFormer never needs: ReLU6 (1 per element) and adaptive average pooling (1 per input element). On SegFormer it equals the
   package's count exactly (tests/test_cnn.py).
2. PyTorch's ``torch.utils.flop_counter.FlopCounterMode``, which counts the FLOPs (2 per MAC) of
   aten's convolutions and matrix products, attention included, and nothing else. Models run on
   the meta device: on CPU tensors this torch's fused attention kernel escapes the counter.

Counted at 512x512 (Table 2's ADE20K size) and 360x480 (CamVid's frames), with 150 classes (the
paper's) and 11 (CamVid's). Only the forward pass of inference counts: mmseg's ``get_flops`` runs
``forward_dummy``, which leaves the auxiliary head out, while its parameter count sums every
parameter of the model, the auxiliary head's included.
"""

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segformer_edu.cnn import NAME, DeepLabV3Plus
from segformer_edu.flops import MATMULS, MMCV, Convention, meta_model
from segformer_edu.flops import count_macs as package_count_macs

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
SIZES = ((512, 512), (360, 480))
CLASSES = (150, 11)
# quoted from the paper (Xie et al., 2021), Table 2, ADE20K at 512x512: params (M), "FLOPs" (G)
TABLE_2 = {"SegFormer-B0": (3.8, 8.4), "DeepLabV3+ / MobileNetV2": (15.4, 69.4)}


def count_macs(model: nn.Module, height: int, width: int, convention: Convention = MMCV,
               pooling: bool = True) -> dict[str, int]:
    """MACs per module of one forward pass (eval mode) of a ``height`` x ``width`` image: the
    package's rules, and two more."""
    rules = {nn.ReLU6: lambda module, args, output: output.numel() * convention.relu,
             nn.AdaptiveAvgPool2d: lambda module, args, output: args[0].numel() * pooling}
    return package_count_macs(model, height, width, convention, rules)


def flop_counter_macs(model: nn.Module, height: int, width: int) -> int:
    """FlopCounterMode's FLOPs of one forward pass, halved: multiply-accumulates."""
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.empty(1, model.config.in_channels, height, width, device=device))
    return counter.get_total_flops() // 2


def meta_cnn(num_classes: int) -> DeepLabV3Plus:
    with torch.device("meta"):
        return DeepLabV3Plus.from_config(NAME, num_classes)


def parameters(model: nn.Module) -> dict[str, int]:
    parts = {name: sum(p.numel() for p in child.parameters())
             for name, child in model.named_children() if child is not None}
    return {"total": sum(parts.values()), **parts}


def bn_elements(model: nn.Module, height: int, width: int) -> int:
    """MACs of the BatchNorms under mmcv's rule: what a count misses when its BatchNorms are
    SyncBatchNorm, which mmcv's counter (an exact-type table) has no rule for."""
    per_module = count_macs(model, height, width)
    return sum(v for name, v in per_module.items()
               if isinstance(model.get_submodule(name), nn.BatchNorm2d))


def costs(model: nn.Module, height: int, width: int, package: bool) -> dict:
    mmcv = total_of(count_macs(model, height, width))
    row = {"mmcv_rules": mmcv,
           "mmcv_rules_without_batchnorm": mmcv - bn_elements(model, height, width),
           "matmuls": total_of(count_macs(model, height, width, MATMULS, pooling=False)),
           "flop_counter_mode": flop_counter_macs(model, height, width)}
    if package:
        row["package_count_macs"] = total_of(package_count_macs(model, height, width))
    return row


def total_of(per_module: dict[str, int]) -> int:
    return sum(per_module.values())


def measure() -> dict:
    models = {}
    for classes in CLASSES:
        built = {"SegFormer-B0": meta_model("b0", classes),
                 "DeepLabV3+ / MobileNetV2": meta_cnn(classes)}
        for name, model in built.items():
            entry = models.setdefault(name, {})
            entry[f"{classes} classes"] = {
                "params": parameters(model),
                "macs": {f"{h}x{w}": costs(model, h, w, package=name == "SegFormer-B0")
                         for h, w in SIZES}}
    return {
        "table_2_quoted": {name: {"params_m": p, "gflops": g} for name, (p, g) in TABLE_2.items()},
        "table_2_source": "Xie et al., SegFormer (NeurIPS 2021), Table 2, ADE20K, 512x512; "
                          "'FLOPs' there are multiply-accumulates (mmcv's get_flops)",
        "models": models,
        "counters": {
            "mmcv_rules": "mmcv's get_model_complexity_info rules (segformer_edu.flops.MMCV): conv "
                          "k*k*C_in/groups MACs per output element + 1 for a bias, Linear C_in per "
                          "output element, BatchNorm/LayerNorm 2 and ReLU/ReLU6 1 per element, "
                          "adaptive average pooling 1 per input element, SegFormer's attention "
                          "products 2*N*N'*C per block; GELU, softmax, dropout, additions and "
                          "F.interpolate 0",
            "mmcv_rules_without_batchnorm": "the same without the BatchNorms (what mmcv's counter "
                                            "gives when they are SyncBatchNorm, as in mmseg's "
                                            "configs: it has no rule for that type)",
            "matmuls": "segformer_edu.flops.MATMULS: convs without bias, linears and attention "
                       "products only",
            "flop_counter_mode": "torch.utils.flop_counter.FlopCounterMode's FLOPs / 2, on the "
                                 "meta device: aten convolutions, matrix products and attention",
            "package_count_macs": "segformer_edu.flops.count_macs (SegFormer only)",
        },
        "forward_only": "inference forward pass; the CNN's auxiliary head does not run (mmseg's "
                        "forward_dummy), its parameters are in the totals (mmcv sums them all)",
        "torch": torch.__version__,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "cost_cnn_vs_segformer.json")
    args = parser.parse_args()
    result = measure()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, entry in result["models"].items():
        row = entry["150 classes"]
        macs = row["macs"]["512x512"]
        print(f"{name}: {row['params']['total'] / 1e6:.2f} M parameters; at 512x512, 150 classes: "
              f"{macs['mmcv_rules'] / 1e9:.2f} GMACs (mmcv's rules), "
              f"{macs['flop_counter_mode'] / 1e9:.2f} (FlopCounterMode / 2)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
