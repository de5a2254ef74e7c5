"""companion.models.TinyGPT: torch's kernels and ours give the same logits, causality, the GPT-2 and Llama
switches, the KV cache against recomputation, sizes by formula, generation and its sampling."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from companion import scale
from companion.models import GPTConfig, TinyGPT, count_parameters
from companion.models.base import sample_next
from companion.models.gpt import kv_cache_bytes, parameter_counts

SMALL = dict(vocab_size=11, context=12, dim=16, heads=4, layers=2)


def small(**changes: object) -> TinyGPT:
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(**(SMALL | changes)))


def ids(*shape: int, seed: int = 0, vocab: int = SMALL["vocab_size"]) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_torch_attention_gives_the_same_logits_as_ours(positions):
    ours = small(positions=positions).double()
    fused = TinyGPT(dataclasses.replace(ours.config, attention="torch")).double()
    fused.load_state_dict(ours.state_dict())
    x = ids(3, SMALL["context"])
    torch.testing.assert_close(ours(x), fused(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours(x[:, :5]), fused(x[:, :5]), rtol=1e-10, atol=1e-12)
    y = ids(3, SMALL["context"], seed=1)
    loss_ours = F.cross_entropy(ours(x).flatten(0, 1), y.flatten())
    loss_fused = F.cross_entropy(fused(x).flatten(0, 1), y.flatten())
    grads_ours = torch.autograd.grad(loss_ours, list(ours.parameters()))
    grads_fused = torch.autograd.grad(loss_fused, list(fused.parameters()))
    for a, b in zip(grads_ours, grads_fused):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
@pytest.mark.parametrize("attention", ["scratch", "torch"])
def test_changing_a_later_token_leaves_earlier_logits_alone(positions, attention):
    model = small(positions=positions, attention=attention).double()
    x = ids(2, SMALL["context"])
    for t in (0, 5, SMALL["context"] - 1):
        changed = x.clone()
        changed[:, t] = (changed[:, t] + 1) % SMALL["vocab_size"]
        before, after = model(x), model(changed)
        torch.testing.assert_close(before[:, :t], after[:, :t], rtol=0, atol=0)
        assert not torch.allclose(before[:, t], after[:, t])


def test_positions_matter():
    for positions in ("learned", "sinusoidal"):
        model = small(positions=positions)
        with torch.no_grad():
            if positions == "learned":
                model.position_embedding.weight.normal_()
        x = torch.full((1, 6), 3)
        logits = model(x)
        assert not torch.allclose(logits[0, 1], logits[0, 4])  # same token, same past tokens, other place


def test_parameter_count_by_formula():
    c = GPTConfig(vocab_size=65, context=64, dim=128, heads=4, layers=3)
    d, v = c.dim, c.vocab_size
    blocks = c.layers * (12 * d**2 + 13 * d)
    expected = v * d + c.context * d + blocks + 2 * d + d * v + v
    assert count_parameters(TinyGPT(c)) == expected == 619_969
    sinusoidal = TinyGPT(dataclasses.replace(c, positions="sinusoidal"))
    assert count_parameters(sinusoidal) == expected - c.context * d
    assert "sinusoids" not in sinusoidal.state_dict()


def test_generate_shapes_and_context_cropping():
    model = small()
    out = model.generate(ids(3, 4), 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 24) and out.dtype == torch.int64
    assert torch.equal(out[:, :4], ids(3, 4))
    assert int(out.min()) >= 0 and int(out.max()) < SMALL["vocab_size"]
    one = model.generate(ids(5), 3)
    assert one.shape == (8,)
    assert model.generate(ids(2, 3), 0).shape == (2, 3)
    long_prompt = ids(1, SMALL["context"] + 7)  # longer than the context: only the last `context` tokens are read
    assert model.generate(long_prompt, 2).shape == (1, SMALL["context"] + 9)


def test_generate_is_repeatable_and_restores_the_mode():
    model = small(dropout=0.1)
    model.train()
    a = model.generate(ids(2, 3), 15, generator=torch.Generator().manual_seed(7))
    b = model.generate(ids(2, 3), 15, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and model.training


def test_top_k_samples_only_among_the_k_most_likely():
    model = small()
    with torch.no_grad():
        model.head.weight.normal_(0, 2.0)  # a peaked, varied distribution
    prompt = ids(4, 3)
    for k in (1, 3):
        out = model.generate(prompt, 10, top_k=k, temperature=2.0, generator=torch.Generator().manual_seed(k))
        with torch.no_grad():
            logits = model(out[:, :-1])[:, prompt.shape[1] - 1 :]  # the logits each new token was drawn from
        allowed = logits.topk(k, dim=-1).indices
        drawn = out[:, prompt.shape[1] :]
        assert (allowed == drawn[..., None]).any(-1).all()
    greedy = model.generate(prompt, 10, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, 10, top_k=1, generator=torch.Generator().manual_seed(0)))


def test_a_few_steps_learn_a_repeating_pattern():
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(vocab_size=5, context=8, dim=16, heads=2, layers=1))
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]] * 4)
    y = torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]] * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert model.generate(torch.tensor([0, 1]), 6, temperature=0).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, dim=10, heads=4)
    with pytest.raises(ValueError, match="positions"):
        GPTConfig(vocab_size=10, positions="rotary")
    with pytest.raises(ValueError, match="attention"):
        GPTConfig(vocab_size=10, attention="flash")
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(vocab_size=10, dropout=1.0)
    with pytest.raises(TypeError, match="GPTConfig"):
        TinyGPT({"vocab_size": 10})
    model = small()
    with pytest.raises(ValueError, match="at most context=12"):
        model(ids(1, 13))
    with pytest.raises(ValueError, match="0 … 10"):
        model(torch.tensor([[3, 11]]))
    with pytest.raises(TypeError, match="int64"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(ids(1, 2), 3, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(ids(1, 2), 3, top_k=0)
    with pytest.raises(ValueError, match="n must"):
        model.generate(ids(1, 2), -1)


# --------------------------------------------------------------------------------------------
# the switches: GPT-2 and Llama layouts in one model
# --------------------------------------------------------------------------------------------

LLAMA = dict(positions="rope", norm="rms", mlp="swiglu", kv_heads=2, bias=False, norm_eps=1e-6, mlp_hidden=24)
VARIANTS = {
    "chapter 9": {},
    "gpt-2": dict(mlp="gelu_tanh", tie_weights=True),
    "llama": LLAMA,
    "llama, tied, mqa": LLAMA | dict(kv_heads=1, tie_weights=True),
    "sinusoidal, rms, no bias": dict(positions="sinusoidal", norm="rms", bias=False),
    "rope, layer norm, swiglu with biases": dict(positions="rope", mlp="swiglu", rope_base=100.0),
}


def test_the_default_layout_is_unchanged():
    """Chapter 9's model and the checkpoints made from it keep their tensors and names."""
    model = small()
    block = ["ln1.weight", "ln1.bias", "attn.in_proj.weight", "attn.in_proj.bias", "attn.out_proj.weight",
             "attn.out_proj.bias", "ln2.weight", "ln2.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight",
             "mlp.2.bias"]  # fmt: skip
    expected = ["token_embedding.weight", "position_embedding.weight",
                *(f"blocks.{i}.{name}" for i in range(2) for name in block),
                "ln_final.weight", "ln_final.bias", "head.weight", "head.bias"]  # fmt: skip
    assert list(model.state_dict()) == expected
    assert model.blocks[0].attn.in_proj.weight.shape == (48, 16)
    positional = GPTConfig(11, 12, 16, 4, 2, 0.0, "sinusoidal", "torch")
    assert (positional.positions, positional.attention, positional.norm, positional.bias) == (
        "sinusoidal", "torch", "layer", True)  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_gives_the_same_logits_and_gradients_with_torch_kernels(variant):
    ours = small(**VARIANTS[variant]).double()
    fused = TinyGPT(dataclasses.replace(ours.config, attention="torch")).double()
    fused.load_state_dict(ours.state_dict())
    x, y = ids(3, SMALL["context"]), ids(3, SMALL["context"], seed=1)
    torch.testing.assert_close(ours(x), fused(x), rtol=1e-10, atol=1e-12)
    grads = [torch.autograd.grad(F.cross_entropy(m(x).flatten(0, 1), y.flatten()), list(m.parameters()))
             for m in (ours, fused)]  # fmt: skip
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_is_causal(variant):
    model = small(**VARIANTS[variant]).double()
    x = ids(2, SMALL["context"])
    for t in (0, 7):
        changed = x.clone()
        changed[:, t] = (changed[:, t] + 1) % SMALL["vocab_size"]
        before, after = model(x), model(changed)
        torch.testing.assert_close(before[:, :t], after[:, :t], rtol=0, atol=0)
        assert not torch.allclose(before[:, t], after[:, t])


def test_tied_weights_are_one_tensor():
    model = small(tie_weights=True)
    assert model.head.weight is model.token_embedding.weight and model.head.bias is None
    assert "head.weight" in model.state_dict()  # saved under both names, as torch does for shared tensors


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("attention", ["scratch", "torch"])
def test_prefill_and_decode_with_the_cache_equal_one_full_pass(variant, attention):
    model = small(**VARIANTS[variant], attention=attention).double().eval()
    x = ids(2, SMALL["context"])
    full = model(x)
    cache = model.new_cache(2)
    pieces = [model(x[:, :5], cache=cache)]  # prefill
    pieces += [model(x[:, t : t + 1], cache=cache) for t in range(5, 9)]  # decode, one token at a time
    pieces.append(model(x[:, 9:], cache=cache))  # several tokens at once, after cached ones
    assert cache[0].length == SMALL["context"]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="at most context=12 tokens; got length 1 after 12 cached"):
        model(x[:, :1], cache=cache)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_and_recomputed_greedy_generation_give_the_same_tokens(variant):
    model = small(**VARIANTS[variant])
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0, 1.0)  # a varied model: its greedy path is not a constant
    prompt = ids(3, 4)
    n = 2 * SMALL["context"]  # past the context: the window slides
    cached = model.generate(prompt, n, temperature=0)
    recomputed = model.generate(prompt, n, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)
    assert cached[:, 4:].unique().numel() > 3
    sampled = [model.generate(prompt, 20, top_p=0.9, generator=torch.Generator().manual_seed(3), use_cache=u)
               for u in (True, False)]  # fmt: skip
    assert torch.equal(*sampled)


def test_cache_errors():
    model = small()
    with pytest.raises(TypeError, match="list of 2 KVCache"):
        model(ids(1, 3), cache=[])
    with pytest.raises(ValueError, match="batch of 2; got ids for 1"):
        model(ids(1, 3), cache=model.new_cache(2))
    with pytest.raises(ValueError, match="capacity"):
        model.new_cache(1, capacity=SMALL["context"] + 1)
    with pytest.raises(ValueError, match="nothing is added"):
        small(positions="rope").positions(3)


# --------------------------------------------------------------------------------------------
# sizes by formula
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("heads,kv_heads", [(4, None), (4, 2), (4, 1), (2, 2)])
def test_parameter_counts_by_formula_equal_the_model(variant, heads, kv_heads):
    config = GPTConfig(**(SMALL | VARIANTS[variant] | dict(heads=heads, kv_heads=kv_heads)))
    counts = parameter_counts(config)
    assert sum(counts.values()) == count_parameters(TinyGPT(config))
    model = TinyGPT(config)
    blocks = sum(p.numel() for p in model.blocks.parameters())
    assert counts["attention"] + counts["feed-forward"] + counts["block norms"] == blocks


@pytest.mark.parametrize("tie", [True, False])
def test_parameter_counts_agree_with_the_scale_formula_for_gpt2(tie):
    config = GPTConfig(vocab_size=65, context=64, dim=48, heads=4, layers=2, tie_weights=tie)
    reference = scale.gpt_parameter_counts(vocab_size=65, context=64, dim=48, layers=2, tied_head=tie,
                                           head_bias=not tie)  # fmt: skip
    assert sum(parameter_counts(config).values()) == sum(reference.values())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_kv_cache_bytes_by_formula_equal_the_cache(variant, dtype):
    model = small(**VARIANTS[variant])
    for batch, length in ((1, 12), (3, 5)):
        cache = model.new_cache(batch, capacity=length, dtype=dtype)
        measured = sum(t.numel() * t.element_size() for layer in cache for t in (layer.keys, layer.values))
        assert kv_cache_bytes(model.config, batch, length, dtype) == measured == sum(c.nbytes for c in cache)
    gqa = GPTConfig(**(SMALL | dict(kv_heads=1)))
    assert kv_cache_bytes(GPTConfig(**SMALL), 2, 10) == 4 * kv_cache_bytes(gqa, 2, 10)
    with pytest.raises(ValueError, match="length"):
        kv_cache_bytes(gqa, 2, 0)


# --------------------------------------------------------------------------------------------
# sampling: temperature, top-k, top-p
# --------------------------------------------------------------------------------------------


def test_top_p_samples_only_from_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.1, 0.05, 0.8]]))
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next(logits, 1.0, None, gen, top_p=0.7) for _ in range(400)], dim=1)
    assert set(draws[0].tolist()) == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 crosses it: the nucleus is {0, 1}
    assert set(draws[1].tolist()) == {3}  # 0.8 alone crosses 0.7
    assert 0.5 < (draws[0] == 0).float().mean() < 0.75  # renormalised: 0.5 / 0.8 = 0.625
    draws = torch.cat([sample_next(logits, 1.0, None, gen, top_p=0.81) for _ in range(400)], dim=1)
    assert set(draws[1].tolist()) == {1, 3}
    for top_p in (1.0, None):  # the whole distribution
        a = sample_next(logits.repeat(50, 1), 1.0, None, torch.Generator().manual_seed(1), top_p=top_p)
        assert torch.equal(a, sample_next(logits.repeat(50, 1), 1.0, None, torch.Generator().manual_seed(1)))
    assert torch.equal(sample_next(logits, 1.0, None, gen, top_p=1e-6), logits.argmax(-1, keepdim=True))
    assert torch.equal(sample_next(logits, 0, None, gen, top_p=0.5), logits.argmax(-1, keepdim=True))


def test_temperature_zero_is_greedy_and_bad_sampling_arguments_are_refused():
    model = small()
    prompt = ids(2, 3)
    greedy = model.generate(prompt, 8, temperature=0)
    with torch.no_grad():
        for t in range(3, 11):
            assert torch.equal(greedy[:, t], model(greedy[:, :t])[:, -1].argmax(-1))
    for bad, message in (({"temperature": float("inf")}, "finite"), ({"temperature": float("nan")}, "temperature"),
                         ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_p": True}, "top_p")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            model.generate(prompt, 3, **bad)
