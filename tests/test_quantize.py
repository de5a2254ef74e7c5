"""companion.quantize against a plain reference: blockwise absmax quantization computed block by block in NumPy,
the packed bytes by formula against the tensors' measured bytes, the round-trip error bound, exactness on
representable values, and LoRA on a quantized base."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from companion import lora, quantize
from companion.models import GPTConfig, TinyGPT

fast = settings(max_examples=30, deadline=None)
formats = st.tuples(st.sampled_from([4, 8]), st.sampled_from([2, 4, 8, 32, 64, 128]))


def reference(weight: np.ndarray, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The integers and the scales, block by block, in float32 NumPy; rounding half to even as torch does."""
    flat = weight.astype(np.float32).ravel()
    q_max = np.float32(2 ** (bits - 1) - 1)
    ints, scales = [], []
    for start in range(0, len(flat), group_size):
        block = flat[start : start + group_size]
        scale = np.float32(np.abs(block).max()) / q_max
        ints.append(np.clip(np.round(block / scale), -q_max, q_max) if scale > 0 else np.zeros_like(block))
        scales.append(scale)
    return np.concatenate(ints), np.array(scales, dtype=np.float32)


@fast
@given(formats, st.lists(st.integers(1, 40), min_size=1, max_size=3), st.integers(0, 2**31 - 1))
def test_quantize_equals_the_blockwise_reference_and_its_bytes_equal_the_formula(fmt, shape, seed):
    bits, group_size = fmt
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=gen) * torch.rand((), generator=gen) * 3
    q = quantize.quantize(weight, bits, group_size)
    ints, scales = reference(weight.numpy(), bits, group_size)
    np.testing.assert_array_equal(q.scales.numpy(), scales)
    expected = (ints.reshape(-1) * np.repeat(scales, group_size)[: ints.size]).reshape(shape)
    np.testing.assert_array_equal(quantize.dequantize(q).numpy(), expected.astype(np.float32))
    assert q.nbytes == quantize.quantized_bytes(weight.numel(), bits, group_size)
    assert q.nbytes == math.ceil(weight.numel() / group_size) * (group_size * bits // 8 + 4)


@fast
@given(formats, st.integers(1, 300), st.integers(0, 2**31 - 1))
def test_the_round_trip_error_is_at_most_half_a_step(fmt, n, seed):
    bits, group_size = fmt
    weight = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q = quantize.quantize(weight, bits, group_size)
    restored = quantize.dequantize(q, torch.float64)
    assert restored.dtype == torch.float64 and restored.shape == weight.shape
    step = q.scales.double().repeat_interleave(group_size)[:n]
    assert ((weight - restored).abs() <= step / 2 * (1 + 1e-6) + 1e-7).all()
    blocks = torch.nn.functional.pad(weight.abs(), (0, (-n) % group_size)).view(-1, group_size)
    largest = blocks.argmax(dim=1) + torch.arange(len(blocks)) * group_size
    largest = largest[largest < n]
    torch.testing.assert_close(restored[largest], weight[largest], rtol=1e-6, atol=0)


@pytest.mark.parametrize("bits", [4, 8])
def test_representable_values_come_back_exactly(bits):
    """Weights that are a power-of-two scale times integers in ±q_max, with ±q_max in every block."""
    q_max, gen = 2 ** (bits - 1) - 1, torch.Generator().manual_seed(bits)
    ints = torch.randint(-q_max, q_max + 1, (12, 16), generator=gen).float()
    ints[:, 0] = q_max * torch.where(torch.rand(12, generator=gen) < 0.5, 1.0, -1.0)
    scales = 2.0 ** torch.randint(-12, 4, (12, 1), generator=gen).float()
    weight = ints * scales
    q = quantize.quantize(weight, bits, group_size=16)
    assert torch.equal(quantize.dequantize(q), weight)
    assert torch.equal(q.scales, scales.flatten())


def test_four_bit_codes_pack_two_to_a_byte_the_first_in_the_low_half():
    q = quantize.quantize(torch.tensor([7.0, -7.0, 0.0, 1.0]), bits=4, group_size=4)
    # codes q + 8: 15, 1, 8, 9 → bytes 15 | 1 << 4 and 8 | 9 << 4
    assert q.packed.tolist() == [15 | 1 << 4, 8 | 9 << 4] and q.packed.dtype == torch.uint8
    assert quantize.quantize(torch.tensor([127.0, -1.0]), bits=8, group_size=2).packed.tolist() == [255, 127]


def test_a_block_of_zeros_stays_zero_and_bad_inputs_are_refused():
    weight = torch.cat([torch.zeros(4), torch.tensor([1.0, -2.0, 3.0, 0.5])])
    q = quantize.quantize(weight, 4, group_size=4)
    assert q.scales[0] == 0 and torch.equal(quantize.dequantize(q)[:4], torch.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        quantize.quantize(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="bits must be one of"):
        quantize.quantize(weight, bits=3)
    with pytest.raises(ValueError, match="group_size must be an even int"):
        quantize.quantize(weight, group_size=7)
    with pytest.raises(TypeError, match="floating-point"):
        quantize.quantize(torch.arange(4))
    with pytest.raises(TypeError, match="QuantizedTensor"):
        quantize.dequantize(weight)


def test_the_mean_error_is_a_quarter_step_and_eight_bits_err_far_less_than_four():
    """Rounding errors spread evenly over ±step/2, so their mean size is step/4."""
    weight = torch.randn(256, 256, generator=torch.Generator().manual_seed(0)) * 0.02
    quantized = {bits: quantize.quantize(weight, bits) for bits in (4, 8)}
    errors = {bits: (quantize.dequantize(q) - weight).abs().mean().item() for bits, q in quantized.items()}
    assert errors[4] == pytest.approx(quantized[4].scales.mean().item() / 4, rel=0.05)
    assert errors[8] == pytest.approx(quantized[8].scales.mean().item() / 4, rel=0.05)
    assert errors[8] < errors[4] / 10
    for bits, q in quantized.items():
        restored = quantize.dequantize(q)
        relative = quantize.quantization_error(weight, bits)
        assert relative == pytest.approx(((weight - restored).norm() / weight.norm()).item(), rel=1e-5)
        # an even spread over ±step/2 has a root mean square of step/√12
        expected = (q.scales.square().mean().sqrt() / math.sqrt(12) / weight.square().mean().sqrt()).item()
        assert relative == pytest.approx(expected, rel=0.05)
    assert quantize.quantization_error(torch.zeros(64)) == 0.0


def test_quant_linear_computes_with_the_dequantized_weight():
    torch.manual_seed(0)
    linear = nn.Linear(48, 20)
    layer = quantize.QuantLinear(linear, bits=4, group_size=16)
    x = torch.randn(5, 3, 48, requires_grad=True)
    expected = F.linear(x, quantize.dequantize(quantize.quantize(linear.weight, 4, 16)), linear.bias)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    layer(x).sum().backward()
    assert x.grad is not None and list(layer.parameters()) == []
    assert set(layer.state_dict()) == {"packed", "scales", "bias"}
    assert torch.equal(layer.weight, quantize.dequantize(layer.quantized()))
    half_steps = layer.scales.repeat_interleave(16).view(20, 48) / 2
    bound = x.detach().abs() @ half_steps.T  # |Σ x_i (w_i − ŵ_i)| <= Σ |x_i|·step_i/2
    assert ((layer(x) - linear(x)).abs() <= bound * (1 + 1e-5) + 1e-6).all()


def tiny_gpt() -> TinyGPT:
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(vocab_size=11, context=8, dim=32, heads=2, layers=2))


def test_a_quantized_models_bytes_equal_the_formula():
    model = tiny_gpt()
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    other = quantize.model_bytes(model) - sum(4 * m.weight.numel() for m in linears.values())
    quantize.quantize_model(model, bits=4, group_size=32)
    by_formula = other + sum(quantize.quantized_bytes(m.weight.numel(), 4, 32) for m in linears.values())
    assert quantize.model_bytes(model) == by_formula
    assert all(isinstance(model.get_submodule(name), quantize.QuantLinear) for name in linears)
    model(torch.randint(0, 11, (2, 8)))
    model.generate(torch.zeros(1, 1, dtype=torch.long), 2)


def test_quantize_model_takes_name_patterns():
    model = quantize.quantize_model(tiny_gpt(), ["in_proj", "out_proj"], bits=8)
    kinds = {name: type(m).__name__ for name, m in model.named_modules() if name.endswith(("proj", "head"))}
    assert set(kinds.values()) == {"QuantLinear", "Linear"} and kinds["head"] == "Linear"
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize.quantize_model(model, ["ln_final"])


def test_lora_trains_on_a_frozen_quantized_base():
    """QLoRA's idea: the quantized codes never change, the low-rank update learns, and it cannot be merged."""
    model = quantize.quantize_model(tiny_gpt(), bits=4, group_size=32)
    ids = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(1))
    before = model(ids)
    codes = {name: b.clone() for name, b in model.named_buffers()}
    lora.wrap(model, ["in_proj", "out_proj"], r=4, trainable="head")
    assert torch.equal(model(ids), before)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    after = {name.replace(".base.", "."): b for name, b in model.named_buffers()}
    assert all(torch.equal(after[name], b) for name, b in codes.items())
    with pytest.raises(TypeError, match="cannot merge a LoRA update into a QuantLinear"):
        lora.merge(model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bits", [4, 8])
def test_a_gpu_stores_the_same_codes_and_scales_as_the_cpu(bits):
    weight = torch.randn(300, 70, generator=torch.Generator().manual_seed(bits))
    on_cpu, on_gpu = quantize.quantize(weight, bits), quantize.quantize(weight.cuda(), bits)
    assert torch.equal(on_gpu.packed.cpu(), on_cpu.packed) and torch.equal(on_gpu.scales.cpu(), on_cpu.scales)
    assert torch.equal(quantize.dequantize(on_gpu).cpu(), quantize.dequantize(on_cpu))
