"""companion.models.TinyGPT: torch's attention and ours give the same logits, causality, sizes, generation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from companion.models import GPTConfig, TinyGPT, count_parameters

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
