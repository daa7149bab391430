"""The paper's optimisation recipe: AdamW, head lr x10, linear warm-up then poly decay (book chapter 8).

The official settings (mmseg ``configs/segformer``): AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01,
``paramwise_cfg`` with lr x10 for the decode head and no decay on norms; ``PolyLrUpdaterHook`` with power 1.0,
min_lr 0, a linear warm-up of 1500 iterations starting at warmup_ratio 1e-6 of the lr, stepped every iteration.
"""

import torch
from torch import nn


def param_groups(model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float = 10.0) -> list[dict]:
    """Four AdamW groups: {encoder, decoder} x {decayed weights, norms and biases without decay}.

    The decoder (the paper's All-MLP head) starts from scratch while the encoder may be ImageNet-pretrained,
    so it learns 10x faster. Norm scales and biases get no decay: shrinking them towards 0 only hurts.
    """
    norm_types = (nn.LayerNorm, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)
    no_decay = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    groups = {(part, decay): [] for part in ("encoder", "decoder") for decay in (True, False)}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "decoder" if name.split(".")[0] == "decoder" else "encoder"
        decay = id(param) not in no_decay and not name.endswith(".bias")
        groups[part, decay].append(param)
    return [
        {"params": params, "name": f"{part}{'' if decay else '_no_decay'}",
         "lr": lr * (head_lr_mult if part == "decoder" else 1.0), "weight_decay": weight_decay if decay else 0.0}
        for (part, decay), params in groups.items() if params
    ]


def lr_factor(iteration: int, max_iters: int, warmup_iters: int = 1500, warmup_ratio: float = 1e-6,
              power: float = 1.0) -> float:
    """lr / base_lr at 0-based ``iteration``: poly decay (1 - t/T)^p, times a linear ramp from warmup_ratio to 1.

    As mmcv's ``PolyLrUpdaterHook`` with linear warm-up and min_lr 0: the ramp multiplies the decayed lr.
    """
    factor = (1.0 - iteration / max_iters) ** power
    if iteration < warmup_iters:
        factor *= 1.0 - (1.0 - iteration / warmup_iters) * (1.0 - warmup_ratio)
    return factor


def build_optimizer(model: nn.Module, lr: float = 6e-5, weight_decay: float = 0.01, head_lr_mult: float = 10.0,
                    max_iters: int = 160_000, warmup_iters: int = 1500, warmup_ratio: float = 1e-6,
                    power: float = 1.0) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``param_groups`` and a per-iteration scheduler: call ``scheduler.step()`` after each step."""
    optimizer = torch.optim.AdamW(param_groups(model, lr, weight_decay, head_lr_mult), lr=lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, max_iters, warmup_iters, warmup_ratio, power))
    return optimizer, scheduler
