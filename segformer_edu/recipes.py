"""The book's GPU run, as data (book chapter 8): the one source that chapter 8's Colab cells,
``scripts/gpu_camvid_b0.sh`` and the rehearsal (``segformer_edu.rehearse``) read.

A recipe is a dict of ``TrainConfig`` fields. ``gpu-camvid`` is SegFormer-B0 on CamVid's whole
native frames from NVIDIA's ImageNet encoder, at the paper's recipe (Sec. 4.1: AdamW, lr 6e-5, head
x10, poly, 1500 warm-up iterations; batch 16 as 8 GPUs x 2). ``from_scratch=True`` changes two
settings, no more: random initial weights, and the learning rate they need (chapter 8's sweep:
6e-5 reached 21.6 % mIoU in 300 iterations from random weights, 1e-3 28.8 %), so that the pair
measures what pretraining buys.

    python -m segformer_edu.recipes gpu-camvid                  # the training flags, on one line
    python -m segformer_edu.recipes gpu-camvid --from-scratch
    python -m segformer_edu.recipes gpu-camvid --run-name   # its folder name: camvid_b0_pretrained
"""

import shlex
import sys

from . import cli
from .system import available_cpus

RECIPES = {
    # CamVid frames are 480x360: the resize target is the native size, the random ratio spans
    # 240x180 to 960x720, and the crop is a whole native frame (padded with the ignore label below
    # ratio 1). 367 training frames: 20,000 iterations of 16 are ~870 epochs, room for the poly
    # schedule to anneal to 0.
    "gpu-camvid": dict(dataset="camvid", model="b0", pretrained="nvidia/mit-b0",
                       crop_size=(360, 480), scale=(480, 360), ratio_range=(0.5, 2.0),
                       batch_size=16, max_iters=20_000, lr=6e-5, head_lr_mult=10.0,
                       warmup_iters=1500, val_interval=1000, log_interval=50, test=True,
                       amp="auto"),
}
FROM_SCRATCH = dict(pretrained=None, lr=1e-3)  # the sweep's rate for random weights
# the folder names chapter 8 and the script give the two runs
RUN_NAMES = {False: "camvid_b0_pretrained", True: "camvid_b0_scratch"}


def recipe(name: str = "gpu-camvid", from_scratch: bool = False) -> dict:
    """The ``TrainConfig`` fields of recipe ``name``, with one data-loading process per core of
    this machine (the loader, not the GPU, sets the pace on a 2-core Colab)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: one of {', '.join(RECIPES)}")
    settings = RECIPES[name] | {"num_workers": available_cpus()}
    return settings | FROM_SCRATCH if from_scratch else settings


def train_flags(settings: dict) -> list[str]:
    """``settings`` as ``python -m segformer_edu.train`` flags: ``--crop-size 360 480``, ``--test``;
    a None or False value is left to the trainer's default."""
    flags = []
    for key, value in settings.items():
        if value is None or value is False:
            continue
        flags.append("--" + key.replace("_", "-"))
        if value is not True:
            flags += [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
    return flags


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m segformer_edu.recipes",
                                   description="print a recipe's training flags")
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--from-scratch", action="store_true",
                        help="random initial weights (and their learning rate)")
    parser.add_argument("--run-name", action="store_true",
                        help="print the run's folder name instead (chapter 8's)")
    args = parser.parse_args(argv)
    if args.run_name:
        print(RUN_NAMES[args.from_scratch])
    else:
        print(shlex.join(train_flags(recipe(args.recipe, args.from_scratch))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
