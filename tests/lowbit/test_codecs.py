"""The codecs alone: maps, blockwise quantization error, tiny values, NaN/Inf, bf16 SR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmsprop.lowbit import codecs


@pytest.mark.parametrize("signed", [True, False])
def test_maps_have_256_sorted_codes_in_range(signed):
    cmap = codecs.dynamic_map(signed)
    assert cmap.shape == (256,) and cmap.dtype == np.float32
    assert np.all(np.diff(cmap) >= 0)
    assert cmap[-1] == 1.0 and 0.0 in cmap
    if signed:
        assert cmap[0] < 0 and (cmap < 0).sum() == 127
    else:
        assert cmap[0] == 0.0 and (cmap > 0).sum() == 255  # every code spent on v >= 0
    positive = cmap[cmap > 0]
    assert 1e-7 < positive.min() < 1e-6  # seven decades


@pytest.mark.parametrize("signed", [True, False])
def test_blockwise_error_is_bounded_by_the_code_spacing(signed):
    torch.manual_seed(0)
    x = torch.randn(10_000) if signed else torch.rand(10_000) ** 4
    codes, scale = codecs.quantize_blockwise(x, signed)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape
    assert scale.shape == (codecs.num_blocks(10_000),)
    back = codecs.dequantize_blockwise(codes, scale, signed)
    cmap = torch.from_numpy(codecs.dynamic_map(signed))
    gaps = torch.diff(cmap).max()  # the widest gap between neighbouring codes
    per_block = (x - back).abs().view(-1)[:9984].view(-1, 256).amax(1)
    # nearest code: at most half the widest gap (times the block scale); the 1e-3 covers
    # the fp32 rounding of x / scale and of the bound itself
    assert bool((per_block <= gaps / 2 * scale[:39] * (1 + 1e-3)).all())
    # the block maximum is represented exactly (code 1.0)
    block_max = x[:256].abs().max()
    assert back[:256].abs().max() == pytest.approx(float(block_max), rel=1e-6)


def test_small_positive_square_avg_never_decodes_to_zero():
    v = torch.zeros(512)
    v[0] = 1.0  # the block's scale
    v[1] = 1e-12  # far below the smallest code (~3e-7): must round up, not to 0
    v[2] = 0.0
    codes, scale = codecs.quantize_blockwise(v, signed=False)
    back = codecs.dequantize_blockwise(codes, scale, signed=False)
    assert float(back[1]) > 0
    assert float(back[2]) == 0.0
    g, eps = 1e-3, 1e-8
    assert g / (back[1].sqrt() + eps) < 1e-3 * (g / eps)  # nowhere near g / eps


def test_nonfinite_values_are_refused_not_smeared_over_a_block():
    x = torch.ones(300)
    x[5] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        codecs.quantize_blockwise(x, signed=True)


def test_stochastic_rounding_is_unbiased_deterministic_and_exact_when_representable():
    x = torch.full((200_000,), 1.0 + 2**-10)  # between two bf16 values (step 2**-7)
    rounded = codecs.stochastic_round_to_bf16(x, step=3, seed=11).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + 2**-7}
    assert float(rounded.mean()) == pytest.approx(1.0 + 2**-10, abs=2e-5)
    again = codecs.stochastic_round_to_bf16(x, step=3, seed=11)
    assert torch.equal(again.float(), rounded)
    other = codecs.stochastic_round_to_bf16(x, step=4, seed=11)
    assert not torch.equal(other.float(), rounded)
    exact = torch.tensor([1.0, -2.5, 0.0, 3.0 * 2**-20])
    assert torch.equal(codecs.stochastic_round_to_bf16(exact, 0, 0).float(), exact)
    special = torch.tensor([float("inf"), -float("inf")])
    assert torch.equal(codecs.stochastic_round_to_bf16(special, 0, 0).float(), special)
    assert codecs.stochastic_round_to_bf16(torch.tensor([float("nan")]), 0, 0).isnan().all()


def test_hash_matches_a_plain_python_transcription():
    def lowbias32(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    index = torch.arange(1000)
    got = codecs.hash32(index, step=7, seed=5)
    offset = (7 * 0x9E3779B9 + 5 * 0x85EBCA6B) & 0xFFFFFFFF
    expected = [lowbias32((i + offset) & 0xFFFFFFFF) for i in range(1000)]
    assert got.tolist() == expected
