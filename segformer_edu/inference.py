"""Test-time protocols of the paper's tables (book chapters 8 and 10): whole image, sliding window,
and multi-scale + flip ("MS" rows), as mmseg's ``EncoderDecoder`` runs them.

* whole image (ADE20K): the model sees the whole (resized) image once;
* sliding window (Cityscapes, 1024x1024 windows over 1024x2048 frames): windows of ``crop_size``
  every ``stride``, the last one aligned to the image's edge; logits averaged where windows overlap;
* multi-scale + flip: the image resized by each ratio in ``scales`` (and mirrored if ``flip``), each
  view run by one of the above, its softmax resized back and un-mirrored, the softmaxes averaged.

Every protocol returns scores at the input's full resolution, (B, K, H, W). ``predict_labels`` is
the one way from images to class indices: ``predict``, ``evaluation.evaluate``, the command line
``segformer_edu.predict``, the book's figures and assets all go through it.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize as mmseg's ``resize`` (align_corners=False); a no-op at the same size."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def whole_logits(model: nn.Module, images: Tensor) -> Tensor:
    """(B, 3, H, W) -> logits (B, K, H, W): one forward pass, upsampled from 1/4 resolution."""
    return resize(model(images), images.shape[2:])


def window_starts(side: int, crop: int, stride: int) -> list[int]:
    """mmseg's grid along one side: starts every ``stride``; the last window is moved
    back to end at the edge."""
    count = max(side - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, side) - crop, 0) for i in range(count)]


def slide_logits(model: nn.Module, images: Tensor, crop_size: tuple[int, int],
                 stride: tuple[int, int]) -> Tensor:
    """(B, 3, H, W) -> logits (B, K, H, W) averaged over sliding windows
    (mmseg ``slide_inference``)."""
    (height, width), (crop_h, crop_w) = images.shape[2:], crop_size
    total, count = None, images.new_zeros((1, 1, height, width))
    for top in window_starts(height, crop_h, stride[0]):
        for left in window_starts(width, crop_w, stride[1]):
            bottom, right = min(top + crop_h, height), min(left + crop_w, width)
            logits = whole_logits(model, images[:, :, top:bottom, left:right])  # (B, K, h, w)
            if total is None:
                total = images.new_zeros((images.shape[0], logits.shape[1], height, width))
            total[:, :, top:bottom, left:right] += logits
            count[:, :, top:bottom, left:right] += 1
    return total / count


def segment_scores(model: nn.Module, images: Tensor, mode: str = "whole",
                   crop_size: tuple[int, int] | None = None, stride: tuple[int, int] | None = None,
                   scales: tuple[float, ...] = (1.0,), flip: bool = False) -> Tensor:
    """Scores (B, K, H, W) under a test-time protocol: logits for one view, averaged softmax for
    several (mmseg ``aug_test``). ``scales`` are ratios of the input's size."""
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', not {mode!r}")
    if mode == "slide" and not crop_size:
        raise ValueError("mode='slide' needs crop_size=(h, w) (and stride, default: crop_size)")
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive ratios of the input size, got {scales!r}")

    def run(view: Tensor) -> Tensor:
        if mode == "slide":
            return slide_logits(model, view, tuple(crop_size), tuple(stride or crop_size))
        return whole_logits(model, view)

    height, width = images.shape[2:]
    mirrors = (False, True) if flip else (False,)
    views = [(ratio, mirrored) for ratio in scales for mirrored in mirrors]
    if len(views) == 1 and scales[0] == 1.0:
        return run(images)
    total = 0.0
    for ratio, mirrored in views:
        # as mmcv's rescale
        view = resize(images, (int(height * ratio + 0.5), int(width * ratio + 0.5)))
        view = view.flip(3) if mirrored else view
        probs = resize(run(view), (height, width)).softmax(dim=1)
        total = total + (probs.flip(3) if mirrored else probs)
    return total / len(views)


# full-size scores of a few classes at a time: at most this many bytes
SCORE_CHUNK_BYTES = 1 << 28


@torch.no_grad()
def predict_labels(model: nn.Module, images: Tensor, size: tuple[int, int] | None = None,
                   dtype: torch.dtype | None = None, protocol: dict | None = None) -> Tensor:
    """Normalised images (B, 3, h, w) -> class indices (B, H, W), torch.long: the logits of one
    pass (or the scores of ``protocol``, keyword arguments of ``segment_scores``) resized
    bilinearly to ``size`` (default: the input's), then argmax. ``dtype``: autocast (None:
    float32). The model's mode (eval or train) is the caller's."""
    with torch.autocast(images.device.type, dtype=dtype or torch.float32,
                        enabled=dtype is not None):
        scores = model(images) if protocol is None else segment_scores(model, images, **protocol)
    return upsampled_argmax(scores, tuple(size or images.shape[2:]))


def upsampled_argmax(scores: Tensor, size: tuple[int, int]) -> Tensor:
    """argmax over K of ``scores`` (B, K, h, w) resized bilinearly to ``size`` (H, W): (B, H, W)
    long. A few classes at a time, so that a 4000x3000 photo never holds the full-size scores of
    all its classes at once; the same labels as one resize and argmax (ties go to the lower class
    in both)."""
    height, width = size
    chunk = max(1, SCORE_CHUNK_BYTES // (4 * scores.shape[0] * height * width))
    best = labels = None
    for start in range(0, scores.shape[1], chunk):
        part = resize(scores[:, start:start + chunk].float(), size)  # (B, chunk, H, W)
        top, where = part.max(1)  # (B, H, W) each
        if best is None:
            best, labels = top, where
        else:
            better = top > best
            best = torch.where(better, top, best)
            labels = torch.where(better, where + start, labels)
    return labels


class Segmenter(nn.Module):
    """A segmentation model (SegFormer, the CNN baseline): ``forward`` gives logits at a fraction
    of the input's size, ``check_input`` refuses images it cannot take, ``predict`` gives class
    indices at the input's size."""

    def check_input(self, images: Tensor) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, images: Tensor, mode: str = "whole", crop_size: tuple[int, int] | None = None,
                stride: tuple[int, int] | None = None, scales: tuple[float, ...] = (1.0,),
                flip: bool = False) -> Tensor:
        """Class indices (B, H, W), torch.long, at the input's full resolution (eval mode, no
        gradients).

        ``mode="whole"`` runs the image at once (the paper's ADE20K protocol); ``mode="slide"`` runs
        windows of ``crop_size`` every ``stride`` (Cityscapes: 1024x1024, stride 768); ``scales``
        (ratios) and ``flip`` average the softmax over resized and mirrored views (the "MS" rows).
        """
        # before any resizing, so that the message names the caller's shape
        self.check_input(images)
        protocol = {"mode": mode, "crop_size": crop_size, "stride": stride, "scales": scales,
                    "flip": flip}
        was_training = self.training
        self.eval()
        try:
            return predict_labels(self, images, protocol=protocol)
        finally:
            self.train(was_training)
