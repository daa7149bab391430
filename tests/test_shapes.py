import math

import pytest
import torch

from segformer_edu import SegFormer


@pytest.mark.parametrize("height, width", [(32, 32), (64, 96), (250, 333), (500, 500)])
def test_stage_shapes_for_any_size(height, width):
    model = SegFormer.from_config("b0", num_classes=7).eval()
    images = torch.randn(1, 3, height, width)
    features = model.encoder(images)
    side_h, side_w = height, width
    for feature, dim, stride in zip(features, model.config.embed_dims, model.config.strides):
        side_h, side_w = math.ceil(side_h / stride), math.ceil(side_w / stride)
        assert feature.shape == (1, dim, side_h, side_w)
    assert model(images).shape == (1, 7, math.ceil(height / 4), math.ceil(width / 4))
