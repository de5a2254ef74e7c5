"""companion.attention against PyTorch: F.scaled_dot_product_attention, nn.MultiheadAttention,
nn.LayerNorm and nn.TransformerEncoderLayer with the same weights, in float64, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from companion import attention

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)
fast = settings(max_examples=25, deadline=None)


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_()


def grads(output: torch.Tensor, inputs: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    """Gradients of a random linear function of ``output`` with respect to ``inputs``."""
    weights = torch.randn(output.shape, generator=gen, dtype=output.dtype)
    return list(torch.autograd.grad((output * weights).sum(), inputs))


def assert_close_with_grads(ours: torch.Tensor, theirs: torch.Tensor, inputs: list[torch.Tensor], seed: int) -> None:
    torch.testing.assert_close(ours, theirs, **TOL)
    for g_ours, g_theirs in zip(grads(ours, inputs, torch.Generator().manual_seed(seed)),
                                grads(theirs, inputs, torch.Generator().manual_seed(seed))):  # fmt: skip
        torch.testing.assert_close(g_ours, g_theirs, **TOL)


def padding_mask(gen: torch.Generator, batch: int, keys: int) -> torch.Tensor:
    """A random key-padding mask ``[batch, keys]``, True for real keys; every row keeps its first key."""
    lengths = torch.randint(1, keys + 1, (batch,), generator=gen)
    return torch.arange(keys) < lengths[:, None]


# --------------------------------------------------------------------------------------------
# scaled dot-product attention
# --------------------------------------------------------------------------------------------

qkv_shapes = st.tuples(
    st.sampled_from([3, 4]),  # ndim of q, k, v
    st.integers(1, 3),  # batch
    st.integers(1, 3),  # heads (4-D only)
    st.integers(1, 7),  # queries L
    st.integers(1, 7),  # keys S
    st.integers(1, 9),  # d_k
    st.integers(1, 6),  # d_v
    st.integers(0, 2**31 - 1),  # seed
)


def make_qkv(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator]:
    ndim, batch, heads, L, S, d_k, d_v, seed = shape
    gen = torch.Generator().manual_seed(seed)
    lead = (batch,) if ndim == 3 else (batch, heads)
    return randn(gen, *lead, L, d_k), randn(gen, *lead, S, d_k), randn(gen, *lead, S, d_v), gen


@fast
@given(qkv_shapes)
def test_attention_without_mask_matches_torch(shape):
    q, k, v, gen = make_qkv(shape)
    assert_close_with_grads(
        attention.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), [q, k, v], shape[-1]
    )


@fast
@given(qkv_shapes)
def test_causal_attention_matches_torch(shape):
    q, k, v, gen = make_qkv(shape)
    assert_close_with_grads(
        attention.scaled_dot_product_attention(q, k, v, causal=True),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
        [q, k, v],
        shape[-1],
    )


@fast
@given(qkv_shapes, st.booleans())
def test_boolean_and_additive_padding_masks_match_torch(shape, additive):
    q, k, v, gen = make_qkv(shape)
    keep = padding_mask(gen, q.shape[0], k.shape[-2])  # [B, S]
    keep = keep[:, None, :] if q.ndim == 3 else keep[:, None, None, :]  # broadcast over queries (and heads)
    mask = torch.zeros(keep.shape, dtype=F64).masked_fill(~keep, -math.inf) if additive else keep
    assert_close_with_grads(
        attention.scaled_dot_product_attention(q, k, v, mask=mask),
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        [q, k, v],
        shape[-1],
    )


@fast
@given(qkv_shapes)
def test_general_float_mask_and_mask_with_causal_match_torch(shape):
    q, k, v, gen = make_qkv(shape)
    L, S = q.shape[-2], k.shape[-2]
    bias = torch.randn(L, S, generator=gen, dtype=F64)  # e.g. a relative-position bias, shared by the batch
    assert_close_with_grads(
        attention.scaled_dot_product_attention(q, k, v, mask=bias),
        F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
        [q, k, v],
        shape[-1],
    )
    keep = padding_mask(gen, q.shape[0], S)
    keep = keep[:, None, :] if q.ndim == 3 else keep[:, None, None, :]
    combined = keep & torch.ones(L, S, dtype=torch.bool).tril()
    assert_close_with_grads(
        attention.scaled_dot_product_attention(q, k, v, mask=keep, causal=True),
        F.scaled_dot_product_attention(q, k, v, attn_mask=combined),
        [q, k, v],
        shape[-1],
    )


def test_a_float_mask_of_another_dtype_is_cast_to_the_scores():
    gen = torch.Generator().manual_seed(4)
    q = randn(gen, 2, 3, 4).float()
    bias = torch.randn(3, 3, generator=gen, dtype=F64)
    out = attention.scaled_dot_product_attention(q, q, q, mask=bias)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q, attn_mask=bias.float()))


def test_explicit_scale_and_weights():
    gen = torch.Generator().manual_seed(0)
    q, k, v = randn(gen, 2, 5, 4), randn(gen, 2, 6, 4), randn(gen, 2, 6, 3)
    out, weights = attention.scaled_dot_product_attention(q, k, v, scale=0.3, return_weights=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), **TOL)
    torch.testing.assert_close(weights, torch.softmax(q @ k.transpose(1, 2) * 0.3, dim=-1), **TOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5, dtype=F64), **TOL)
    assert out.shape == (2, 5, 3) and weights.shape == (2, 5, 6)


def test_causal_weights_are_zero_above_the_diagonal():
    gen = torch.Generator().manual_seed(1)
    q = randn(gen, 1, 2, 6, 4)
    _, weights = attention.scaled_dot_product_attention(q, q, q, causal=True, return_weights=True)
    assert torch.all(weights.triu(diagonal=1) == 0)
    assert torch.equal(weights[..., 0, 0], torch.ones(1, 2, dtype=F64))  # the first query sees itself only


def test_a_query_that_sees_no_key_gets_zeros_as_in_torch():
    gen = torch.Generator().manual_seed(2)
    q, k, v = randn(gen, 2, 4, 3), randn(gen, 2, 5, 3), randn(gen, 2, 5, 2)
    mask = torch.ones(2, 4, 5, dtype=torch.bool)
    mask[0, 1] = False  # query 1 of the first sequence may see nothing
    out, weights = attention.scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert_close_with_grads(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), [q, k, v], 3)
    assert torch.all(weights[0, 1] == 0) and torch.all(out[0, 1] == 0)
    out = attention.scaled_dot_product_attention(q, k, v, mask=mask)
    assert all(torch.isfinite(g).all() for g in grads(out, [q, k, v], gen))


def test_causal_mask():
    assert torch.equal(attention.causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())
    assert torch.equal(attention.causal_mask(2, 3), torch.tensor([[True, False, False], [True, True, False]]))
    with pytest.raises(ValueError, match="length"):
        attention.causal_mask(0)


def test_attention_rejects_bad_shapes_with_clear_errors():
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match="same head dimension"):
        attention.scaled_dot_product_attention(q, torch.randn(2, 6, 7), v)
    with pytest.raises(ValueError, match="same length"):
        attention.scaled_dot_product_attention(q, k, torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="leading"):
        attention.scaled_dot_product_attention(q, torch.randn(3, 6, 8), torch.randn(3, 6, 3))
    with pytest.raises(ValueError, match=r"does not broadcast .* \(2, 5, 6\)"):
        attention.scaled_dot_product_attention(q, k, v, mask=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        attention.scaled_dot_product_attention(q, k, v, mask=torch.ones(1, 1, 5, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        attention.scaled_dot_product_attention(q, k, v, mask=torch.ones(5, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="float tensor"):
        attention.scaled_dot_product_attention(torch.ones(5, 8, dtype=torch.int64), k[0], v[0])
    with pytest.raises(TypeError, match="torch tensor"):
        attention.scaled_dot_product_attention([[1.0]], k, v)
    with pytest.raises(TypeError, match="same dtype; got torch.float32, torch.float64 and torch.float32"):
        attention.scaled_dot_product_attention(q, k.double(), v)
    for scale in (float("nan"), float("inf"), -0.5, 0, True, "0.3", torch.tensor(0.3)):
        with pytest.raises(ValueError, match="scale must be a finite number > 0"):
            attention.scaled_dot_product_attention(q, k, v, scale=scale)


# --------------------------------------------------------------------------------------------
# multi-head attention
# --------------------------------------------------------------------------------------------


def twin_multihead(dim: int, heads: int, seed: int) -> tuple[attention.MultiHeadAttention, nn.MultiheadAttention]:
    """Our MultiHeadAttention and torch's, in float64, with the same random weights."""
    torch.manual_seed(seed)
    ours = attention.MultiHeadAttention(dim, heads).double()
    theirs = nn.MultiheadAttention(dim, heads, batch_first=True, dtype=F64)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.5)
        theirs.in_proj_weight.copy_(ours.in_proj.weight)
        theirs.in_proj_bias.copy_(ours.in_proj.bias)
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    return ours, theirs


@fast
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_multihead_attention_matches_torch_with_copied_weights(heads, head_dim, batch, length, seed):
    dim = heads * head_dim
    ours, theirs = twin_multihead(dim, heads, seed)
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, batch, length, dim)
    keep = padding_mask(gen, batch, length)
    params = [x, *ours.parameters()]

    out, weights = ours(x, mask=keep[:, None, None, :], causal=True, return_weights=True)
    ref, ref_weights = theirs(x, x, x, key_padding_mask=~keep, attn_mask=~attention.causal_mask(length),
                              need_weights=True, average_attn_weights=False)  # fmt: skip
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(weights, ref_weights, **TOL)
    ours_grads = grads(out, params, torch.Generator().manual_seed(0))
    ref_grads = grads(ref, [x, *theirs.parameters()], torch.Generator().manual_seed(0))
    # torch packs q, k, v in one in_proj, as ours: the parameters line up one to one
    for g_ours, g_ref in zip(ours_grads, ref_grads):
        torch.testing.assert_close(g_ours, g_ref, **TOL)

    plain = ours(x)
    torch.testing.assert_close(plain, theirs(x, x, x, need_weights=False)[0], **TOL)


@fast
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 6), st.booleans(), st.integers(0, 2**31 - 1))
def test_torch_backend_gives_the_same_numbers(heads, batch, length, additive, seed):
    dim = 2 * heads
    torch.manual_seed(seed)
    scratch = attention.MultiHeadAttention(dim, heads).double()
    fused = attention.MultiHeadAttention(dim, heads, backend="torch").double()
    fused.load_state_dict(scratch.state_dict())
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, batch, length, dim)
    keep = padding_mask(gen, batch, length)[:, None, None, :]
    mask = torch.zeros(keep.shape, dtype=F64).masked_fill(~keep, -math.inf) if additive else keep
    for kwargs in ({}, {"causal": True}, {"mask": mask}, {"mask": mask, "causal": True}):
        assert_close_with_grads(scratch(x, **kwargs), fused(x, **kwargs), [x], seed)


@pytest.mark.parametrize("additive", [False, True])
def test_torch_backend_under_cpu_autocast_attends_in_fp32(monkeypatch, additive):
    torch.manual_seed(0)
    layer = attention.MultiHeadAttention(16, 4, backend="torch")
    x = torch.randn(2, 5, 16, requires_grad=True)
    keep = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]
    mask = torch.zeros(keep.shape).masked_fill(~keep, -math.inf) if additive else keep
    seen = []
    fused = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return fused(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    reference = layer(x, mask=mask, causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x, mask=mask, causal=True)
    assert seen[-1] == (torch.float32, torch.float32, torch.float32, False)
    assert low.dtype == torch.bfloat16  # the output projection is a bf16 product
    torch.testing.assert_close(low.float(), reference, atol=0.05, rtol=0.05)
    low.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_multihead_attention_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible by heads"):
        attention.MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="backend"):
        attention.MultiHeadAttention(8, 2, backend="flash")
    mha = attention.MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"\[batch, length, 8\]"):
        mha(torch.randn(3, 4, 6))
    with pytest.raises(ValueError, match=r"\[batch, length, 8\]"):
        mha(torch.randn(4, 8))
    with pytest.raises(ValueError, match="does not broadcast"):
        mha(torch.randn(3, 4, 8), mask=torch.ones(3, 4, dtype=torch.bool))  # a [B, L] mask must be [B, 1, 1, L]
    with pytest.raises(ValueError, match="does not broadcast"):
        attention.MultiHeadAttention(8, 2, backend="torch")(torch.randn(3, 4, 8), mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="return_weights"):
        attention.MultiHeadAttention(8, 2, backend="torch")(torch.randn(3, 4, 8), return_weights=True)


# --------------------------------------------------------------------------------------------
# positional encodings, layer norm, the block
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 2, 7, 16])
def test_sinusoidal_positional_encoding(dim):
    pe = attention.sinusoidal_positional_encoding(50, dim, dtype=F64)
    assert pe.shape == (50, dim) and pe.dtype == F64
    for p in (0, 1, 17, 49):
        for j in range(dim):
            angle = p / 10_000 ** (2 * (j // 2) / dim)
            assert math.isclose(pe[p, j].item(), math.sin(angle) if j % 2 == 0 else math.cos(angle), abs_tol=1e-12)
    assert pe.abs().max() <= 1
    assert attention.sinusoidal_positional_encoding(3, 4).dtype == torch.float32


def test_sinusoidal_rows_are_distinct_and_shifts_are_rotations():
    pe = attention.sinusoidal_positional_encoding(64, 16, dtype=F64)
    assert torch.cdist(pe, pe).add(torch.eye(64, dtype=F64)).min() > 0.1
    # PE[p + k] is a fixed rotation of PE[p], whatever p: one 2x2 rotation by k*w per (sin, cos) pair
    k = 5
    frequency = 10000.0 ** (-torch.arange(0, 16, 2, dtype=F64) / 16)
    c, s = (k * frequency).cos(), (k * frequency).sin()
    pairs = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # [8, 2, 2]
    rotation = torch.block_diag(*pairs)  # (sin a, cos a) @ [[c, -s], [s, c]] = shifted by k*w
    torch.testing.assert_close(pe[:-k] @ rotation, pe[k:], rtol=0, atol=1e-12)


@fast
@given(st.integers(1, 10), st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(0, 2**31 - 1))
def test_layer_norm_matches_torch(dim, lead, seed):
    gen = torch.Generator().manual_seed(seed)
    ours, theirs = attention.LayerNorm(dim).double(), nn.LayerNorm(dim, dtype=F64)
    with torch.no_grad():
        for a, b in zip(ours.parameters(), theirs.parameters()):
            a.copy_(torch.randn(dim, generator=gen, dtype=F64))
            b.copy_(a)
    x = randn(gen, *lead, dim) * 3 + 1
    out, ref = ours(x), theirs(x)
    torch.testing.assert_close(out, ref, **TOL)
    ours_grads = grads(out, [x, *ours.parameters()], torch.Generator().manual_seed(0))
    ref_grads = grads(ref, [x, *theirs.parameters()], torch.Generator().manual_seed(0))
    for g_ours, g_ref in zip(ours_grads, ref_grads):
        torch.testing.assert_close(g_ours, g_ref, **TOL)


def test_layer_norm_without_bias_and_bad_input():
    ln = attention.LayerNorm(4, bias=False)
    assert ln.bias is None and sum(p.numel() for p in ln.parameters()) == 4
    torch.testing.assert_close(ln(torch.arange(4.0)), F.layer_norm(torch.arange(4.0), (4,)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        ln(torch.randn(3, 5))
    for norm in (attention.LayerNorm, attention.RMSNorm):
        with pytest.raises(TypeError, match="the weights are torch.float32 but x is torch.float64"):
            norm(4)(torch.randn(3, 4, dtype=torch.float64))
        for eps in (-1e-5, float("nan"), float("inf"), None, "1e-5"):
            with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
                norm(4, eps=eps)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast reconciles mixed dtypes itself
            assert norm(4)(torch.randn(3, 4, dtype=torch.bfloat16)).shape == (3, 4)


def twin_block(dim: int, heads: int, seed: int) -> tuple[attention.TransformerBlock, nn.TransformerEncoderLayer]:
    torch.manual_seed(seed)
    ours = attention.TransformerBlock(dim, heads).double()
    theirs = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu",
                                        batch_first=True, norm_first=True, dtype=F64)  # fmt: skip
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.3)
        pairs = [
            (theirs.self_attn.in_proj_weight, ours.attn.in_proj.weight),
            (theirs.self_attn.in_proj_bias, ours.attn.in_proj.bias),
            (theirs.self_attn.out_proj.weight, ours.attn.out_proj.weight),
            (theirs.self_attn.out_proj.bias, ours.attn.out_proj.bias),
            (theirs.linear1.weight, ours.mlp[0].weight),
            (theirs.linear1.bias, ours.mlp[0].bias),
            (theirs.linear2.weight, ours.mlp[2].weight),
            (theirs.linear2.bias, ours.mlp[2].bias),
            (theirs.norm1.weight, ours.ln1.weight),
            (theirs.norm1.bias, ours.ln1.bias),
            (theirs.norm2.weight, ours.ln2.weight),
            (theirs.norm2.bias, ours.ln2.bias),
        ]
        for target, source in pairs:
            target.copy_(source)
    return ours, theirs


@fast
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_transformer_block_matches_torch_encoder_layer(heads, head_dim, batch, length, seed):
    ours, theirs = twin_block(heads * head_dim, heads, seed)
    theirs.train()  # the fused inference fast path is not what we compare with
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, batch, length, heads * head_dim)
    assert_close_with_grads(ours(x), theirs(x), [x], seed)
    assert_close_with_grads(
        ours(x, causal=True), theirs(x, src_mask=~attention.causal_mask(length), is_causal=True), [x], seed
    )


@pytest.mark.parametrize("dim,heads", [(8, 2), (64, 4), (128, 4)])
def test_transformer_block_parameter_count(dim, heads):
    block = attention.TransformerBlock(dim, heads)
    assert sum(p.numel() for p in block.parameters()) == 12 * dim**2 + 13 * dim


def test_self_attention_without_positions_is_permutation_equivariant():
    torch.manual_seed(0)
    block = attention.TransformerBlock(16, 4).double()
    x = torch.randn(2, 9, 16, dtype=F64)
    perm = torch.randperm(9)
    torch.testing.assert_close(block(x)[:, perm], block(x[:, perm]), **TOL)
    # a causal mask breaks the symmetry: the order of the tokens now matters
    assert not torch.allclose(block(x, causal=True)[:, perm], block(x[:, perm], causal=True))
