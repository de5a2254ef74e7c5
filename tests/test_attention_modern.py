"""The Llama-style pieces of companion.attention against their references, in float64, values and gradients:
RMSNorm vs torch.nn.RMSNorm, RoPE vs transformers' Llama rotary code, SwiGLU vs LlamaMLP, grouped-query
attention vs F.scaled_dot_product_attention(enable_gqa=True), the KV cache vs recomputation, and a whole
block vs transformers' LlamaDecoderLayer with copied weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from companion import attention

llama = pytest.importorskip("transformers.models.llama.modeling_llama")
from transformers import LlamaConfig  # noqa: E402

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)
fast = settings(max_examples=20, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_()


def grads(output: torch.Tensor, inputs: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    """Gradients of a random linear function of ``output`` with respect to ``inputs``."""
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed), dtype=output.dtype)
    return list(torch.autograd.grad((output * weights).sum(), inputs))


def assert_same(ours: torch.Tensor, theirs: torch.Tensor, ours_in: list, theirs_in: list, **tol: float) -> None:
    """Equal values, and equal gradients with respect to the corresponding inputs."""
    tol = tol or TOL
    torch.testing.assert_close(ours, theirs, **tol)
    for a, b in zip(grads(ours, ours_in), grads(theirs, theirs_in), strict=True):
        torch.testing.assert_close(a, b, **tol)


def llama_config(dim: int, heads: int, kv_heads: int, hidden: int, base: float = 10_000.0) -> LlamaConfig:
    config = LlamaConfig(hidden_size=dim, intermediate_size=hidden, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, num_hidden_layers=1, vocab_size=10, rope_theta=base)  # fmt: skip
    config._attn_implementation = "sdpa"
    return config


# --------------------------------------------------------------------------------------------
# RMSNorm and the fused norms
# --------------------------------------------------------------------------------------------


@fast
@given(st.integers(1, 10), st.lists(st.integers(1, 4), min_size=1, max_size=3),
       st.sampled_from([1e-6, 1e-5, 0.1]), st.sampled_from(["scratch", "torch"]), seeds)  # fmt: skip
def test_rms_norm_matches_torch(dim, lead, eps, backend, seed):
    gen = torch.Generator().manual_seed(seed)
    ours, theirs = attention.RMSNorm(dim, eps, backend=backend).double(), nn.RMSNorm(dim, eps=eps, dtype=F64)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(dim, generator=gen, dtype=F64))
        theirs.weight.copy_(ours.weight)
    x = randn(gen, *lead, dim) * 3 + 1
    assert_same(ours(x), theirs(x), [x, ours.weight], [x, theirs.weight])


@fast
@given(st.integers(1, 10), st.booleans(), seeds)
def test_fused_layer_norm_is_the_same_function(dim, bias, seed):
    gen = torch.Generator().manual_seed(seed)
    scratch = attention.LayerNorm(dim, bias=bias).double()
    with torch.no_grad():
        for p in scratch.parameters():
            p.copy_(torch.randn(dim, generator=gen, dtype=F64))
    fused = attention.LayerNorm(dim, bias=bias, backend="torch").double()
    fused.load_state_dict(scratch.state_dict())
    x = randn(gen, 3, dim) * 2 - 1
    assert_same(scratch(x), fused(x), [x, *scratch.parameters()], [x, *fused.parameters()])


def test_rms_norm_gives_unit_root_mean_square_and_rejects_bad_shapes():
    x = torch.randn(4, 7, dtype=F64) * 10
    y = attention.RMSNorm(7, eps=0.0).double()(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4, dtype=F64), **TOL)
    assert sum(p.numel() for p in attention.RMSNorm(7).parameters()) == 7
    with pytest.raises(ValueError, match=r"RMSNorm expects inputs \[\.\.\., 7\]; got \(4, 6\)"):
        attention.RMSNorm(7)(torch.randn(4, 6))
    with pytest.raises(ValueError, match="backend"):
        attention.RMSNorm(7, backend="apex")
    with pytest.raises(ValueError, match="norm must be one of"):
        attention.make_norm("batch", 7, 1e-5)


# --------------------------------------------------------------------------------------------
# rotary position embeddings
# --------------------------------------------------------------------------------------------


@fast
@given(st.integers(1, 8), st.integers(1, 20), st.sampled_from([10_000.0, 500.0, 1e6]), st.integers(0, 50))
def test_rotary_angles_match_llama_rotary_embedding(half, length, base, offset):
    head_dim = 2 * half
    reference = llama.LlamaRotaryEmbedding(llama_config(head_dim, 1, 1, 4, base))
    positions = torch.arange(offset, offset + length)[None]
    cos_ref, sin_ref = reference(torch.zeros(1, dtype=torch.float32), positions)
    cos, sin = attention.rotary_angles(length, head_dim, base, offset)
    assert cos.shape == sin.shape == (length, head_dim) and cos.dtype == torch.float32
    torch.testing.assert_close(cos, cos_ref[0], rtol=0, atol=0)
    torch.testing.assert_close(sin, sin_ref[0], rtol=0, atol=0)


@fast
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 6), st.integers(0, 9), seeds)
def test_apply_rotary_matches_llama(batch, heads, length, half, offset, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = randn(gen, batch, heads, length, 2 * half), randn(gen, batch, heads, length, 2 * half)
    cos, sin = attention.rotary_angles(length, 2 * half, offset=offset, dtype=F64)
    q_ref, k_ref = llama.apply_rotary_pos_emb(q, k, cos[None], sin[None])
    ours = torch.stack([attention.apply_rotary(q, cos, sin), attention.apply_rotary(k, cos, sin)])
    assert_same(ours, torch.stack([q_ref, k_ref]), [q, k], [q, k])


def test_rotation_keeps_lengths_and_scores_depend_on_relative_position_only():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=gen, dtype=F64), torch.randn(1, 16, generator=gen, dtype=F64)

    def turned(x: torch.Tensor, position: int) -> torch.Tensor:
        return attention.apply_rotary(x, *attention.rotary_angles(1, 16, offset=position, dtype=F64))

    # (the angles are float32, as Llama's: cos² + sin² = 1 to float32 precision)
    torch.testing.assert_close(turned(q, 37).norm(), q.norm(), rtol=1e-6, atol=0)
    score = (turned(q, 5) * turned(k, 2)).sum()
    for shift in (1, 10, 200):
        torch.testing.assert_close((turned(q, 5 + shift) * turned(k, 2 + shift)).sum(), score, rtol=1e-5, atol=1e-5)
    assert not torch.allclose((turned(q, 6) * turned(k, 2)).sum(), score)


def test_rotary_rejects_bad_shapes():
    with pytest.raises(ValueError, match="even"):
        attention.rotary_angles(4, 5)
    cos, sin = attention.rotary_angles(4, 6)
    with pytest.raises(ValueError, match=r"cos must be \[length, head_dim\] = \(5, 6\); got \(4, 6\)"):
        attention.apply_rotary(torch.randn(2, 5, 6), cos, sin)
    with pytest.raises(ValueError, match="even head_dim"):
        attention.apply_rotary(torch.randn(2, 4, 5), cos, sin)


# --------------------------------------------------------------------------------------------
# SwiGLU
# --------------------------------------------------------------------------------------------


@fast
@given(st.integers(1, 12), st.integers(1, 20), st.integers(1, 5), seeds)
def test_swiglu_matches_llama_mlp(dim, hidden, length, seed):
    torch.manual_seed(seed)
    ours = attention.SwiGLU(dim, hidden).double()
    theirs = llama.LlamaMLP(llama_config(2, 1, 1, hidden)).double()
    theirs.gate_proj, theirs.up_proj, theirs.down_proj = (nn.Linear(dim, hidden, bias=False, dtype=F64),
                                                          nn.Linear(dim, hidden, bias=False, dtype=F64),
                                                          nn.Linear(hidden, dim, bias=False, dtype=F64))  # fmt: skip
    with torch.no_grad():
        for mine, ref in ((ours.gate, theirs.gate_proj), (ours.up, theirs.up_proj), (ours.down, theirs.down_proj)):
            ref.weight.copy_(mine.weight)
    x = randn(torch.Generator().manual_seed(seed), 2, length, dim)
    assert_same(ours(x), theirs(x), [x, *ours.parameters()],
                [x, theirs.gate_proj.weight, theirs.up_proj.weight, theirs.down_proj.weight])  # fmt: skip
    assert sum(p.numel() for p in ours.parameters()) == 3 * dim * hidden


# --------------------------------------------------------------------------------------------
# grouped-query attention
# --------------------------------------------------------------------------------------------

gqa_shapes = st.tuples(st.sampled_from([(1, 1), (2, 1), (4, 2), (4, 1), (6, 3), (3, 3)]),  # (heads, kv_heads)
                       st.integers(1, 3), st.integers(1, 7), st.integers(1, 7), st.integers(1, 5), seeds)  # fmt: skip


@fast
@given(gqa_shapes, st.booleans())
def test_repeat_kv_and_our_attention_match_torch_gqa(shape, causal):
    (heads, kv_heads), batch, L, S, d, seed = shape
    gen = torch.Generator().manual_seed(seed)
    q, k, v = randn(gen, batch, heads, L, d), randn(gen, batch, kv_heads, S, d), randn(gen, batch, kv_heads, S, d)
    groups = heads // kv_heads
    ours = attention.scaled_dot_product_attention(q, attention.repeat_kv(k, groups), attention.repeat_kv(v, groups),
                                                  causal=causal)  # fmt: skip
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    assert_same(ours, theirs, [q, k, v], [q, k, v])


@fast
@given(gqa_shapes, st.sampled_from(["scratch", "torch"]))
def test_grouped_query_attention_module_matches_torch(shape, backend):
    (heads, kv_heads), batch, L, _, d, seed = shape
    torch.manual_seed(seed)
    dim = heads * d
    mha = attention.MultiHeadAttention(dim, heads, backend=backend, kv_heads=kv_heads).double()
    x = randn(torch.Generator().manual_seed(seed), batch, L, dim)
    q, k, v = mha.in_proj(x).split([dim, kv_heads * d, kv_heads * d], dim=-1)
    q, k, v = (t.view(batch, L, -1, d).transpose(1, 2) for t in (q, k, v))
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    reference = mha.out_proj(reference.transpose(1, 2).reshape(batch, L, dim))
    assert_same(mha(x, causal=True), reference, [x, *mha.parameters()], [x, *mha.parameters()])
    params = sum(p.numel() for p in mha.parameters())
    assert params == dim * (heads + 2 * kv_heads) * d + (heads + 2 * kv_heads) * d + dim * dim + dim


def test_grouped_query_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="kv_heads=3 must divide heads=4"):
        attention.MultiHeadAttention(8, 4, kv_heads=3)
    with pytest.raises(ValueError, match="kv_heads must be a positive int"):
        attention.MultiHeadAttention(8, 4, kv_heads=0)
    with pytest.raises(ValueError, match=r"repeat_kv expects .*; got \(2, 3, 4\)"):
        attention.repeat_kv(torch.randn(2, 3, 4), 2)


# --------------------------------------------------------------------------------------------
# the KV cache
# --------------------------------------------------------------------------------------------


@fast
@given(st.sampled_from([(2, 2), (4, 2), (4, 1)]), st.integers(1, 3), st.integers(1, 6),
       st.lists(st.integers(1, 3), min_size=1, max_size=4), st.sampled_from(["scratch", "torch"]),
       st.booleans(), seeds)  # fmt: skip
def test_kv_cache_prefill_and_decode_equal_recomputation(heads_kv, batch, prefill, steps, backend, rope, seed):
    heads, kv_heads = heads_kv
    d, dim = 4, 4 * heads
    torch.manual_seed(seed)
    mha = attention.MultiHeadAttention(dim, heads, backend=backend, kv_heads=kv_heads).double()
    total = prefill + sum(steps)
    x = torch.randn(batch, total, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    angles = attention.rotary_angles(total, d, dtype=F64)

    def turn(start: int, end: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (angles[0][start:end], angles[1][start:end]) if rope else None

    full = mha(x, causal=True, rope=turn(0, total))
    cache = attention.KVCache(batch, kv_heads, d, capacity=total, dtype=F64)
    pieces, start = [], 0
    for length in [prefill, *steps]:  # a prefill, then decode steps of one or more tokens
        pieces.append(mha(x[:, start : start + length], causal=True, rope=turn(start, start + length), cache=cache))
        start += length
    assert cache.length == total
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, **TOL)
    assert cache.nbytes == 2 * batch * kv_heads * total * d * 8


def test_kv_cache_rejects_what_does_not_fit():
    cache = attention.KVCache(2, 1, 4, capacity=3)
    cache.update(torch.zeros(2, 1, 2, 4), torch.zeros(2, 1, 2, 4))
    with pytest.raises(ValueError, match="holds 3 positions: 2 are filled, 2 more do not fit"):
        cache.update(torch.zeros(2, 1, 2, 4), torch.zeros(2, 1, 2, 4))
    with pytest.raises(ValueError, match=r"keys \[2, 1, T, 4\]"):
        cache.update(torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))
    with pytest.raises(ValueError, match="float64"):
        cache.update(torch.zeros(2, 1, 1, 4, dtype=F64), torch.zeros(2, 1, 1, 4, dtype=F64))
    assert cache.length == 2 and "length=2" in repr(cache)
    with pytest.raises(ValueError, match="offset"):
        attention.causal_mask(2, 5, offset=-1)
    assert torch.equal(attention.causal_mask(2, 5, offset=3), torch.ones(5, 5, dtype=torch.bool).tril()[3:])


# --------------------------------------------------------------------------------------------
# a whole Llama block
# --------------------------------------------------------------------------------------------


def twin_llama_block(heads: int, kv_heads: int, d: int, hidden: int, seed: int, backend: str):
    dim = heads * d
    config = llama_config(dim, heads, kv_heads, hidden)
    torch.manual_seed(seed)
    theirs = llama.LlamaDecoderLayer(config, layer_idx=0).double()
    ours = attention.TransformerBlock(dim, heads, backend=backend, kv_heads=kv_heads, norm="rms", mlp="swiglu",
                                      hidden=hidden, bias=False, eps=config.rms_norm_eps).double()  # fmt: skip
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.4)
        a = theirs.self_attn
        ours.attn.in_proj.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        ours.attn.out_proj.weight.copy_(a.o_proj.weight)
        ours.ln1.weight.copy_(theirs.input_layernorm.weight)
        ours.ln2.weight.copy_(theirs.post_attention_layernorm.weight)
        ours.mlp.gate.weight.copy_(theirs.mlp.gate_proj.weight)
        ours.mlp.up.weight.copy_(theirs.mlp.up_proj.weight)
        ours.mlp.down.weight.copy_(theirs.mlp.down_proj.weight)
    return ours, theirs, llama.LlamaRotaryEmbedding(config)


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([(2, 2), (4, 2), (4, 1)]), st.sampled_from([2, 4]), st.integers(1, 16), st.integers(1, 3),
       st.integers(1, 8), st.sampled_from(["scratch", "torch"]), seeds)  # fmt: skip
def test_llama_block_matches_transformers_decoder_layer(heads_kv, d, hidden, batch, length, backend, seed):
    heads, kv_heads = heads_kv
    ours, theirs, rotary = twin_llama_block(heads, kv_heads, d, hidden, seed, backend)
    x = randn(torch.Generator().manual_seed(seed), batch, length, heads * d)
    cos, sin = rotary(x, torch.arange(length)[None])
    reference = theirs(x, position_embeddings=(cos, sin))
    rope = attention.rotary_angles(length, d, dtype=F64)
    # transformers' LlamaRMSNorm computes in float32 whatever the input: agreement to ~1e-7, not 1e-12
    assert_same(ours(x, causal=True, rope=rope), reference, [x], [x], rtol=1e-6, atol=1e-6)


def test_block_switches_are_checked():
    with pytest.raises(ValueError, match="mlp must be one of"):
        attention.TransformerBlock(8, 2, mlp="relu")
    with pytest.raises(ValueError, match="norm must be one of"):
        attention.TransformerBlock(8, 2, norm="group")
    block = attention.TransformerBlock(8, 2, norm="rms", mlp="swiglu", hidden=6, bias=False, kv_heads=1)
    assert block.residual_projections == (block.attn.out_proj, block.mlp.down)
    attn = (2 + 2 * 1) * 4 * 8 + 8 * 8
    assert sum(p.numel() for p in block.parameters()) == attn + 3 * 8 * 6 + 2 * 8
