"""companion.scale: parameter counts against instantiated models, memory against a real optimizer, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from companion import scale
from companion.models import GPTConfig, TinyGPT, count_parameters


def unique_parameters(model: nn.Module) -> int:
    """Parameters counted once each, also when a tensor is shared (a tied head)."""
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


class GPT2Like(nn.Module):
    """A GPT-2-shaped model from torch.nn parts: pre-norm blocks, learned positions, tied head."""

    def __init__(self, vocab: int, context: int, dim: int, layers: int, bias: bool = True) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(context, dim)
        block = dict(d_model=dim, nhead=2, dim_feedforward=4 * dim, norm_first=True, batch_first=True, bias=bias)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(**block) for _ in range(layers))
        self.norm = nn.LayerNorm(dim, bias=bias)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.tokens.weight


class BERTLike(nn.Module):
    """A BERT-shaped encoder from torch.nn parts: three embeddings and their norm, post-norm blocks, pooler."""

    def __init__(self, vocab: int, context: int, dim: int, layers: int) -> None:
        super().__init__()
        self.words, self.positions = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.types = nn.Embedding(2, dim)
        self.norm = nn.LayerNorm(dim)
        block = dict(d_model=dim, nhead=2, dim_feedforward=4 * dim, batch_first=True)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(**block) for _ in range(layers))
        self.pooler = nn.Linear(dim, dim)


@pytest.mark.parametrize("vocab, context, dim, layers", [(65, 16, 8, 1), (100, 32, 16, 2), (1000, 64, 32, 3)])
def test_gpt_formula_equals_a_gpt2_like_model_exactly(vocab, context, dim, layers):
    model = GPT2Like(vocab, context, dim, layers)
    assert scale.gpt_parameters(vocab_size=vocab, context=context, dim=dim, layers=layers) == unique_parameters(model)


def test_gpt_formula_without_biases():
    model = GPT2Like(50, 16, 8, 2, bias=False)
    assert scale.gpt_parameters(vocab_size=50, context=16, dim=8, layers=2, bias=False) == unique_parameters(model)


def test_gpt_formula_with_an_untied_head_and_a_bias():
    model = GPT2Like(50, 16, 8, 2)
    model.head = nn.Linear(8, 50)
    counted = scale.gpt_parameters(vocab_size=50, context=16, dim=8, layers=2, tied_head=False, head_bias=True)
    assert counted == unique_parameters(model)


@pytest.mark.parametrize(
    "config",
    [
        GPTConfig(vocab_size=65, context=16, dim=8, heads=2, layers=1),
        GPTConfig(vocab_size=65, context=64, dim=48, heads=4, layers=3),
        GPTConfig(vocab_size=10, context=8, dim=32, heads=4, layers=2, positions="sinusoidal"),
    ],
)
def test_gpt_formula_equals_tinygpt_exactly(config):
    counted = scale.gpt_parameters(
        vocab_size=config.vocab_size, context=config.context, dim=config.dim, layers=config.layers,
        tied_head=False, head_bias=True, learned_positions=config.positions == "learned",
    )  # fmt: skip
    assert counted == count_parameters(TinyGPT(config))


@pytest.mark.parametrize("vocab, context, dim, layers", [(100, 32, 16, 1), (500, 64, 32, 2)])
def test_bert_formula_equals_a_bert_like_model_exactly(vocab, context, dim, layers):
    model = BERTLike(vocab, context, dim, layers)
    assert scale.bert_parameters(vocab_size=vocab, context=context, dim=dim, layers=layers) == unique_parameters(model)


def test_published_sizes():
    gpt2 = dict(vocab_size=50257, context=1024)
    assert scale.gpt_parameters(**gpt2, dim=768, layers=12) == 124_439_808  # GPT-2 small, as released
    assert scale.gpt_parameters(**gpt2, dim=1024, layers=24) == 354_823_168
    assert scale.gpt_parameters(**gpt2, dim=1280, layers=36) == 774_030_080
    assert scale.gpt_parameters(**gpt2, dim=1600, layers=48) == 1_557_611_200
    assert scale.bert_parameters(dim=768, layers=12) == 109_482_240
    assert scale.bert_parameters(dim=1024, layers=24) == 335_141_888
    gpt3 = scale.gpt_parameters(vocab_size=50257, context=2048, dim=12288, layers=96)
    assert 174e9 < gpt3 < 175.5e9


def test_parts_add_up_and_the_rule_of_thumb():
    parts = scale.gpt_parameter_counts(vocab_size=50257, context=1024, dim=768, layers=12)
    assert parts["head"] == 0 and sum(parts.values()) == 124_439_808
    blocks = parts["attention"] + parts["feed-forward"] + parts["block layer norms"]
    assert blocks == 12 * (12 * 768**2 + 13 * 768)


@pytest.mark.parametrize(
    "bad",
    [dict(vocab_size=0), dict(dim=-1), dict(layers=2.5), dict(context=True), dict(mlp_ratio=0), dict(dim="768")],
)
def test_gpt_counts_reject_bad_sizes(bad):
    sizes = dict(vocab_size=10, context=8, dim=16, layers=2) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        scale.gpt_parameters(**sizes)


def test_bert_counts_reject_bad_sizes():
    with pytest.raises(ValueError, match="layers"):
        scale.bert_parameters(dim=16, layers=0)


def test_training_memory_bytes_per_parameter():
    n = 1000
    assert scale.training_memory(n)["total"] == 16 * n
    mixed = scale.training_memory(n, precision="mixed")
    assert mixed == {"weights": 2 * n, "gradients": 2 * n, "master weights": 4 * n, "optimizer": 8 * n, "total": 16 * n}
    assert scale.training_memory(n, "sgd")["total"] == 8 * n
    assert scale.training_memory(n, "momentum", "mixed")["total"] == 12 * n


@pytest.mark.parametrize("bad", [dict(n_params=-1), dict(n_params=1.5), dict(optimizer="lion"), dict(precision="fp8")])
def test_training_memory_rejects_bad_input(bad):
    args = dict(n_params=10) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        scale.training_memory(**args)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda p: torch.optim.Adam(p, lr=1e-3), "adam"),
        (lambda p: torch.optim.AdamW(p, lr=1e-3), "adamw"),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "momentum"),
        (lambda p: torch.optim.SGD(p, lr=0.1), "sgd"),
    ],
)
def test_measured_memory_matches_the_formula(make, name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    optimizer = make(model.parameters())
    F.cross_entropy(model(torch.randn(8, 30)), torch.randint(5, (8,))).backward()
    optimizer.step()
    measured = scale.measured_training_memory(model, optimizer)
    formula = scale.training_memory(count_parameters(model), name)
    for part in ("weights", "gradients", "optimizer"):
        assert measured[part] == formula[part], part
    assert measured["total"] == formula["total"] + measured["bookkeeping"]


def test_measured_memory_rejects_non_models():
    with pytest.raises(TypeError, match="Module"):
        scale.measured_training_memory("model", torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1))


def test_saved_activations_of_a_small_network():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    x = torch.randn(7, 10)
    # the first layer keeps its input, the ReLU its output (which the last layer keeps too)
    assert scale.saved_activation_bytes(lambda: model(x).sum(), model) == 4 * 7 * (10 + 20)
    assert scale.saved_activation_bytes(lambda: model(torch.randn(14, 10)).sum(), model) == 4 * 14 * (10 + 20)


def test_saved_activations_rejects_non_functions():
    with pytest.raises(TypeError, match="function"):
        scale.saved_activation_bytes(42)


@pytest.mark.parametrize("input_grad, factor", [(True, 6), (False, 4)])
def test_count_flops_of_a_linear_layer(input_grad, factor):
    layer = nn.Linear(30, 20, bias=False)
    x = torch.randn(8, 30, requires_grad=input_grad)
    assert scale.count_flops(lambda: layer(x).sum().backward()) == factor * 8 * 30 * 20


def test_count_flops_of_a_tinygpt_step_is_six_n_d_plus_attention():
    c = GPTConfig(vocab_size=65, context=32, dim=48, heads=4, layers=2, attention="torch")
    model = TinyGPT(c)
    batch = 8
    ids = torch.randint(65, (batch, c.context))
    flops = scale.count_flops(lambda: F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward())
    tokens = batch * c.context
    matmul_weights = c.layers * 12 * c.dim**2 + c.dim * c.vocab_size
    attention = 12 * c.layers * c.context * c.dim * tokens  # q·kᵀ and weights·v, forward and backward
    assert flops == 6 * matmul_weights * tokens + attention
    n = count_parameters(model)
    assert abs(flops / scale.training_flops(n, tokens) - 1) < 0.05


def test_training_flops_and_gpu_hours():
    assert scale.training_flops(175e9, 300e9) == pytest.approx(3.15e23)
    assert scale.gpu_hours(3600 * 1e12, peak_flops=1e12, utilization=1.0) == pytest.approx(1.0)
    assert scale.gpu_hours(3600 * 1e12, peak_flops=1e12, utilization=0.5) == pytest.approx(2.0)
    for bad in (dict(utilization=0), dict(utilization=1.5), dict(peak_flops=-1), dict(flops=math.inf)):
        args = dict(flops=1e20, peak_flops=1e15) | bad
        with pytest.raises(ValueError, match=next(iter(bad))):
            scale.gpu_hours(**args)
    with pytest.raises(ValueError, match="n_tokens"):
        scale.training_flops(1e6, 0)


def test_fit_power_law_recovers_a_power_law():
    x = [1e3, 1e4, 1e5, 1e6]
    law = scale.fit_power_law(x, [5.0 * v**-0.076 for v in x])
    assert law.exponent == pytest.approx(0.076) and law.coefficient == pytest.approx(5.0)
    assert law(1e4) == pytest.approx(5.0 * 1e4**-0.076)


@pytest.mark.parametrize(
    "x, y", [([1.0], [1.0]), ([1.0, 2.0], [1.0]), ([1.0, -2.0], [1.0, 2.0]), ([3.0, 3.0], [1.0, 2.0])]
)
def test_fit_power_law_rejects_bad_input(x, y):
    with pytest.raises(ValueError):
        scale.fit_power_law(x, y)
