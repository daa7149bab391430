"""Test-time BatchNorm adaptation (segformer_edu.adaptation, chapter 11)."""

import pytest
import torch
from torch import nn

from segformer_edu.adaptation import with_batchnorm_statistics_of
from segformer_edu.cnn import DeepLabV3Plus


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU()).eval()


def test_the_statistics_become_those_of_the_frames_and_the_model_is_untouched():
    torch.manual_seed(0)
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = 3 + 2 * torch.randn(16, 3, 5, 5)
    adapted = with_batchnorm_statistics_of(net, images, batch_size=8)
    features = net[0](images)  # (16, 4, 5, 5), what the BatchNorm sees
    norm = adapted[1]
    assert torch.allclose(norm.running_mean, features.mean((0, 2, 3)), atol=1e-5)
    # the average of the two batches' unbiased variances
    halves = features.split(8)
    expected_var = torch.stack([h.transpose(0, 1).flatten(1).var(1) for h in halves]).mean(0)
    assert torch.allclose(norm.running_var, expected_var, atol=1e-4)
    assert not adapted.training and not any(m.training for m in adapted.modules())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    # normalised with the frames' own statistics, the features are centred
    with torch.no_grad():
        assert adapted[1](features).mean().abs() < 1e-3 < net[1](features).mean().abs()


def test_adapting_the_cnn_changes_only_its_batchnorm_statistics():
    torch.manual_seed(0)
    cnn = DeepLabV3Plus.from_config(num_classes=11).eval()
    adapted = with_batchnorm_statistics_of(cnn, torch.randn(3, 3, 64, 64), batch_size=2)
    changed = {k for k, v in adapted.state_dict().items() if not torch.equal(v, cnn.state_dict()[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                           for k in changed)


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        with_batchnorm_statistics_of(small_net(), torch.randn(4, 3, 5, 5), batch_size=1)
    with pytest.raises(ValueError, match="Linear has no BatchNorm"):
        with_batchnorm_statistics_of(nn.Linear(2, 2), torch.randn(4, 2))
