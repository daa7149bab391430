"""The 16 corruptions of the paper's robustness test (Sec. 4.4, Table 5; book chapter 11).

The paper corrupts Cityscapes' validation frames as Kamann & Rother (CVPR 2020) did, with the
ImageNet-C corruptions of Hendrycks & Dietterich (ICLR 2019) in four groups, and reports mIoU per
corruption averaged over its severities. The corruptions themselves come from
``imagecorruptions-imaug`` (the maintained fork of Michaelis et al.'s ``imagecorruptions``), not
written again here; this module fixes which ones, at which severities, and makes every random draw
depend on a seed only.

Severities: 1-5, except the noise group, which stops at 3, as the paper's appendix describes its
protocol.
"""

import numpy as np

GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("motion_blur", "defocus_blur", "glass_blur", "gaussian_blur"),
    "noise": ("gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"),
    "digital": ("brightness", "contrast", "saturate", "jpeg_compression"),
    "weather": ("snow", "spatter", "fog", "frost"),
}
SEVERITIES: dict[str, tuple[int, ...]] = {
    "blur": (1, 2, 3, 4, 5), "noise": (1, 2, 3), "digital": (1, 2, 3, 4, 5),
    "weather": (1, 2, 3, 4, 5)}
CORRUPTIONS = tuple(name for names in GROUPS.values() for name in names)
GROUP_OF = {name: group for group, names in GROUPS.items() for name in names}
# these two draw from generators of their own, seeded through an argument; the others draw from
# numpy's global generator
SEED_ARGUMENT = ("glass_blur", "impulse_noise")
MIN_SIDE = 32  # imagecorruptions refuses smaller images


def severities(name: str) -> tuple[int, ...]:
    return SEVERITIES[GROUP_OF[check_name(name)]]


def check_name(name: str) -> str:
    if name not in GROUP_OF:
        raise ValueError(f"unknown corruption {name!r}; the paper's 16: {', '.join(CORRUPTIONS)}")
    return name


def frame_seed(seed: int, name: str, severity: int, index: int) -> int:
    """The seed of frame ``index`` under (``name``, ``severity``) in a run seeded ``seed``:
    every frame and setting draws its own, reproducible randomness."""
    entropy = [seed, CORRUPTIONS.index(check_name(name)), severity, index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def corrupt(frame: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 RGB, H, W >= 32, corrupted by ``name`` at ``severity``: the same
    (H, W, 3) uint8 for the same seed. numpy's global generator is seeded for the call and given
    back its state afterwards."""
    from imagecorruptions import corrupt as imagecorruptions_corrupt

    if severity not in severities(name):
        raise ValueError(f"{name} has severities {severities(name)}, not {severity!r}")
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3) of uint8, got {frame.dtype} "
                         f"{frame.shape}")
    if min(frame.shape[:2]) < MIN_SIDE:
        raise ValueError(f"frames must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got "
                         f"{frame.shape[0]}x{frame.shape[1]}")
    extra = {"seed": seed} if name in SEED_ARGUMENT else {}
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return imagecorruptions_corrupt(frame, severity=severity, corruption_name=name, **extra)
    finally:
        np.random.set_state(state)


def corrupt_frames(dataset, indices: list[int], name: str, severity: int, seed: int) -> list:
    """(corrupted image, label) for the frames ``indices`` of ``dataset`` (its ``load``: an RGB
    frame (H, W, 3) uint8 and its label): the frames scripts/camvid_robustness.py tested, each
    seeded by ``frame_seed``, so the same pixels wherever they are made."""
    pairs = []
    for index in indices:
        image, label = dataset.load(index)
        frame_rng = frame_seed(seed, name, severity, index)
        pairs.append((corrupt(image, name, severity, frame_rng), label))
    return pairs


def versions() -> dict[str, str]:
    """The versions that fix what the corruptions compute: the package and what it calls."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("imagecorruptions-imaug", "numpy", "opencv-python-headless", "opencv-python",
                 "scikit-image", "scipy", "numba", "pillow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
