"""Test-time protocols (inference.py) against independent re-implementations written out here."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segformer_edu import SegFormer
from segformer_edu.inference import segment_scores, window_starts


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SegFormer.from_config("b0", num_classes=5).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 70, 101, generator=torch.Generator().manual_seed(1))


def reference_slide(model, images, crop, stride):
    """Sliding windows written the long way: numpy window boxes, a per-pixel list of window logits, their mean."""
    height, width = images.shape[2:]
    boxes = []
    for y in range(0, max(height - crop[0], 0) + stride[0], stride[0]):
        for x in range(0, max(width - crop[1], 0) + stride[1], stride[1]):
            y0 = int(np.clip(y, 0, max(height - crop[0], 0)))  # a window past the edge is pulled back to it
            x0 = int(np.clip(x, 0, max(width - crop[1], 0)))
            boxes.append((y0, min(y0 + crop[0], height), x0, min(x0 + crop[1], width)))
    sums = torch.zeros(images.shape[0], 5, height, width, dtype=torch.float64)
    hits = torch.zeros(height, width, dtype=torch.float64)
    with torch.no_grad():
        for y0, y1, x0, x1 in boxes:
            window = images[:, :, y0:y1, x0:x1]
            logits = F.interpolate(model(window), size=window.shape[2:], mode="bilinear", align_corners=False)
            sums[:, :, y0:y1, x0:x1] += logits.double()
            hits[y0:y1, x0:x1] += 1
    assert hits.min() > 0
    return (sums / hits).float(), len(boxes)


def test_window_starts_end_at_the_edge():
    assert window_starts(70, 32, 24) == [0, 24, 38]  # the last window moved back to end at 70
    assert window_starts(64, 32, 32) == [0, 32]
    assert window_starts(20, 32, 16) == [0]  # a crop larger than the image: one window, the image


@pytest.mark.parametrize("crop, stride", [((32, 48), (24, 32)), ((40, 40), (40, 40)), ((64, 96), (20, 30))])
def test_slide_matches_an_independent_implementation(model, images, crop, stride):
    expected, windows = reference_slide(model, images, crop, stride)
    with torch.no_grad():
        scores = segment_scores(model, images, mode="slide", crop_size=crop, stride=stride)
    assert windows > 1
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_slide_with_a_crop_that_covers_the_image_is_whole_image(model, images):
    whole = model.predict(images)
    assert torch.equal(model.predict(images, mode="slide", crop_size=(128, 128), stride=(64, 64)), whole)
    with torch.no_grad():
        torch.testing.assert_close(segment_scores(model, images, "slide", crop_size=(70, 101)),
                                   segment_scores(model, images))


def test_multi_scale_flip_averages_softmax_like_mmseg_aug_test(model, images):
    scales = (0.75, 1.0, 1.5)
    views = []
    with torch.no_grad():
        for ratio in scales:
            size = (int(np.floor(70 * ratio + 0.5)), int(np.floor(101 * ratio + 0.5)))  # mmcv: half up, 52.5 -> 53
            resized = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            for mirror in (False, True):
                view = torch.flip(resized, dims=[3]) if mirror else resized
                logits = F.interpolate(model(view), size=size, mode="bilinear", align_corners=False)
                logits = F.interpolate(logits, size=(70, 101), mode="bilinear", align_corners=False)
                probs = F.softmax(logits, dim=1)
                views.append(torch.flip(probs, dims=[3]) if mirror else probs)
        expected = torch.stack(views).mean(0)
        scores = segment_scores(model, images, scales=scales, flip=True)
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(model.predict(images, scales=scales, flip=True), expected.argmax(1))
    assert scores.sum(1).sub(1).abs().max() < 1e-5  # an average of probabilities


def test_flip_alone_is_the_mirror_average(model, images):
    with torch.no_grad():
        plain = segment_scores(model, images).softmax(1)
        mirrored = segment_scores(model, images.flip(3)).softmax(1).flip(3)
        torch.testing.assert_close(segment_scores(model, images, flip=True), (plain + mirrored) / 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="sliding"), "mode must be 'whole' or 'slide'"),
    (dict(mode="slide"), "needs crop_size"),
    (dict(scales=(0.0, 1.0)), "scales must be positive"),
])
def test_bad_protocol_arguments_say_what_is_expected(model, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.predict(images, **kwargs)


def test_evaluate_with_a_protocol(model):
    """evaluation.evaluate runs a protocol through inference.segment_scores: a window covering the image is one pass,
    and the metrics are those of the plain evaluation; flips change them."""
    from segformer_edu.evaluation import evaluate

    generator = torch.Generator().manual_seed(5)
    frames = [(torch.randn(3, 64, 96, generator=generator), torch.randint(0, 5, (64, 96), generator=generator))
              for _ in range(3)]
    cpu = torch.device("cpu")
    with torch.no_grad():
        plain = evaluate(model, frames, 5, cpu)
        covering = evaluate(model, frames, 5, cpu, protocol={"mode": "slide", "crop_size": (64, 96)})
        flipped = evaluate(model, frames, 5, cpu, protocol={"flip": True})
    assert covering["miou"] == plain["miou"] and covering["iou"] == plain["iou"]
    assert flipped["iou"] != plain["iou"]
    assert plain["model_seconds"] > 0
