"""The paper's optimisation recipe: AdamW, head lr x10, linear warm-up then
poly decay (book chapter 8).

The official settings (mmseg ``configs/segformer``): AdamW lr 6e-5, betas (0.9, 0.999), weight decay
0.01, ``paramwise_cfg`` with lr x10 for the decode head and no decay on parameters named ``norm``
(see CUSTOM_KEYS); ``PolyLrUpdaterHook`` with power 1.0, min_lr 0,
a linear warm-up of 1500 iterations starting at warmup_ratio 1e-6 of the
lr, stepped every iteration.

The CNN baseline of chapter 11 trains with either this recipe or mmseg's for CNNs (SGD with momentum
0.9, weight decay 5e-4, poly power 0.9 down to min_lr 1e-4, no warm-up): ``build_optimizer``'s
``optimizer``, ``momentum`` and ``min_lr``.
"""

import torch
from torch import nn

from .convert import from_edu


# mmseg's ``paramwise_cfg`` in the official configs: substrings of the *official* parameter names.
# The longest key is tried first and the first match wins (mmcv's DefaultOptimizerConstructor).
# SegFormer has no ``pos_block``; ``norm`` catches every LayerNorm; ``head`` catches all of
# ``decode_head``, whose BatchNorm (``linear_fuse.bn``) and biases are therefore decayed,
# like every bias of the encoder.
CUSTOM_KEYS = {"pos_block": {"decay_mult": 0.0}, "norm": {"decay_mult": 0.0},
               "head": {"lr_mult": 10.0}}


def official_name(name: str) -> str:
    """Our parameter name in the official/mmseg layout
    (``encoder.stages.0.norm.weight`` -> ``backbone.norm1.weight``)."""
    return from_edu({name: torch.empty(0)}, "mmseg").popitem()[0]


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 head_lr_mult: float = 10.0) -> list[dict]:
    """AdamW groups as the official ``paramwise_cfg``:
    one group per (lr multiplier, decay multiplier).

    Three groups come out: the encoder's weights and biases (lr, decay), the encoder's LayerNorms
    (lr, no decay) and the whole decoder (``head_lr_mult`` x lr, decay). The decoder starts from
    scratch while the encoder may be ImageNet-pretrained, so it learns 10x faster.
    Another model (the CNN baseline) gets two groups: ``encoder.*`` (lr, decay) and every other
    parameter, its heads (``head_lr_mult`` x lr, decay), as the rule treats mmseg's CNNs, whose
    BatchNorms are named ``bn``, not ``norm``.
    """
    from .model import SegFormer

    if not isinstance(model, SegFormer):
        return heads_apart(model, lr, weight_decay, head_lr_mult)
    keys = dict(CUSTOM_KEYS, head={"lr_mult": head_lr_mult})
    # mmcv's order: longest first, then alphabetical
    ordered = sorted(sorted(keys), key=len, reverse=True)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        official = official_name(name)
        rule = next((keys[key] for key in ordered if key in official), {})
        groups.setdefault((rule.get("lr_mult", 1.0), rule.get("decay_mult", 1.0)), []).append(param)
    names = {(1.0, 1.0): "encoder", (1.0, 0.0): "encoder_norm", (head_lr_mult, 1.0): "decoder"}
    return [{"params": params, "name": names.get(key, f"lr_x{key[0]:g}_decay_x{key[1]:g}"),
             "lr": lr * key[0], "weight_decay": weight_decay * key[1]}
            for key, params in groups.items()]


def heads_apart(model: nn.Module, lr: float, weight_decay: float,
                head_lr_mult: float) -> list[dict]:
    """Two groups: the parameters of ``model.encoder`` and the rest (the heads)."""
    encoder = {id(param) for param in model.encoder.parameters()}
    trained = [param for param in model.parameters() if param.requires_grad]
    return [{"params": [p for p in trained if id(p) in encoder], "name": "encoder", "lr": lr,
             "weight_decay": weight_decay},
            {"params": [p for p in trained if id(p) not in encoder], "name": "decoder",
             "lr": lr * head_lr_mult, "weight_decay": weight_decay}]


def lr_factor(iteration: int, max_iters: int, warmup_iters: int = 1500, warmup_ratio: float = 1e-6,
              power: float = 1.0, min_ratio: float = 0.0) -> float:
    """lr / base_lr at 0-based ``iteration``: poly decay (1 - t/T)^p from 1 to ``min_ratio``,
    times a linear ramp from warmup_ratio to 1.

    As mmcv's ``PolyLrUpdaterHook`` with linear warm-up ((base_lr - min_lr) (1 - t/T)^p + min_lr,
    min_ratio = min_lr / base_lr): the ramp multiplies the decayed lr.
    """
    factor = (1.0 - min_ratio) * (1.0 - iteration / max_iters) ** power + min_ratio
    if iteration < warmup_iters:
        factor *= 1.0 - (1.0 - iteration / warmup_iters) * (1.0 - warmup_ratio)
    return factor


OPTIMIZERS = ("adamw", "sgd")


def build_optimizer(model: nn.Module, lr: float = 6e-5, weight_decay: float = 0.01,
                    head_lr_mult: float = 10.0, max_iters: int = 160_000, warmup_iters: int = 1500,
                    warmup_ratio: float = 1e-6, power: float = 1.0, optimizer: str = "adamw",
                    momentum: float = 0.9, min_lr: float = 0.0,
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (or SGD with ``momentum``) over ``param_groups`` and a per-iteration scheduler whose
    lr decays to ``min_lr`` in every group: call ``scheduler.step()`` after each step."""
    groups = param_groups(model, lr, weight_decay, head_lr_mult)
    if optimizer == "adamw":
        chosen = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    elif optimizer == "sgd":
        chosen = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    else:
        raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {optimizer!r}")

    def factor(group_lr: float):
        return lambda it: lr_factor(it, max_iters, warmup_iters, warmup_ratio, power,
                                    min_lr / group_lr)

    scheduler = torch.optim.lr_scheduler.LambdaLR(chosen, [factor(g["lr"]) for g in groups])
    return chosen, scheduler


def continue_schedule(optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LambdaLR, base_lrs: list[float],
                      weight_decays: list[float]) -> None:
    """Put a resumed run's settings into the optimizer and scheduler state it loaded, which carry
    the base lrs and decays the run started with: the new ``base_lrs`` and ``weight_decays`` (one
    per group), and each group's current lr from the (new) schedule at the iteration reached
    (``scheduler.last_epoch``), as LambdaLR computes it, so that the very next step uses it."""
    scheduler.base_lrs = list(base_lrs)
    for group, base_lr, decay, factor in zip(optimizer.param_groups, base_lrs, weight_decays,
                                             scheduler.lr_lambdas, strict=True):
        group["initial_lr"], group["weight_decay"] = base_lr, decay
        group["lr"] = base_lr * factor(scheduler.last_epoch)
