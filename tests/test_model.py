"""The model itself: parameter counts, the settings the official code fixes, predict, input checks,
gradients and determinism."""

import pytest
import torch
from torch import nn

from segformer_edu import VARIANTS, SegFormer, SegFormerConfig
from segformer_edu.encoder import DropPath

# transformers' SegformerForSemanticSegmentation with 150 classes: (whole model, encoder, decoder)
PARAMETERS = {
    "b0": (3_752_694, 3_319_392, 433_302),
    "b1": (13_715_798, 13_151_424, 564_374),
    "b2": (27_461_974, 24_196_288, 3_265_686),
    "b3": (47_337_814, 44_072_128, 3_265_686),
    "b4": (64_108_374, 60_842_688, 3_265_686),
    "b5": (84_708_694, 81_443_008, 3_265_686),
}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def meta_device(monkeypatch):
    """Build models on the meta device: shapes only, no memory, no initialisation time.

    The encoder reads its stochastic-depth rates with ``linspace(...).tolist()``, which needs real
    numbers, so linspace stays on the CPU.
    """
    linspace = torch.linspace
    monkeypatch.setattr(torch, "linspace", lambda *args, **kwargs: linspace(*args, **{"device": "cpu", **kwargs}))
    with torch.device("meta"):
        yield


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts_match_the_official_models(name, meta_device):
    model = SegFormer(SegFormerConfig.from_name(name, num_classes=150))
    total, encoder, decoder = PARAMETERS[name]
    assert (count(model), count(model.encoder), count(model.decoder)) == (total, encoder, decoder)


@pytest.mark.parametrize("name", ["b0", "b1"])
def test_parameter_counts_equal_transformers(name, meta_device):
    transformers = pytest.importorskip("transformers")
    embed_dims, depths, decoder_dim = VARIANTS[name]
    hf_config = transformers.SegformerConfig(hidden_sizes=list(embed_dims), depths=list(depths),
                                             decoder_hidden_size=decoder_dim, num_labels=150)
    hf = transformers.SegformerForSemanticSegmentation(hf_config)
    assert (count(hf), count(hf.segformer), count(hf.decode_head)) == PARAMETERS[name]


def test_paper_table_rounding():
    """Paper Table 1 reports 3.8, 13.7, 27.5, 47.3, 64.1, 84.7 M."""
    millions = [round(PARAMETERS[name][0] / 1e6, 1) for name in sorted(PARAMETERS)]
    assert millions == [3.8, 13.7, 27.5, 47.3, 64.1, 84.7]


def test_official_code_settings_on_a_built_model(meta_device):
    """Where the paper and the released code disagree, the model follows the code (see config.py)."""
    model = SegFormer.from_config("b2", num_classes=19)
    heads, sr_ratios = [], []
    for stage, dim in zip(model.encoder.stages, (64, 128, 320, 512)):
        assert stage.patch_embed.norm.eps == 1e-5  # PyTorch's default after patch merging
        assert stage.norm.eps == 1e-6  # the stage-end norm uses the blocks' eps
        for block in stage.blocks:
            assert block.ffn.fc1.out_features == 4 * dim  # expansion 4 everywhere, not the paper's 8, 8, 4, 4
            assert block.norm1.eps == block.norm2.eps == 1e-6
            if block.attn.sr_ratio > 1:
                assert block.attn.norm.eps == 1e-5
                assert block.attn.sr.kernel_size == block.attn.sr.stride == (block.attn.sr_ratio,) * 2
        heads.append(stage.blocks[0].attn.num_heads)
        sr_ratios.append(stage.blocks[0].attn.sr_ratio)
    assert heads == [1, 2, 5, 8]
    assert [r * r for r in sr_ratios] == [64, 16, 4, 1]  # the paper's reduction ratios R
    assert [s.patch_embed.proj.kernel_size[0] for s in model.encoder.stages] == [7, 3, 3, 3]
    assert [s.patch_embed.proj.stride[0] for s in model.encoder.stages] == [4, 2, 2, 2]
    # stochastic depth rises linearly from 0 to 0.1 over all 16 blocks
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert len(rates) == sum(model.config.depths) == 16
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    assert all(b - a == pytest.approx(0.1 / 15) for a, b in zip(rates, rates[1:]))
    # the decoder: width 768 for B2-B5, 1x1 fuse conv without bias, channel dropout 0.1
    assert model.decoder.fuse[0].in_channels == 4 * 768 and model.decoder.fuse[0].bias is None
    assert isinstance(model.decoder.dropout, nn.Dropout2d) and model.decoder.dropout.p == 0.1
    assert SegFormer.from_config("b1").decoder.classifier.in_channels == 256


def test_official_initialisation():
    torch.manual_seed(0)
    model = SegFormer.from_config("b0", num_classes=150)
    fc1 = model.encoder.stages[3].blocks[0].ffn.fc1  # 256 x 1024 weights: enough for a tight estimate
    assert fc1.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert torch.count_nonzero(fc1.bias) == 0
    dwconv = model.encoder.stages[3].blocks[0].ffn.dwconv  # fan-out normal: std sqrt(2 / (3 * 3 * 1024 / 1024))
    assert dwconv.weight.std().item() == pytest.approx((2 / 9) ** 0.5, rel=0.05)
    fuse = model.decoder.fuse[0]  # mmcv ConvModule: kaiming normal, fan-out, relu gain
    assert fuse.weight.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.05)
    # linear_c and the classifier keep PyTorch's default: kaiming-uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)),
    # and a nonzero uniform bias; the official head never re-initialises them
    for layer, fan_in in ((model.decoder.linear_c[3], 256), (model.decoder.classifier, 256)):
        bound = fan_in ** -0.5
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.1)
        assert torch.count_nonzero(layer.bias) == layer.bias.numel()


def test_predict_gives_full_resolution_labels_and_restores_train_mode():
    torch.manual_seed(0)
    model = SegFormer.from_config("b0", num_classes=7).train()
    running_mean = model.decoder.fuse[1].running_mean.clone()
    images = torch.randn(2, 3, 75, 101)
    labels = model.predict(images)
    assert labels.shape == (2, 75, 101) and labels.dtype == torch.long
    assert 0 <= labels.min() and labels.max() < 7
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model.decoder.fuse[1].running_mean, running_mean)  # predict ran in eval mode
    model.eval()
    logits = model(images)
    upsampled = nn.functional.interpolate(logits, size=(75, 101), mode="bilinear", align_corners=False)
    assert torch.equal(labels, upsampled.argmax(dim=1))
    assert not model.training


@pytest.mark.parametrize("shape, dtype, message", [
    ((3, 64, 64), torch.float32, r"\(B, 3, H, W\).*3-D.*unsqueeze\(0\)"),
    ((1, 1, 3, 64, 64), torch.float32, r"\(B, 3, H, W\).*5-D"),
    ((1, 1, 64, 64), torch.float32, r"expected 3 channels.*\(1, 1, 64, 64\)"),
    ((1, 4, 64, 64), torch.float32, r"expected 3 channels.*\(1, 4, 64, 64\)"),
    ((1, 64, 64, 3), torch.float32, r"expected 3 channels.*channels-last.*permute\(0, 3, 1, 2\)"),
    ((1, 3, 28, 64), torch.float32, r"at least 29x29.*got 28x64"),
    ((1, 3, 64, 16), torch.float32, r"at least 29x29.*got 64x16"),
    ((1, 3, 64, 64), torch.uint8, r"floating-point.*torch\.uint8.*float\(\) / 255"),
    ((1, 3, 64, 64), torch.int64, r"floating-point.*torch\.int64"),
])
def test_bad_input_raises_a_helpful_value_error(shape, dtype, message):
    model = SegFormer.from_config("b0", num_classes=3).eval()
    images = torch.zeros(shape, dtype=dtype)
    for run in (model, model.predict, model.encoder):
        with pytest.raises(ValueError, match=message):
            run(images)


def test_non_tensor_input_raises_value_error():
    with pytest.raises(ValueError, match="torch.Tensor"):
        SegFormer.from_config("b0").encoder([[0.0] * 64] * 64)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    # DropPath and Dropout2d could zero a whole branch or channel for this batch; switch them off so that
    # every gradient must be non-zero, not merely present
    model = SegFormer.from_config("b0", num_classes=5, drop_path_rate=0.0, decoder_dropout=0.0).train()
    images, target = torch.randn(2, 3, 67, 90), torch.randint(0, 5, (2, 17, 23))
    nn.functional.cross_entropy(model(images), target).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_gradients_with_stochastic_depth_are_finite():
    torch.manual_seed(0)
    model = SegFormer.from_config("b0", num_classes=5).train()
    model(torch.randn(2, 3, 64, 64)).logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_drop_path_drops_whole_samples_and_keeps_the_expectation():
    torch.manual_seed(0)
    drop = DropPath(0.25).train()
    out = drop(torch.ones(4000, 3, 5))
    per_sample = out.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()  # all or nothing per sample
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert out.mean().item() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(drop.eval()(out), out)


def test_deterministic_with_a_fixed_seed():
    images = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))

    def build_and_run():
        torch.manual_seed(0)
        model = SegFormer.from_config("b0", num_classes=4)
        train_logits = model.train()(images)  # stochastic depth and dropout draw from the seeded generator
        return model.state_dict(), train_logits, model.eval()(images)

    with torch.no_grad():
        (state_a, train_a, eval_a), (state_b, train_b, eval_b) = build_and_run(), build_and_run()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(train_a, train_b) and torch.equal(eval_a, eval_b)
    torch.manual_seed(1)
    other = SegFormer.from_config("b0", num_classes=4)
    assert not torch.equal(other.decoder.classifier.weight, state_a["decoder.classifier.weight"])


def test_batch_items_are_independent_in_eval_mode():
    torch.manual_seed(0)
    model = SegFormer.from_config("b0", num_classes=4).eval()
    images = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        together = model(images)
        alone = torch.cat([model(image[None]) for image in images])
    assert (together - alone).abs().max().item() < 1e-5


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown SegFormer variant 'b9'"):
        SegFormer.from_config("b9")
    with pytest.raises(ValueError, match="unknown config field.*'depth'"):
        SegFormer.from_config("b0", depth=3)
    with pytest.raises(ValueError, match="one entry per stage"):
        SegFormerConfig(depths=(2, 2, 2))
    assert SegFormerConfig.from_name("mit-b3").variant_name() == "b3"


@pytest.mark.parametrize("overrides, smallest", [
    ({}, 29),  # stage 1 at ceil(29 / 4) = 8 rows: just enough for sr = 8
    ({"sr_ratios": (4, 2, 1, 1)}, 13),  # ceil(13 / 4) = 4 for sr = 4; ceil(ceil(13 / 4) / 2) = 2 for sr = 2
    ({"sr_ratios": (1, 1, 1, 1)}, 1),
])
def test_min_side_comes_from_the_config_and_is_exact(overrides, smallest):
    model = SegFormer.from_config("b0", num_classes=3, **overrides).eval()
    assert model.config.min_side == smallest
    assert model(torch.randn(1, 3, smallest, smallest + 3)).shape[2:] == (-(-smallest // 4), -(-(smallest + 3) // 4))
    if smallest > 1:
        with pytest.raises(ValueError, match=f"at least {smallest}x{smallest}"):
            model(torch.randn(1, 3, smallest - 1, 64))
        config = model.config  # one less and some stage's reduction really has too few rows
        assert any(s < sr for s, sr in zip(config.stage_sides(smallest - 1), config.sr_ratios))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_images_of_another_dtype_than_the_weights_are_one_clear_message(dtype):
    model = SegFormer.from_config("b0", num_classes=3).eval()
    images = torch.randn(1, 3, 64, 64, dtype=dtype)
    for run in (model, model.predict):
        with pytest.raises(ValueError, match=rf"images are {dtype} but the model's weights are torch.float32: "
                                             rf"pass images.to\(torch.float32\)"):
            run(images)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        if dtype == torch.float64:  # the one dtype autocast leaves as it is
            with pytest.raises(ValueError, match="images are torch.float64"):
                model(images)
        else:
            assert model(images).shape == (1, 3, 16, 16)  # autocast casts images and weights alike
    assert model.to(dtype)(images).dtype == dtype  # a model converted to the images' dtype takes them


def test_images_that_were_never_normalised_are_named_in_predict():
    model = SegFormer.from_config("b0", num_classes=3).eval()
    raw = torch.randint(0, 256, (1, 3, 64, 64)).float()  # pixel values, as read
    with pytest.raises(ValueError, match="images hold values up to 255: the model expects ImageNet-normalised "
                                         r"images .*segformer_edu.preprocess"):
        model.predict(raw)
    assert model.predict(torch.randn(1, 3, 64, 64) * 2).shape == (1, 64, 64)  # normalised values pass
