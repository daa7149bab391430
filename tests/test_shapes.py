"""Shapes through every piece, for sizes that are not multiples of 32 (odd ones included)."""

import math

import pytest
import torch

from segformer_edu import SegFormer
from segformer_edu.attention import EfficientSelfAttention
from segformer_edu.decoder import AllMLPDecoder
from segformer_edu.mix_ffn import MixFFN
from segformer_edu.patch_embed import OverlapPatchEmbed
from segformer_edu.tokens import to_map, to_tokens

SIZES = [(32, 32), (33, 47), (64, 96), (97, 130), (250, 333)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SegFormer.from_config("b0", num_classes=7).eval()


@pytest.mark.parametrize("height, width", SIZES)
def test_stage_shapes_for_any_size(model, height, width):
    images = torch.randn(1, 3, height, width)
    with torch.no_grad():
        features = model.encoder(images)
        logits = model(images)
    side_h, side_w = height, width
    for feature, dim, stride in zip(features, model.config.embed_dims, model.config.strides):
        side_h, side_w = math.ceil(side_h / stride), math.ceil(side_w / stride)  # padding K // 2: ceil
        assert feature.shape == (1, dim, side_h, side_w)
    assert logits.shape == (1, 7, math.ceil(height / 4), math.ceil(width / 4))


def test_every_stage_step_by_step(model):
    """Patch merging -> blocks -> norm, with the token and map shapes at each step, for a 97x130 image."""
    x = torch.randn(2, 3, 97, 130)
    expected_sides = [(25, 33), (13, 17), (7, 9), (4, 5)]
    with torch.no_grad():
        for stage, dim, (h, w) in zip(model.encoder.stages, model.config.embed_dims, expected_sides):
            tokens, height, width = stage.patch_embed(x)
            assert (height, width) == (h, w) and tokens.shape == (2, h * w, dim)
            for block in stage.blocks:
                reduced = block.attn.reduce(block.norm1(tokens), height, width)
                r = block.attn.sr_ratio
                assert reduced.shape == (2, (h // r) * (w // r), dim)  # the reduction floors odd sides
                tokens = block(tokens, height, width)
                assert tokens.shape == (2, h * w, dim)
            x = stage(x)
            assert x.shape == (2, dim, h, w)


def test_tokens_and_maps_are_views_of_each_other():
    tokens = torch.randn(2, 12 * 7, 5)  # (B, N, C)
    feature_map = to_map(tokens, 12, 7)
    assert feature_map.shape == (2, 5, 12, 7)
    assert feature_map.data_ptr() == tokens.data_ptr()  # a view, not a copy
    assert feature_map.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(feature_map[1, :, 3, 4], tokens[1, 3 * 7 + 4])  # token n = row * W + column
    assert torch.equal(to_tokens(feature_map), tokens)
    assert to_tokens(feature_map).data_ptr() == tokens.data_ptr()
    single = to_map(torch.randn(1, 6, 4), 2, 3)  # batch 1: still strides that PyTorch reads as channels-last
    assert single.stride() == (24, 1, 12, 4)


@pytest.mark.parametrize("height, width", [(33, 47), (64, 64)])
def test_overlap_patch_embed_rounds_up(height, width):
    embed = OverlapPatchEmbed(3, 16, patch_size=7, stride=4)
    tokens, h, w = embed(torch.randn(2, 3, height, width))
    assert (h, w) == (math.ceil(height / 4), math.ceil(width / 4))
    assert tokens.shape == (2, h * w, 16)


@pytest.mark.parametrize("sr_ratio", [8, 4, 2, 1])
def test_efficient_attention_keeps_the_token_count(sr_ratio):
    attn = EfficientSelfAttention(dim=40, num_heads=5, sr_ratio=sr_ratio)
    x = torch.randn(2, 17 * 19, 40)
    assert attn.reduce(x, 17, 19).shape == (2, (17 // sr_ratio) * (19 // sr_ratio), 40)
    assert attn(x, 17, 19).shape == x.shape
    assert hasattr(attn, "sr") == (sr_ratio > 1)


def test_attention_equals_the_explicit_softmax_formula():
    """Eq. 1: softmax(Q K^T / sqrt(d_head)) V with K, V from the reduced sequence."""
    torch.manual_seed(0)
    attn = EfficientSelfAttention(dim=16, num_heads=2, sr_ratio=2).eval()
    x = torch.randn(1, 6 * 5, 16)
    reduced = attn.reduce(x, 6, 5)  # (1, 3 * 2, 16)
    q = attn.q(x).view(1, -1, 2, 8).transpose(1, 2)  # (B, h, N, d)
    k, v = attn.kv(reduced).view(1, -1, 2, 2, 8).permute(2, 0, 3, 1, 4)  # 2 x (B, h, N/R, d)
    weights = (q @ k.transpose(-2, -1) / 8 ** 0.5).softmax(dim=-1)
    assert weights.shape == (1, 2, 30, 6)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(1, 30, 16))
    torch.testing.assert_close(attn(x, 6, 5), expected)


def test_mix_ffn_shapes():
    ffn = MixFFN(dim=24, hidden_dim=96)
    x = torch.randn(2, 9 * 11, 24)
    assert ffn.fc1(x).shape == (2, 99, 96)
    assert ffn(x, 9, 11).shape == x.shape


def test_decoder_upsamples_everything_to_the_first_map():
    decoder = AllMLPDecoder((8, 16, 24, 32), dim=12, num_classes=5).eval()
    sides = [(25, 33), (13, 17), (7, 9), (4, 5)]
    features = [torch.randn(2, c, h, w) for c, (h, w) in zip((8, 16, 24, 32), sides)]
    assert decoder(features).shape == (2, 5, 25, 33)
    assert decoder.fuse[0].in_channels == 4 * 12


@pytest.mark.parametrize("batch", [1, 3])
def test_predict_full_resolution_for_odd_sizes(model, batch):
    labels = model.predict(torch.randn(batch, 3, 61, 45))
    assert labels.shape == (batch, 61, 45) and labels.dtype == torch.long
