"""The codecs alone: maps, blockwise quantization error, tiny values, NaN/Inf, bf16 SR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmsprop.lowbit import codecs


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_code_maps_are_exponent_spaced_with_one_exact(signed):
    values = codecs.code_values(signed)
    assert values.shape == (256,) and values.dtype == np.float32
    assert len(np.unique(values)) == (255 if signed else 256)  # signed: no -0
    assert values.max() == 1.0 and 0.0 in values
    positive = np.sort(values[values > 0])
    assert 2.0**-16 < positive[0] < 2.0**-15  # sixteen binades
    per_binade = 8 if signed else 16
    for e in range(1, 15):  # evenly spaced within each binade [2**-e, 2**(1-e))
        inside = positive[(positive >= 2.0**-e) & (positive < 2.0 ** (1 - e))]
        assert len(inside) == per_binade
        assert np.allclose(np.diff(inside), 2.0**-e / per_binade, rtol=0, atol=0)
    if signed:
        assert (values < 0).sum() == 127 and np.array_equal(-values[129:], values[1:128])
    else:
        assert (values > 0).sum() == 255  # every code spent on v >= 0


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_encoding_is_the_nearest_code(signed):
    """Against a brute-force search over the 256 values (float64 distances): the nearest
    code, ties away from zero. The exceptions sit below the smallest code: the unsigned map
    rounds a positive value up to it, the signed one flushes magnitudes under 1.1875 *
    2**-16 (the bit arithmetic has no binade below) to 0."""
    torch.manual_seed(0)
    x = torch.rand(20_000) ** 8
    x = torch.cat([x, -x, torch.rand(1000) * 2.0**-15, torch.rand(1000) * 2.0**-17])
    x = x if signed else x.abs()
    values = torch.from_numpy(codecs.code_values(signed)).double()
    got = values[codecs.encode_normalized(x, signed).long()]
    best = (x.double()[:, None] - values[None, :]).abs().min(1).values
    error = (x.double() - got).abs()
    smallest = float(values[1])
    if signed:
        floor = x.abs() < 1.1875 * 2.0**-16
        assert bool((got[floor] == 0).all()) and float(got[~floor].abs().min()) >= smallest
    else:
        floor = (x > 0) & (got == smallest)
        assert bool((error[floor] > 0).all())  # rounded up
    assert bool(floor.any()) and bool((error[~floor] <= best[~floor]).all())


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_blockwise_error_is_bounded_per_block(signed):
    torch.manual_seed(0)
    x = torch.randn(10_000) if signed else torch.rand(10_000) ** 4
    codes, scale = codecs.quantize_blockwise(x, signed)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape
    assert scale.shape == (codecs.num_blocks(10_000),)
    back = codecs.dequantize_blockwise(codes, scale, signed)
    # relative error at most half a code step: 1/32 (4 mantissa bits) or 1/16 (3 bits) of
    # the value, for values within 16 binades of the block maximum (the 1e-6 covers the
    # fp32 rounding of x / scale)
    bound = (1 / 16 if signed else 1 / 32) + 1e-6
    blocks = scale.repeat_interleave(256)[: x.numel()]
    in_range = x.abs() >= blocks * 2.0**-15
    relative = ((x - back).abs() / x.abs())[in_range]
    assert float(relative.max()) <= bound
    below = ~in_range & (x != 0)  # below the range: absolute error under the smallest step
    assert bool(((x - back).abs()[below] <= blocks[below] * 2.0**-15).all())
    for b in range(codecs.num_blocks(10_000)):  # the block maximum is exact
        chunk = slice(256 * b, 256 * (b + 1))
        assert float(back[chunk].abs().max()) == float(x[chunk].abs().max())


@pytest.mark.parametrize("name", ["square_avg", "grad_avg", "momentum_buffer"])
def test_stochastic_rounding_of_codes_is_unbiased_and_picks_a_neighbour(name):
    """With a random stream, each value becomes one of its two neighbouring codes, the
    nearer more often: the mean over many draws is the value (what keeps an average that
    moves 1% a step from sticking to its code)."""
    signed = name != "square_avg"
    values = torch.tensor([0.3, 0.61, 0.0071, 0.9, -0.45 if signed else 0.45])
    x = values.repeat(40_000)
    x[:256] = 1.0  # one element per block at the maximum keeps the scale 1
    x[256::256] = 1.0
    noise = codecs.code_noise(codecs.hash32(torch.arange(x.numel()), step=5, seed=3), name)
    codes, scale = codecs.quantize_blockwise(x, signed, noise=noise)
    assert bool((scale == 1.0).all())
    back = codecs.dequantize_blockwise(codes, scale, signed).view(-1, 5)[60:]  # past block 0
    table = torch.from_numpy(codecs.code_values(signed))
    for k, v in enumerate(values.tolist()):
        drawn = back[:, k][back[:, k] != 1.0]
        below, above = table[table <= v].max(), table[table >= v].min()
        assert set(drawn.unique().tolist()) <= {float(below), float(above)}
        assert float(drawn.double().mean()) == pytest.approx(v, rel=2e-3)
    again, _ = codecs.quantize_blockwise(x, signed, noise=noise)
    assert torch.equal(again, codes)  # the same stream, the same codes


def test_the_three_buffers_draw_disjoint_bits_of_one_hash():
    """Each 8-bit buffer's rounding noise is its own field of the element's hash (no bit
    shared, all 32 used), placed at the top of its rounding window."""
    used = 0
    for first, width in codecs.NOISE_FIELDS.values():
        field = ((1 << width) - 1) << first
        assert used & field == 0
        used |= field
    assert used == 0xFFFFFFFF
    hashes = torch.tensor([0xFFFFFFFF, 0x12345678, 0])
    for name, (first, width) in codecs.NOISE_FIELDS.items():
        shift = codecs.U_SHIFT if name == "square_avg" else codecs.S_SHIFT
        noise = codecs.code_noise(hashes, name)
        assert noise.tolist()[0] == (1 << shift) - (1 << (shift - width))  # the window's top
        assert noise.tolist()[1] == ((0x12345678 >> first) & ((1 << width) - 1)) << (shift - width)
        assert noise.tolist()[2] == 0


def test_small_positive_square_avg_never_decodes_to_zero():
    v = torch.zeros(512)
    v[0] = 1.0  # the block's scale
    v[1] = 1e-12  # far below the smallest code (~1.7e-5): must round up, not to 0
    v[2] = 0.0
    v[3] = 2.0**-149  # the smallest subnormal
    codes, scale = codecs.quantize_blockwise(v, signed=False)
    back = codecs.dequantize_blockwise(codes, scale, signed=False)
    assert float(back[1]) > 0 and float(back[3]) > 0
    assert float(back[2]) == 0.0
    g, eps = 1e-3, 1e-8
    assert g / (back[1].sqrt() + eps) < 1e-3 * (g / eps)  # nowhere near g / eps


def test_all_zero_block_and_signed_zero():
    codes, scale = codecs.quantize_blockwise(torch.zeros(300), signed=True)
    assert float(scale.abs().max()) == 0.0 and int(codes.max()) == 0
    assert torch.equal(codecs.dequantize_blockwise(codes, scale, signed=True), torch.zeros(300))
    x = torch.tensor([-0.0, 0.0, -1.0, 2.0**-30, -(2.0**-30)])
    assert codecs.encode_normalized(x, signed=True).tolist() == [128, 0, 255, 0, 128]
    assert codecs.encode_normalized(x, signed=False).tolist() == [0, 0, 0, 1, 0]
    assert codecs.code_values(signed=True)[128] == 0.0  # -0.0


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_nonfinite_values_do_not_spoil_their_block(signed):
    """A NaN or Inf stays out of the block's scale: the other values get exactly the codes
    they get without it; it gets the largest code (signed: with its sign; unsigned: -Inf,
    like every value <= 0, gets 0)."""
    torch.manual_seed(0)
    x = torch.randn(600) if signed else torch.rand(600)
    bad = [5, 9, 300]
    spoiled = x.clone()
    spoiled[bad] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    codes, scale = codecs.quantize_blockwise(spoiled, signed)
    clean = x.clone()
    clean[bad] = 0.0
    expected_codes, expected_scale = codecs.quantize_blockwise(clean, signed)
    assert torch.equal(scale, expected_scale) and bool(torch.isfinite(scale).all())
    keep = torch.ones(600, dtype=torch.bool)
    keep[bad] = False
    assert torch.equal(codes[keep], expected_codes[keep])
    assert codes[bad].tolist() == ([127, 127, 255] if signed else [255, 255, 0])


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


@pytest.mark.parametrize("seed", [0, 12345, -7, 2**63 + 11, -(2**70)])
def test_stream_offsets_table_is_the_per_stream_formula(seed):
    """The kernels' table of offsets (numpy, wrapping uint64) equals ``stream_offset`` of
    each stream's ``stream_seed`` plus the shard's first element, mod 2**32, also for seeds,
    steps and offsets far beyond 32 bits and for negative seeds."""
    steps = [0, 1, 7, 2**24 + 3, 2**31 + 5, 2**40 + 3]
    positions = [0, 3, 2**20, 2**33 + 1, 5, 9]
    firsts = [0, 4096, 2**40 + 17, 0, 256, 2**32]
    table = codecs.stream_offsets(steps, seed, positions, firsts)
    assert table.shape == (len(steps), len(codecs.STREAMS)) and table.dtype == np.uint64
    for row, (step, position, first) in enumerate(zip(steps, positions, firsts)):
        for column, name in enumerate(codecs.STREAMS):
            stream = codecs.stream_seed(seed, position, name)
            offset = (step * 0x9E3779B9 + stream * 0x85EBCA6B + first) % 2**32
            assert (
                int(table[row, column])
                == offset
                == (codecs.stream_offset(step, stream) + first) % 2**32
            )
    assert codecs.stream_offsets([], seed, [], []).shape == (0, len(codecs.STREAMS))


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("top", [1e-40, 1.4e-45, 2.0**-70, 2.0**-64, 0.0])
def test_zero_and_subnormal_blocks_round_trip(top, signed):
    """A block whose largest magnitude is tiny, even subnormal (1 / scale would overflow
    float32): zeros stay zeros, the largest value decodes to itself, no value grows past
    the block's maximum, and values that normalise above the smallest code decode within
    the codec's error (the decoded value may be subnormal: then within 2**-149)."""
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(256, generator=gen) * top
    values[:64] = 0.0
    values[100] = top
    if signed:
        values[128:] = -values[128:]
    codes, scale = codecs.quantize_blockwise(values, signed)
    assert float(scale[0]) == np.float32(top)
    decoded = codecs.dequantize_blockwise(codes, scale, signed)
    assert bool(torch.isfinite(decoded).all())
    assert bool((decoded[:64] == 0).all())
    assert float(decoded[100]) == float(values[100])
    assert bool((decoded.abs() <= scale[0]).all())
    if not signed:
        assert bool((decoded >= 0).all())
    relative = 1 / 32 if not signed else 1 / 16
    big = values.abs() >= 2**-15 * float(scale[0])
    error = (decoded - values).abs()
    assert bool((error[big] <= relative * values.abs()[big] + 2.0**-149).all())


@pytest.mark.parametrize(("form", "spacing"), [("int8", 2**-4), ("bf16", 2**-7)])
def test_stored_variance_makes_a_step_at_most_the_codecs_bound_larger(form, spacing):
    """The audit of compact state: the step computed from the stored variance form S
    (stochastically rounded to 8-bit codes or bf16) is at most ``sqrt(1 + spacing)`` times
    the step from the exact S, for every element, whatever the spread of a block: a stored
    value is never below the representable value under it, which is within ``spacing`` of
    it (4 mantissa bits for the unsigned 8-bit codes, 7 for bf16), and a positive value is
    never stored as 0."""
    gen = torch.Generator().manual_seed(1)
    exact = torch.exp(torch.randn(64 * 256, generator=gen, dtype=torch.float64) * 6).float()
    grad, mean = torch.randn(exact.shape, generator=gen), torch.randn(exact.shape, generator=gen)
    alpha, weight, eps = 0.99, 0.99 * 0.01, 1e-12
    hashes = codecs.hash32(torch.arange(exact.numel()), step=1, seed=9)
    if form == "int8":
        codes, scale = codecs.quantize_blockwise(
            exact, False, noise=codecs.code_noise(hashes, "grad_var")
        )
        stored = codecs.dequantize_blockwise(codes, scale, False)
    else:
        stored = codecs.stochastic_round_to_bf16(exact, 1, 9).float()

    def step(s):  # (4')-(8) in float64 from the stored S
        s = alpha * s.double() + weight * (grad.double() - mean.double()) ** 2
        return grad.double() / (s.sqrt() + eps)

    ratio = step(stored).abs() / step(exact).abs()
    assert float(ratio.max()) <= (1 + spacing) ** 0.5
    assert bool((stored > 0).all())
    assert float(ratio.min()) < 1 < float(ratio.max())  # stochastic: both ways, within the bound
