import torch
from torch import nn

from segformer_edu import SegFormer
from segformer_edu.erf import effective_receptive_field, mass_radius


def test_single_conv_erf_is_its_normalised_kernel():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
    erf = effective_receptive_field(conv, torch.randn(2, 3, 9, 9))
    # a linear map's input gradient is its kernel: |w| summed over input channels, at the 3x3 around the centre
    expected = torch.zeros(9, 9)
    expected[3:6, 3:6] = conv.weight[0].detach().abs().sum(0)
    torch.testing.assert_close(erf, expected / expected.sum())


def test_stacked_convs_grow_the_support_and_erf_sums_to_one():
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)])
    erf = effective_receptive_field(net, torch.randn(2, 3, 15, 15))
    support = (erf > 0).nonzero()
    assert support.min(0).values.tolist() == [4, 4] and support.max(0).values.tolist() == [10, 10]  # 7x7
    torch.testing.assert_close(erf.sum(), torch.tensor(1.0))


def test_direction_picks_channels():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    images = torch.randn(1, 1, 5, 5)
    # the channel sum of (x, -x) is 0: no gradient at all, so the normalised ERF is all zeros
    assert effective_receptive_field(conv, images).abs().sum() == 0
    assert effective_receptive_field(conv, images, normalise=False).abs().sum() == 0
    erf = effective_receptive_field(conv, images, direction=torch.tensor([1.0, 0.0]))
    assert erf[2, 2] == 1 and erf.sum() == 1


def test_mass_radius():
    erf = torch.zeros(11, 11)
    erf[5, 5] = 0.5
    erf[5, 8] = 0.5  # half the mass 3 pixels to the right of the centre
    assert mass_radius(erf, 0.5, centre=(5, 5)) == 0
    assert mass_radius(erf, 0.9, centre=(5, 5)) == 3
    assert mass_radius(erf, 0.9) == 1.5  # around the centre of mass (5, 6.5)


def test_segformer_stage_erf_is_a_distribution_over_the_image():
    torch.manual_seed(0)
    model = SegFormer.from_config("b0", num_classes=3).eval()
    erf = effective_receptive_field(lambda x: model.encoder(x)[0], torch.randn(1, 3, 64, 64),
                                    direction=torch.randn(32))
    assert erf.shape == (64, 64)
    torch.testing.assert_close(erf.sum(), torch.tensor(1.0))
    assert (erf > 0).float().mean() > 0.9  # attention reaches (almost) every pixel, unlike a conv stack
