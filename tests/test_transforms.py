"""The mmseg training and test pipelines: shapes, padding, nearest labels, flips, cat_max_ratio, colour, seeding."""

import warnings

import matplotlib.colors
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from segformer_edu.transforms import (EvalTransform, TrainTransform, denormalize, hsv_to_rgb, normalize,
                                      photometric_distortion, rescale_size, resize_image, resize_label,
                                      rgb_to_hsv)


def sample(height=48, width=64, seed=0):
    """A random image and a label of 5 vertical stripes of classes 0..4 (H, W)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = (np.arange(width) * 5 // width)[None].repeat(height, 0).astype(np.uint8)
    return image, label


def test_rescale_size_is_mmcvs_keep_ratio_rule():
    assert rescale_size(480, 360, (2048, 512)) == (683, 512)  # the short side reaches 512 first
    assert rescale_size(2000, 500, (1024, 512)) == (1024, 256)  # here the long side binds
    assert rescale_size(480, 360, (960, 720)) == (960, 720)


def test_train_output_shapes_and_types():
    image, label = sample()
    x, y = TrainTransform(crop_size=(32, 40), scale=(128, 96), seed=0)(Image.fromarray(image), Image.fromarray(label))
    assert x.shape == (3, 32, 40) and x.dtype == torch.float32
    assert y.shape == (32, 40) and y.dtype == torch.long


def test_small_images_are_padded_with_zero_and_ignore():
    image, label = sample()  # 64x48 scaled by 0.5 -> 32x24, smaller than the 40x32 crop
    x, y = TrainTransform(crop_size=(32, 40), scale=(64, 48), ratio_range=(0.5, 0.5), seed=0)(image, label)
    assert (y[24:] == 255).all() and (y[:, 32:] == 255).all() and (y[:24, :32] != 255).all()
    assert (x[:, 24:] == 0).all() and (x[:, :, 32:] == 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_labels_are_resized_by_nearest_neighbour(seed):
    image, label = sample()
    label[:5] = 255  # an ignore band must stay 255, never blend with its neighbours
    transform = TrainTransform(crop_size=(40, 40), scale=(64, 48), ratio_range=(0.7, 1.9), seed=seed)
    _, y = transform(image, label)
    assert set(y.unique().tolist()) <= set(range(5)) | {255}


@pytest.mark.parametrize("seed", range(6))
def test_image_and_label_are_cropped_and_flipped_together(seed):
    image, label = sample()
    image[..., 0] = label * 50  # the red channel encodes the class, so the label can be read back from the image
    transform = TrainTransform(crop_size=(30, 30), scale=(64, 48), ratio_range=(1.0, 1.0), cat_max_ratio=1.0,
                               photometric=False, seed=seed)
    x, y = transform(image, label)
    assert torch.equal(torch.from_numpy(denormalize(x)[..., 0].astype(np.int64)), y * 50)


def test_flip_mirrors_image_and_label():
    image, label = sample()
    transform = TrainTransform(crop_size=(48, 64), scale=(64, 48), ratio_range=(1.0, 1.0), flip_prob=1.0,
                               photometric=False, seed=0)
    x, y = transform(image, label)
    assert np.array_equal(y.numpy(), label[:, ::-1]) and np.array_equal(denormalize(x), image[:, ::-1])


def max_class_share(label: torch.Tensor) -> float:
    counts = torch.bincount(label[label != 255].flatten())
    return (counts.max() / counts.sum()).item()


def test_cat_max_ratio_redraws_crops_dominated_by_one_class():
    image, label = sample(20, 100)  # stripes 20 pixels wide: a 20x20 crop is one class unless it straddles two
    shares = {}
    for ratio in (0.75, 1.0):  # 1.0 switches the rule off
        make = lambda seed: TrainTransform(crop_size=(20, 20), scale=(100, 20), ratio_range=(1.0, 1.0),  # noqa: E731
                                           cat_max_ratio=ratio, photometric=False, seed=seed)
        shares[ratio] = [max_class_share(make(seed)(image, label)[1]) for seed in range(40)]
    assert sum(share < 0.75 for share in shares[0.75]) >= 38  # fails only if 11 draws in a row fail (p ~ 0.55^11)
    assert sum(share < 0.75 for share in shares[1.0]) <= 28  # ~45% of windows pass by chance


def test_same_seed_same_result_and_global_generator_when_unseeded():
    image, label = sample()
    make = lambda seed: TrainTransform(crop_size=(32, 32), scale=(128, 96), seed=seed)  # noqa: E731
    first, again, other = make(0)(image, label), make(0)(image, label), make(1)(image, label)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    np.random.seed(3)  # unseeded: numpy's global state, as mmseg, so np.random.seed / set_state reproduce a run
    a = make(None)(image, label)
    np.random.seed(3)
    b = make(None)(image, label)
    assert torch.equal(a[0], b[0])


class SameSample(Dataset):
    """One image returned again and again: anything that differs between outputs comes from the augmentation."""

    def __init__(self, transform):
        self.image, self.label = sample()
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.transform(self.image, self.label)[0]


@pytest.mark.parametrize("seed", [0, None])
def test_dataloader_workers_draw_different_augmentations(seed):
    dataset = SameSample(TrainTransform(crop_size=(32, 32), scale=(128, 96), seed=seed))
    loader = DataLoader(dataset, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0))
    first, second = list(loader)[:2]  # index 0 from worker 0, index 1 from worker 1: each worker's first draw
    assert not torch.equal(first, second)


def test_hsv_matches_opencv_units():
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [0, 0, 0]]], np.uint8)
    assert rgb_to_hsv(pixels).tolist() == [[[0, 255, 255], [60, 255, 255], [120, 255, 255], [0, 0, 128], [0, 0, 0]]]
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    reference = matplotlib.colors.rgb_to_hsv(image / 255) * [180, 255, 255]
    hsv = rgb_to_hsv(image).astype(float)
    hue_error = np.abs((hsv[..., 0] - reference[..., 0] + 90) % 180 - 90)  # hue is circular
    assert hue_error.max() <= 0.5 + 1e-6 and np.abs(hsv[..., 1:] - reference[..., 1:]).max() <= 0.5 + 1e-6
    assert np.abs(hsv_to_rgb(rgb_to_hsv(image)).astype(int) - image).max() <= 6  # hue in 2-degree steps, as OpenCV


def test_photometric_distortion_keeps_shape_and_type_and_changes_colours():
    image, _ = sample()
    outputs = [photometric_distortion(image, np.random.default_rng(seed)) for seed in range(4)]
    assert all(out.shape == image.shape and out.dtype == np.uint8 for out in outputs)
    assert any(not np.array_equal(out, image) for out in outputs)


def test_eval_transform_resizes_the_image_only_and_denormalize_inverts_normalize():
    image, label = sample()
    x, y = EvalTransform(scale=(32, 24), size_divisor=None)(Image.fromarray(image), label)
    assert x.shape == (3, 24, 32) and torch.equal(y, torch.from_numpy(label.astype(np.int64)))
    x, y = EvalTransform(scale=(2048, 512))(np.zeros((360, 480, 3), np.uint8), np.zeros((360, 480), np.uint8))
    assert x.shape == (3, 512, 704) and y.shape == (360, 480)  # 683x512, then sides rounded up to multiples of 32
    x, _ = EvalTransform()(image, label)
    assert torch.allclose(x, normalize(image)) and np.array_equal(denormalize(x), image)
    assert torch.allclose(x.mean((1, 2)), (torch.tensor(image / 255.0).float().mean((0, 1)) - torch.tensor(
        [0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]), atol=1e-5)


def test_read_only_arrays_are_copied_without_a_warning():
    image = np.asarray(Image.fromarray(np.full((6, 8, 3), 200, dtype=np.uint8)))  # PIL's memory: read-only
    label = np.asarray(Image.fromarray(np.zeros((6, 8), dtype=np.uint8)))
    assert not image.flags.writeable and not label.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "The given NumPy array is not writable" would raise
        assert resize_image(image, (3, 4)).shape == (3, 4, 3)
        assert resize_label(label, (3, 4)).shape == (3, 4)
        assert normalize(image).shape == (3, 6, 8)
