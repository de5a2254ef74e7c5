"""companion.lora against Hugging Face peft: the same model, the same A and B, the same outputs and gradients
(float64, random shapes); a fresh wrap changes nothing; merging changes nothing; parameter counts by formula."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion import lora
from companion.models import GPTConfig, TinyGPT, count_parameters

peft = pytest.importorskip("peft")

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)
fast = settings(max_examples=20, deadline=None)


class Net(nn.Module):
    """Three named linear layers with nonlinearities between them, and a head."""

    def __init__(self, sizes: list[int], classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(sizes[0], sizes[1])
        self.mid = nn.Linear(sizes[1], sizes[2], bias=False)
        self.out = nn.Linear(sizes[2], sizes[3])
        self.head = nn.Linear(sizes[3], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.out(torch.tanh(self.mid(torch.tanh(self.embed(x)))))))


def tiny_gpt(seed: int = 0, dtype: torch.dtype = torch.float32) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT(GPTConfig(vocab_size=11, context=8, dim=16, heads=2, layers=2)).to(dtype)


def peft_twin(
    model: nn.Module, ours: nn.Module, targets: list[str], r: int, alpha: float, dropout: float = 0.0
) -> nn.Module:
    """peft's LoRA on a copy of ``model`` (taken before wrapping), with our A and B copied across."""
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    theirs = peft.get_peft_model(copy.deepcopy(model), config)
    for name, layer in lora.lora_layers(ours).items():
        twin = theirs.base_model.model.get_submodule(name)
        with torch.no_grad():
            twin.lora_A["default"].weight.copy_(layer.lora_A)
            twin.lora_B["default"].weight.copy_(layer.lora_B)
    return theirs


net_cases = st.tuples(
    st.lists(st.integers(1, 9), min_size=4, max_size=4),  # widths
    st.integers(1, 4),  # classes
    st.integers(1, 6),  # rank
    st.sampled_from([1.0, 2.0, 16.0, 0.5]),  # alpha
    st.sampled_from([["embed", "out"], ["mid"], ["embed", "mid", "out"]]),  # targets
    st.integers(1, 5),  # batch
    st.sampled_from([0.0, 0.3]),  # dropout on the low-rank path
    st.integers(0, 2**31 - 1),  # seed
)


@fast
@given(net_cases)
def test_outputs_and_gradients_equal_peft(case):
    sizes, classes, r, alpha, targets, batch, dropout, seed = case
    torch.manual_seed(seed)
    model = Net(sizes, classes).to(F64)
    ours = lora.wrap(copy.deepcopy(model), targets, r=r, alpha=alpha, dropout=dropout).train()
    for layer in lora.lora_layers(ours).values():
        nn.init.normal_(layer.lora_B)  # a trained-looking update, not the zero start
    theirs = peft_twin(model, ours, targets, r, alpha, dropout).train()
    x = torch.randn(batch, sizes[0], dtype=F64)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(seed)  # the same dropout masks, drawn layer by layer in the same order
    y_ours = ours(x_ours)
    torch.manual_seed(seed)
    y_theirs = theirs(x_theirs)
    torch.testing.assert_close(y_ours, y_theirs, **TOL)
    weights = torch.randn(y_ours.shape, dtype=F64)
    (y_ours * weights).sum().backward()
    (y_theirs * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, **TOL)
    for name, layer in lora.lora_layers(ours).items():
        twin = theirs.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.lora_A.grad, twin.lora_A["default"].weight.grad, **TOL)
        torch.testing.assert_close(layer.lora_B.grad, twin.lora_B["default"].weight.grad, **TOL)
    assert count_parameters(ours) == theirs.get_nb_trainable_parameters()[0]


def test_tiny_gpt_equals_peft_in_value_and_gradient():
    model = tiny_gpt(1, F64)
    targets = ["in_proj", "out_proj", "mlp.0", "mlp.2"]
    ours = lora.wrap(copy.deepcopy(model), targets, r=3, alpha=6)
    for layer in lora.lora_layers(ours).values():
        nn.init.normal_(layer.lora_B, std=0.1)
    theirs = peft_twin(model, ours, targets, 3, 6)
    ids = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(2))
    y_ours, y_theirs = ours(ids), theirs(ids)
    torch.testing.assert_close(y_ours, y_theirs, **TOL)
    y_ours.square().sum().backward()
    y_theirs.square().sum().backward()
    for name, layer in lora.lora_layers(ours).items():
        twin = theirs.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.lora_A.grad, twin.lora_A["default"].weight.grad, **TOL)
        torch.testing.assert_close(layer.lora_B.grad, twin.lora_B["default"].weight.grad, **TOL)


def test_the_defaults_are_pefts():
    defaults = inspect.signature(lora.wrap).parameters
    config = peft.LoraConfig()
    assert (defaults["r"].default, defaults["alpha"].default, defaults["dropout"].default) == (
        config.r, config.lora_alpha, config.lora_dropout)  # fmt: skip


def test_a_starts_as_peft_starts_it_and_b_at_zero():
    """A is Kaiming-uniform with a = √5: uniform on ±1/√in, as peft's A."""
    torch.manual_seed(0)
    model = Net([400, 300, 5, 5], 2)
    ours = lora.wrap(copy.deepcopy(model), ["embed"], r=64)
    theirs = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=64, lora_alpha=64, target_modules=["embed"]))
    a_ours = ours.embed.lora_A.detach()
    a_theirs = theirs.base_model.model.embed.lora_A["default"].weight.detach()
    bound = 1 / math.sqrt(400)
    for a in (a_ours, a_theirs):
        assert a.abs().max() <= bound and a.abs().max() > 0.99 * bound
        assert abs(a.std().item() - bound / math.sqrt(3)) < 0.01 * bound
    assert torch.equal(ours.embed.lora_B, torch.zeros(300, 64))


def test_a_is_drawn_from_the_cpu_generator_whatever_the_base_layers_device():
    """A seed gives the same A on every device: here a layer on ``meta`` (no values) consumes the CPU
    generator exactly as one on the CPU does, and the CPU layer's A is that generator's Kaiming draw."""
    after = {}
    for device in ("cpu", "meta"):
        base = nn.Linear(7, 5, device=device, dtype=F64)
        torch.manual_seed(3)
        layer = lora.LoRALinear(base, r=2)
        assert layer.lora_A.device.type == device and layer.lora_A.dtype == F64
        after[device] = torch.rand(4)
        if device == "cpu":
            torch.manual_seed(3)
            expected = nn.init.kaiming_uniform_(torch.empty(2, 7, dtype=F64), a=math.sqrt(5))
            assert torch.equal(layer.lora_A.detach(), expected)
    assert torch.equal(after["cpu"], after["meta"])


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_a_fresh_wrap_gives_exactly_the_base_models_outputs(dropout):
    model = tiny_gpt(2)
    ids = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(0))
    before = model(ids)
    wrapped = lora.wrap(model, ["in_proj", "out_proj", "mlp.*"], r=4, alpha=8, dropout=dropout).train()
    assert torch.equal(wrapped(ids), before)


def test_wrap_freezes_everything_but_a_b_and_the_modules_kept_trainable():
    model = tiny_gpt()
    lora.wrap(model, ["in_proj"], r=2, trainable=["head"])
    training = {name for name, p in model.named_parameters() if p.requires_grad}
    assert training == {f"blocks.{i}.attn.in_proj.lora_{m}" for i in range(2) for m in "AB"} | {"head.weight", "head.bias"}


@pytest.mark.parametrize("r", [1, 2, 8])
def test_the_trainable_count_by_formula_equals_the_counted_one(r):
    model = tiny_gpt()
    targets = ["in_proj", "out_proj", "mlp.0", "mlp.2"]
    by_formula = lora.lora_parameter_count(model, targets, r)
    assert by_formula == r * 2 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16))
    head = count_parameters(model.head)
    assert count_parameters(lora.wrap(model, targets, r=r, trainable="head")) == by_formula + head


def train_a_few_steps(model: nn.Module, steps: int = 5) -> None:
    gen = torch.Generator().manual_seed(3)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(steps):
        ids = torch.randint(0, 11, (4, 8), generator=gen)
        loss = nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_merged_equals_unmerged_after_training_and_unmerge_restores_the_weights():
    model = lora.wrap(tiny_gpt(4), ["in_proj", "out_proj", "mlp.0", "mlp.2"], r=4, alpha=8).eval()
    weights = {name: layer.weight.detach().clone() for name, layer in lora.lora_layers(model).items()}
    train_a_few_steps(model)
    ids = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        unmerged = model(ids)
        merged = lora.merge(model)(ids)
    assert not torch.equal(unmerged, tiny_gpt(4)(ids)), "training moved the outputs"
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-6)
    lora.unmerge(model)
    for name, layer in lora.lora_layers(model).items():
        torch.testing.assert_close(layer.weight, weights[name], rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), unmerged, rtol=0, atol=1e-6)


def test_unwrap_leaves_the_plain_architecture_with_the_same_outputs():
    model = lora.wrap(tiny_gpt(6), ["in_proj", "mlp.2"], r=2).eval()
    train_a_few_steps(model, 3)
    ids = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids)
        after = lora.unwrap(model)(ids)
    assert lora.lora_layers(model) == {}
    assert type(model.blocks[0].attn.in_proj) is nn.Linear
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_merging_twice_is_an_error_that_changes_nothing():
    model = lora.wrap(tiny_gpt(), ["in_proj"], r=2)
    train_a_few_steps(model, 2)
    lora.merge(model)
    weight = model.blocks[0].attn.in_proj.weight.detach().clone()
    with pytest.raises(RuntimeError, match="already merged.*unmerge"):
        lora.merge(model)
    with pytest.raises(RuntimeError, match="already merged"):
        model.blocks[0].attn.in_proj.merge()
    assert torch.equal(model.blocks[0].attn.in_proj.weight, weight)
    lora.unmerge(model)
    with pytest.raises(RuntimeError, match="not merged"):
        lora.unmerge(model)


def test_bad_calls_get_clear_errors():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="no module.*'q_proj'.*blocks.0.attn.in_proj"):
        lora.wrap(model, ["q_proj"], r=2)
    with pytest.raises(TypeError, match="nn.Linear.*LayerNorm"):
        lora.wrap(model, ["ln_final"], r=2)
    for r in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="r must be a positive int"):
            lora.wrap(tiny_gpt(), ["in_proj"], r=r)
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        lora.LoRALinear(nn.Linear(2, 2), r=1, alpha=float("nan"))
    with pytest.raises(ValueError, match="dropout"):
        lora.LoRALinear(nn.Linear(2, 2), r=1, dropout=1.0)
    with pytest.raises(TypeError, match="nn.Linear"):
        lora.LoRALinear(nn.Conv1d(2, 2, 1), r=1)
    with pytest.raises(ValueError, match="no LoRA layers"):
        lora.merge(tiny_gpt())
    lora.wrap(model, ["in_proj"], r=2)
    with pytest.raises(ValueError, match="already carry LoRA"):
        lora.wrap(model, ["in_proj"], r=2)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        lora.wrap("model", ["in_proj"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_a_fresh_wrap_changes_nothing_and_merging_changes_outputs_by_at_most_1e_6():
    model = tiny_gpt(7).cuda()
    ids = torch.randint(0, 11, (4, 8), device="cuda")
    before = model(ids)
    lora.wrap(model, ["in_proj", "out_proj", "mlp.*"], r=4)
    assert torch.equal(model(ids), before)
    for layer in lora.lora_layers(model).values():
        nn.init.normal_(layer.lora_B, std=0.05)
    with torch.no_grad():
        unmerged = model(ids)
        merged = lora.merge(model)(ids)
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-6)
