"""companion.optim against torch.optim: same trajectories, parameter groups, state round trips, bad input."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch

from companion import optim

Problem = tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], torch.Tensor]]

STEPS = 200
F64 = torch.float64


def param(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=F64).requires_grad_()


def quadratic(seed: int) -> Problem:
    """½θᵀAθ - bᵀθ over three tensors of different shapes (23 numbers), A SPD with eigenvalues in [0.1, 5];
    a fourth tensor is left out of the loss, so its grad stays None."""
    gen = torch.Generator().manual_seed(seed)
    params = [param(gen, 3), param(gen, 2, 4), param(gen, 2, 3, 2), param(gen, 2, 2)]
    n = sum(p.numel() for p in params[:3])
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    a = q @ torch.diag(torch.linspace(0.1, 5.0, n, dtype=F64)) @ q.T
    b = torch.randn(n, generator=gen, dtype=F64)

    def loss(ps: list[torch.Tensor]) -> torch.Tensor:
        theta = torch.cat([p.reshape(-1) for p in ps[:3]])
        return 0.5 * theta @ a @ theta - b @ theta

    return params, loss


def mlp(seed: int) -> Problem:
    """Mean squared error of a 5-8-3 tanh MLP on 16 random samples; a fifth tensor is unused (grad None)."""
    gen = torch.Generator().manual_seed(seed)
    params = [param(gen, 8, 5), param(gen, 8), param(gen, 3, 8), param(gen, 3), param(gen, 2, 2)]
    x, y = torch.randn(16, 5, generator=gen, dtype=F64), torch.randn(16, 3, generator=gen, dtype=F64)

    def loss(ps: list[torch.Tensor]) -> torch.Tensor:
        w1, b1, w2, b2 = ps[:4]
        return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

    return params, loss


PROBLEMS = {"quadratic": quadratic, "mlp": mlp}

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.02, momentum=0.9)),
    ("SGD", dict(lr=0.02, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.02, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.02, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.005, alpha=0.9, eps=1e-4)),
    ("RMSprop", dict(lr=0.005, momentum=0.9)),
    ("RMSprop", dict(lr=0.005, centered=True, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.002, centered=True, momentum=0.5)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    ("Adam", dict(lr=0.01, betas=(0.0, 0.5))),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.5)),
]


def train(opt: torch.optim.Optimizer, params: list[torch.Tensor], loss: Callable, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        loss(params).backward()
        opt.step()


def trajectory_end(module: Any, name: str, kwargs: dict[str, Any], problem: str, seed: int) -> list[torch.Tensor]:
    params, loss = PROBLEMS[problem](seed)
    train(getattr(module, name)(params, **kwargs), params, loss, STEPS)
    return params


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize(("name", "kwargs"), SETTINGS, ids=[f"{n}-{kw}" for n, kw in SETTINGS])
def test_matches_torch_for_200_steps(name: str, kwargs: dict[str, Any], problem: str) -> None:
    start = [p.detach().clone() for p in PROBLEMS[problem](seed=7)[0]]
    ours = trajectory_end(optim, name, kwargs, problem, seed=7)
    theirs = trajectory_end(torch.optim, name, kwargs, problem, seed=7)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)
    assert (ours[0] - start[0]).abs().max() > 1e-2, "the parameters hardly moved: the comparison would be empty"
    assert torch.equal(ours[-1], start[-1]), "a parameter whose grad is None must not change"


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW"])
def test_parameters_without_grad_get_no_state(name: str) -> None:
    params, loss = mlp(seed=3)
    opt = getattr(optim, name)(params, lr=0.01, weight_decay=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    train(opt, params, loss, steps=3)
    assert len(opt.state) == 4 and params[-1] not in opt.state


def grouped(module: Any, name: str) -> list[torch.Tensor]:
    """Two groups with their own lr (and more overrides); the second is added after 50 steps."""
    params, loss = mlp(seed=11)
    override = {"SGD": {"momentum": 0.5}, "RMSprop": {"alpha": 0.9}}.get(name, {"betas": (0.8, 0.9)})
    opt = getattr(module, name)([{"params": params[:2], "lr": 0.03}], lr=0.01, weight_decay=0.01)
    train(opt, params, loss, 50)
    opt.add_param_group({"params": params[2:4], "lr": 0.003, **override})
    train(opt, params, loss, 150)
    return params


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW"])
def test_parameter_groups_match_torch(name: str) -> None:
    for p, q in zip(grouped(optim, name), grouped(torch.optim, name)):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("SGD", dict(lr=0.02, momentum=0.9, nesterov=True)),
        ("RMSprop", dict(lr=0.005, momentum=0.5, centered=True)),
        ("Adam", dict(lr=0.01, weight_decay=0.1)),
        ("AdamW", dict(lr=0.01)),
    ],
)
def test_state_dict_round_trip_continues_identically(name: str, kwargs: dict[str, Any]) -> None:
    cls = getattr(optim, name)
    whole, loss = mlp(seed=5)
    train(cls(whole, **kwargs), whole, loss, STEPS)

    first, _ = mlp(seed=5)
    opt = cls(first, **kwargs)
    train(opt, first, loss, STEPS // 2)
    checkpoint = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "optimizer": opt.state_dict()}, checkpoint)
    checkpoint.seek(0)
    saved = torch.load(checkpoint)

    resumed = [p.clone().requires_grad_() for p in saved["params"]]
    fresh = cls(resumed, **kwargs)
    fresh.load_state_dict(saved["optimizer"])
    assert len(fresh.state) == 4 and all(fresh.state[p] for p in resumed[:4])
    train(fresh, resumed, loss, STEPS - STEPS // 2)
    for p, q in zip(resumed, whole):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW"])
def test_step_with_closure_returns_the_loss_and_matches_torch(name: str) -> None:
    results = []
    for module in (optim, torch.optim):
        params, loss = quadratic(seed=2)
        opt = getattr(module, name)(params, lr=0.01)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            value = loss(params)
            value.backward()
            return value

        losses = [opt.step(closure).item() for _ in range(20)]
        results.append((losses, params))
    (ours, our_params), (theirs, their_params) = results
    assert ours == pytest.approx(theirs, abs=1e-10) and ours[-1] < ours[0]
    for p, q in zip(our_params, their_params):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)


INVALID: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("SGD", dict(lr=-0.1), ValueError, r"lr must be >= 0; got -0\.1"),
    ("SGD", dict(lr="0.1"), TypeError, r"lr must be a real number; got str '0\.1'"),
    ("SGD", dict(lr=float("nan")), ValueError, r"lr must be a finite number; got nan"),
    ("SGD", dict(momentum=-0.5), ValueError, r"momentum must be in \[0, 1\); got -0\.5"),
    ("SGD", dict(momentum=1.0), ValueError, r"momentum must be in \[0, 1\); got 1\.0"),
    ("SGD", dict(momentum=0.9, dampening=1.5), ValueError, r"dampening must be in \[0, 1\]; got 1\.5"),
    ("SGD", dict(weight_decay=-1e-4), ValueError, r"weight_decay must be >= 0; got -0\.0001"),
    ("SGD", dict(nesterov=True), ValueError, r"nesterov=True needs momentum > 0 and dampening = 0; got momentum=0"),
    ("SGD", dict(momentum=0.9, dampening=0.1, nesterov=True), ValueError, r"got momentum=0\.9, dampening=0\.1"),
    ("SGD", dict(momentum=0.9, nesterov=1), TypeError, r"nesterov must be True or False; got int 1"),
    ("RMSprop", dict(lr=-1), ValueError, r"lr must be >= 0; got -1"),
    ("RMSprop", dict(alpha=1.0), ValueError, r"alpha must be in \[0, 1\); got 1\.0"),
    ("RMSprop", dict(alpha=-0.1), ValueError, r"alpha must be in \[0, 1\); got -0\.1"),
    ("RMSprop", dict(eps=-1e-8), ValueError, r"eps must be >= 0; got -1e-08"),
    ("RMSprop", dict(momentum=-0.1), ValueError, r"momentum must be in \[0, 1\); got -0\.1"),
    ("RMSprop", dict(weight_decay=-1.0), ValueError, r"weight_decay must be >= 0; got -1\.0"),
    ("RMSprop", dict(centered="yes"), TypeError, r"centered must be True or False; got str 'yes'"),
    ("Adam", dict(lr=-1e-3), ValueError, r"lr must be >= 0; got -0\.001"),
    ("Adam", dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\] \(beta1\) must be in \[0, 1\); got 1\.0"),
    ("Adam", dict(betas=(-0.1, 0.999)), ValueError, r"betas\[0\] \(beta1\) must be in \[0, 1\); got -0\.1"),
    ("Adam", dict(betas=(0.9, 1.5)), ValueError, r"betas\[1\] \(beta2\) must be in \[0, 1\); got 1\.5"),
    ("Adam", dict(betas=0.9), TypeError, r"betas must be a pair \(beta1, beta2\); got 0\.9"),
    ("Adam", dict(betas=(0.9, 0.99, 0.999)), TypeError, r"betas must be a pair"),
    ("Adam", dict(eps=-1.0), ValueError, r"eps must be >= 0; got -1\.0"),
    ("Adam", dict(weight_decay=-0.1), ValueError, r"weight_decay must be >= 0; got -0\.1"),
    ("AdamW", dict(weight_decay=-0.01), ValueError, r"weight_decay must be >= 0; got -0\.01"),
    ("AdamW", dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\] \(beta2\) must be in \[0, 1\); got 1\.0"),
    ("AdamW", dict(eps=float("inf")), ValueError, r"eps must be a finite number; got inf"),
]


@pytest.mark.parametrize(("name", "kwargs", "error", "message"), INVALID, ids=[f"{n}-{kw}" for n, kw, *_ in INVALID])
def test_invalid_hyperparameters_raise(name: str, kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        getattr(optim, name)([torch.zeros(2, requires_grad=True)], **kwargs)


def test_invalid_group_overrides_raise_and_are_not_added() -> None:
    p, q = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"lr must be >= 0; got -1"):
        optim.SGD([{"params": [p], "lr": -1}], lr=0.1)
    opt = optim.Adam([p])
    with pytest.raises(ValueError, match=r"betas\[1\] \(beta2\) must be in \[0, 1\); got 1"):
        opt.add_param_group({"params": [q], "betas": (0.9, 1)})
    assert len(opt.param_groups) == 1
