from functools import cache

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from segformer_edu import SegFormer, SegFormerConfig
from segformer_edu.flops import (COMPONENTS, MATMULS, MMCV, PARTS, THOP, Convention, analytic_macs, by_component,
                                 count_macs, count_params, meta_model, total)

# Paper Table 1a: GFLOPs (= GMACs) on ADE20K at 512x512 (B5 at 640x640) and on Cityscapes at 1024x2048
# (150-class head), params (M) encoder / decoder.
TABLE_1A = {
    "b0": (512, 8.4, 125.5, 3.4, 0.4),
    "b1": (512, 15.9, 243.7, 13.1, 0.6),
    "b2": (512, 62.4, 717.1, 24.2, 3.3),
    "b3": (512, 79.0, 962.9, 44.0, 3.3),
    "b4": (512, 95.7, 1240.6, 60.8, 3.3),
    "b5": (640, 183.3, 1460.4, 81.4, 3.3),
}
TABLE_1B = {256: 25.7, 512: 39.8, 768: 62.4, 1024: 93.6, 2048: 304.4}  # MiT-B2, decoder width C -> GFLOPs at 512x512


@cache
def shared_meta_model(name, num_classes=150):
    return meta_model(name, num_classes)


def gmacs(name, height, width, convention=MMCV, **overrides):
    return total(analytic_macs(SegFormerConfig.from_name(name, 150, **overrides), height, width, convention)) / 1e9


@pytest.mark.parametrize("name", ["b0", "b2"])
@pytest.mark.parametrize("height, width", [(512, 512), (64, 96), (97, 131), (250, 333), (33, 65)])
@pytest.mark.parametrize("convention", [MMCV, THOP, MATMULS], ids=["mmcv", "thop", "matmuls"])
def test_hooks_equal_formulas(name, height, width, convention):
    model = shared_meta_model(name, num_classes=19)
    assert by_component(count_macs(model, height, width, convention)) == analytic_macs(model.config, height, width,
                                                                                       convention)


def test_meta_count_equals_count_on_real_tensors():
    model = SegFormer.from_config("b0", num_classes=11)
    assert count_macs(model, 75, 101) == count_macs(model.to("meta"), 75, 101)


def test_every_module_and_parameter_has_a_component():
    model = shared_meta_model("b1")
    counts = {**analytic_macs(model.config, 128, 128), **count_params(model)}
    assert {part for part, _ in counts} == set(PARTS)
    assert {name for _, name in counts} <= set(COMPONENTS)
    assert total(count_params(model)) == sum(p.numel() for p in model.parameters())


def test_conventions_differ_by_the_terms_they_switch():
    config, size = SegFormerConfig.from_name("b0"), (128, 160)
    full, no_attention = analytic_macs(config, *size), analytic_macs(config, *size, Convention(attention=False))
    assert total(full) - total(no_attention) == sum(v for (_, name), v in full.items() if name == "attention") > 0
    assert ("decoder", "ReLU") not in analytic_macs(config, *size, Convention(relu=False))


@pytest.mark.parametrize("name", list(TABLE_1A))
def test_table_1a_flops_within_2_percent(name):
    side, ade, cityscapes, _, _ = TABLE_1A[name]
    assert gmacs(name, side, side) == pytest.approx(ade, rel=0.02)
    assert gmacs(name, 1024, 2048) == pytest.approx(cityscapes, rel=0.02)


def test_b5_at_512_is_the_coco_stuff_number():
    assert gmacs("b5", 512, 512) == pytest.approx(111.6, rel=0.02)


@pytest.mark.parametrize("width, paper", list(TABLE_1B.items()))
def test_table_1b_decoder_width_within_2_percent(width, paper):
    assert gmacs("b2", 512, 512, decoder_dim=width) == pytest.approx(paper, rel=0.02)


@pytest.mark.parametrize("name", list(TABLE_1A))
def test_params_match_table_1a(name):
    *_, encoder_paper, decoder_paper = TABLE_1A[name]
    params = count_params(shared_meta_model(name))
    encoder, decoder = total(params, "encoder") / 1e6, total(params, "decoder") / 1e6
    assert round(decoder, 1) == decoder_paper
    # the paper's encoder column is the rounded total minus the rounded decoder: rounding the encoder itself
    # gives 3.3, 13.2 and 44.1 for B0, B1 and B3 instead of 3.4, 13.1 and 44.0
    assert round(round(encoder + decoder, 1) - decoder_paper, 1) == encoder_paper


def test_thop_is_our_thop_convention():
    thop = pytest.importorskip("thop")
    model = SegFormer.from_config("b0", num_classes=11)
    macs, _ = thop.profile(model, (torch.randn(1, 3, 96, 128),), verbose=False)
    assert macs == total(analytic_macs(model.config, 96, 128, THOP))
    assert macs < total(analytic_macs(model.config, 96, 128, MMCV))  # it misses the attention products


def test_torch_flop_counter_is_twice_our_matmul_macs():
    model = shared_meta_model("b0")
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 160, 224, device="meta"))
    assert counter.get_total_flops() == 2 * total(analytic_macs(model.config, 160, 224, MATMULS))


def test_meta_model_leaves_torch_linspace_alone(monkeypatch):
    """No library function is replaced, even while the model is built (other threads would see it)."""
    from segformer_edu import encoder

    original, seen = torch.linspace, []
    build = encoder.MixTransformer.__init__

    def watched(self, *args, **kwargs):
        seen.append(torch.linspace is original)
        build(self, *args, **kwargs)

    monkeypatch.setattr(encoder.MixTransformer, "__init__", watched)
    model = meta_model("b1")
    assert seen == [True] and torch.linspace is original
    assert next(model.parameters()).device.type == "meta"
    assert model.encoder.stages[3].blocks[1].drop_path.p == pytest.approx(0.1)  # the real rates, not meta
