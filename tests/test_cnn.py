"""DeepLabV3+ with MobileNetV2 at output stride 8 (segformer_edu.cnn) against mmseg's config and the
paper's Table 2, and its interface beside SegFormer's."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from segformer_edu import SegFormer
from segformer_edu.cnn import NAME, DeepLabV3Plus, DeepLabV3PlusConfig, InvertedResidual
from segformer_edu.flops import MATMULS, count_macs, meta_model

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cnn_cost", ROOT / "scripts" / "cnn_cost.py")
cnn_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cnn_cost)

# mmseg configs/mobilenet_v2/deeplabv3plus_m-v2-d8_512x512_160k_ade20k.py
STRIDES, DILATIONS = (1, 2, 2, 1, 1, 1, 1), (1, 1, 1, 2, 2, 4, 4)
BLOCKS, CHANNELS = (1, 2, 3, 4, 3, 3, 1), (16, 24, 32, 64, 96, 160, 320)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DeepLabV3Plus.from_config(num_classes=11).eval()


def depthwise(block: InvertedResidual) -> nn.Conv2d:
    return next(m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)


def test_each_layer_strides_and_dilates_its_first_block_as_the_config():
    encoder = DeepLabV3Plus.from_config(num_classes=11).encoder
    assert encoder.stem[0].stride == (2, 2) and isinstance(encoder.stem[2], nn.ReLU6)
    settings = zip(encoder.layers, STRIDES, DILATIONS, BLOCKS, CHANNELS)
    for layer, stride, dilation, blocks, channels in settings:
        assert len(layer) == blocks
        for index, block in enumerate(layer):
            conv = depthwise(block)
            expected = (stride, dilation) if index == 0 else (1, 1)
            assert (conv.stride[0], conv.dilation[0], conv.padding[0]) == (*expected, expected[1])
            assert block.conv[-1][0].out_channels == channels
            assert isinstance(block.conv[-1][-1], nn.BatchNorm2d)  # linear: no activation


@pytest.mark.parametrize("height, width", [(512, 512), (360, 480), (33, 47), (1, 1)])
def test_logits_at_a_quarter_and_features_at_strides_4_and_8(model, height, width):
    images = torch.randn(1, 3, height, width)
    with torch.no_grad():
        features, logits = model.encoder(images), model(images)
    quarter = [math.ceil(height / 4), math.ceil(width / 4)]
    eighth = [math.ceil(height / 8), math.ceil(width / 8)]
    assert list(logits.shape) == [1, 11, *quarter]
    assert [list(f.shape[1:]) for f in features] == [[24, *quarter], [32, *eighth], [96, *eighth],
                                                     [320, *eighth]]


def test_the_aux_head_reads_layer_5_at_an_eighth_and_trains_with_the_loss(model):
    model.train()
    try:
        logits, aux = model(torch.randn(2, 3, 64, 96), aux=True)
        assert logits.shape == (2, 11, 16, 24) and aux.shape == (2, 11, 8, 12)
        (logits.mean() + aux.mean()).backward()
        assert model.aux_head.conv[0].weight.grad is not None
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    plain = DeepLabV3Plus.from_config(num_classes=11, auxiliary_head=False)
    with pytest.raises(ValueError, match="auxiliary_head"):
        plain(torch.randn(1, 3, 32, 32), aux=True)


def test_aspp_as_mmseg_separable_branches_and_a_full_bottleneck(model):
    aspp = model.decoder.aspp
    pointwise = aspp.branches[0][0]
    assert pointwise.kernel_size == (1, 1) and pointwise.in_channels == 320
    for branch, rate in zip(aspp.branches[1:], (12, 24, 36)):
        depth, point = branch[0][0], branch[1][0]
        assert (depth.groups, depth.dilation, depth.padding) == (320, (rate, rate), (rate, rate))
        assert (point.kernel_size, point.out_channels) == ((1, 1), 512)
    bottleneck = aspp.bottleneck[0]
    assert (bottleneck.in_channels, bottleneck.kernel_size, bottleneck.groups) == (2560, (3, 3), 1)
    assert model.decoder.low_level[0].in_channels == 24
    assert model.decoder.low_level[0].out_channels == 48
    assert model.decoder.fuse[0][0][0].in_channels == 512 + 48
    assert isinstance(model.decoder.dropout, nn.Dropout2d) and model.decoder.dropout.p == 0.1


def test_parameters_are_table_2s_with_the_auxiliary_head():
    """mmcv prints 15.35 M (rounded to 15.4 in Table 2) with the auxiliary head, 15.09 M without."""
    full = cnn_cost.parameters(cnn_cost.meta_cnn(150))
    plain = cnn_cost.parameters(DeepLabV3Plus.from_config(num_classes=150, auxiliary_head=False))
    assert full["total"] == 15_345_244 and round(full["total"] / 1e6, 2) == 15.35
    assert plain["total"] == 15_345_244 - 260_246 and "aux_head" not in plain
    # MobileNetV2 without its last 1x1 conv (320 -> 1280) and classifier, which mmseg drops:
    # torchvision's mobilenet_v2 has 3,504,872 = 1,811,712 + 412,160 (conv + BN) + 1,281,000 (fc)
    assert full["encoder"] == 3_504_872 - 412_160 - 1_281_000


def test_macs_at_512_are_table_2s_within_half_a_percent():
    macs = cnn_cost.costs(cnn_cost.meta_cnn(150), 512, 512, package=False)
    assert macs["mmcv_rules"] / 1e9 == pytest.approx(69.4, rel=0.005)
    assert macs["mmcv_rules_without_batchnorm"] / 1e9 == pytest.approx(69.4, rel=0.005)
    assert macs["flop_counter_mode"] == macs["matmuls"]  # the two counters agree on what both count


def test_the_general_counter_is_the_package_counter_on_segformer():
    b0 = meta_model("b0", 150)
    assert cnn_cost.count_macs(b0, 97, 131) == count_macs(b0, 97, 131)
    matmuls = count_macs(b0, 97, 131, MATMULS)
    assert cnn_cost.count_macs(b0, 97, 131, MATMULS, pooling=False) == matmuls
    # FlopCounterMode sees convs, linears and (on meta tensors) the attention products: MATMULS
    matmuls_512 = sum(count_macs(b0, 512, 512, MATMULS).values())
    assert cnn_cost.flop_counter_macs(b0, 512, 512) == matmuls_512


def test_it_counts_what_the_package_counter_cannot_see():
    """ReLU6 and the image pooling: the package's count_macs has no rule for them."""
    cnn = cnn_cost.meta_cnn(11)
    ours = sum(cnn_cost.count_macs(cnn, 64, 64).values())
    package = sum(count_macs(cnn, 64, 64).values())
    relu6 = sum(output.numel() for output in _relu6_outputs(cnn, 64, 64))
    assert ours - package == relu6 + 320 * 8 * 8 > 0  # + the pooled layer-7 map, 320 x 8 x 8


def _relu6_outputs(model, height, width):
    outputs = []
    handles = [m.register_forward_hook(lambda m, a, o: outputs.append(o)) for m in model.modules()
               if isinstance(m, nn.ReLU6)]
    with torch.no_grad():
        model.eval()(torch.empty(1, 3, height, width, device="meta"))
    for handle in handles:
        handle.remove()
    return outputs


def test_min_side_and_bad_images_get_one_line(model):
    assert model.config.min_side == 1
    with pytest.raises(ValueError, match="at least 1x1 pixels, got 0x5"):
        model(torch.randn(1, 3, 0, 5))
    with pytest.raises(ValueError, match="expected 3 channels"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="floating-point"):
        model.predict(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_predict_gives_class_indices_at_full_size_like_segformer(model):
    images = torch.randn(2, 3, 45, 61)
    model.train()
    labels = model.predict(images)
    assert model.training  # predict restores the mode it found
    model.eval()
    assert labels.shape == (2, 45, 61) and labels.dtype == torch.long
    assert labels.shape == SegFormer.from_config("b0", num_classes=11).predict(images).shape


def test_save_and_load_round_trip_in_eval_mode(model, tmp_path):
    names = [f"c{i}" for i in range(11)]
    model.save_pretrained(tmp_path / "fp32", class_names=names)
    loaded = DeepLabV3Plus.from_pretrained(tmp_path / "fp32")
    assert not loaded.training and loaded.config == model.config
    images = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
        model.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
        small = DeepLabV3Plus.from_pretrained(tmp_path / "fp16")
        assert next(small.parameters()).dtype == torch.float32
        assert torch.allclose(small(images), model(images), atol=1e-2)
    assert (tmp_path / "fp16" / "model.safetensors").stat().st_size < (
        tmp_path / "fp32" / "model.safetensors").stat().st_size * 0.6


def test_float16_keeps_batchnorm_statistics_beyond_its_range(model, tmp_path):
    """A running variance of the CamVid run reached 7.9e5; in float16 it would read back as inf."""
    trained = DeepLabV3Plus.from_config(num_classes=11).eval()
    trained.load_state_dict(model.state_dict())
    variance = trained.decoder.aspp.bottleneck[1].running_var
    variance.mul_(8e5)
    trained.save_pretrained(tmp_path, dtype=torch.float16)
    loaded = DeepLabV3Plus.from_pretrained(tmp_path)
    assert torch.equal(loaded.decoder.aspp.bottleneck[1].running_var, variance)
    assert loaded.encoder.stem[0].weight.dtype == torch.float32
    images = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        logits = loaded(images)
        assert torch.isfinite(logits).all()
        assert torch.allclose(logits, trained(images), atol=1e-2)


def test_loading_refuses_what_is_not_this_model(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json and model.safetensors"):
        DeepLabV3Plus.from_pretrained(tmp_path)
    from segformer_edu.checkpoint import save_pretrained

    save_pretrained(SegFormer.from_config("b0", num_classes=11), tmp_path / "segformer")
    with pytest.raises(ValueError, match="model_type"):
        DeepLabV3Plus.from_pretrained(tmp_path / "segformer")
    model.save_pretrained(tmp_path / "cnn")
    other = DeepLabV3Plus.from_config(num_classes=5)
    other.save_pretrained(tmp_path / "five")
    (tmp_path / "five" / "config.json").write_text((tmp_path / "cnn" / "config.json").read_text())
    with pytest.raises(ValueError, match="shape mismatches"):
        DeepLabV3Plus.from_pretrained(tmp_path / "five")


def test_configs_refuse_unknown_names_and_fields():
    with pytest.raises(ValueError, match=NAME):
        DeepLabV3Plus.from_config("deeplabv3plus-resnet50")
    with pytest.raises(ValueError, match="unknown config field"):
        DeepLabV3Plus.from_config(num_classes=11, widen_factor=2)
    with pytest.raises(ValueError, match="one entry per MobileNetV2 layer"):
        DeepLabV3PlusConfig(strides=(1, 2, 2))


def test_initialisation_is_mmcvs():
    torch.manual_seed(0)
    cnn = DeepLabV3Plus.from_config(num_classes=150)
    expand = cnn.encoder.layers[6][0].conv[0][0]  # 160 -> 960, 1x1: fan-out 960
    assert expand.weight.std().item() == pytest.approx(math.sqrt(2 / 960), rel=0.05)
    assert cnn.decoder.classifier.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.equal(cnn.decoder.classifier.bias, torch.zeros(150))
