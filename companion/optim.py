"""Optimizers written out: SGD (with momentum and Nesterov), RMSprop, Adam and AdamW.

Each class is a ``torch.optim.Optimizer``, so it drops into any training loop:
``zero_grad()``, parameter groups, ``state_dict()``/``load_state_dict()`` and the
schedulers of ``torch.optim.lr_scheduler`` all come from the base class. Each
``step()`` spells its update rule out in a few lines of tensor code, one
parameter tensor at a time, with the same conventions as ``torch.optim``
(against which the tests check them to 1e-10 in float64).

Notation: θ a parameter tensor, g = ∂L/∂θ its gradient (same shape and dtype),
η the learning rate ``lr``, λ the weight decay, t = 1, 2, ... the step count.
Squares, square roots and divisions of tensors are element-wise.

In-place ops (``mul_``, ``add_``, ``lerp_``, ``addcmul_``, ``addcdiv_``) update the
state where it lives, so a step allocates no more than a temporary or two per tensor.
Parameters whose ``grad`` is ``None`` are skipped: they get no update and no state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.optim import Optimizer

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]
Closure = Callable[[], torch.Tensor | float]

__all__ = ["SGD", "RMSprop", "Adam", "AdamW"]


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _at_least_zero(name: str, value: object) -> None:
    if _real(name, value) < 0:
        raise ValueError(f"{name} must be >= 0; got {value!r}")


def _fraction(name: str, value: object, *, one_allowed: bool = False) -> None:
    x = _real(name, value)
    if not (0 <= x < 1 or (one_allowed and x == 1)):
        raise ValueError(f"{name} must be in [0, 1{']' if one_allowed else ')'}; got {value!r}")


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")


def _with_grad(group: dict[str, Any]) -> Iterator[torch.Tensor]:
    """The parameters of ``group`` that have a gradient (torch skips the others too)."""
    return (p for p in group["params"] if p.grad is not None)


def _evaluate(closure: Closure | None) -> torch.Tensor | float | None:
    """Re-evaluate the loss (with autograd on) when a closure is given, as ``torch.optim`` does."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class _CheckedOptimizer(Optimizer):
    """An ``Optimizer`` that checks the hyper-parameters of every parameter group as it is added.

    The constructor's values and each group's overrides (``{"params": ..., "lr": ...}``)
    pass through ``_check_hyperparameters``, which raises ``ValueError``/``TypeError``.
    """

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict):
            self._check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        raise NotImplementedError


class SGD(_CheckedOptimizer):
    r"""Stochastic gradient descent, with optional (Nesterov) momentum and weight decay.

    Per parameter, with μ = ``momentum`` and τ = ``dampening``:

    .. math::
        g \leftarrow g + \lambda\theta, \qquad
        b_t = \mu b_{t-1} + (1-\tau) g \;\; (b_1 = g), \qquad
        \theta \leftarrow \theta - \eta \cdot \begin{cases}
            g + \mu b_t & \text{Nesterov} \\ b_t & \text{momentum} \\ g & \mu = 0
        \end{cases}

    The momentum buffer ``b`` (state ``"momentum_buffer"``, the parameter's shape)
    starts as the first gradient itself, undamped, as in ``torch.optim.SGD``.

    Args:
        params: tensors to optimise, or dicts of parameter groups.
        lr: learning rate η >= 0.
        momentum: μ in [0, 1); 0 is plain SGD.
        dampening: τ in [0, 1], the share of each new gradient held back from the buffer.
        weight_decay: λ >= 0, an L2 penalty λ/2·‖θ‖² added to the loss.
        nesterov: look ahead along the buffer (needs μ > 0 and τ = 0).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        _at_least_zero("lr", group["lr"])
        _fraction("momentum", group["momentum"])
        _fraction("dampening", group["dampening"], one_allowed=True)
        _flag("nesterov", group["nesterov"])
        _at_least_zero("weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] == 0 or group["dampening"] != 0):
            raise ValueError(
                "nesterov=True needs momentum > 0 and dampening = 0; "
                f"got momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor | float | None:
        """Update every parameter that has a gradient; return the closure's loss, if any."""
        loss = _evaluate(closure)
        for group in self.param_groups:
            lr, mu, tau, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
            for p in _with_grad(group):
                g = p.grad
                if wd:
                    g = g.add(p, alpha=wd)  # g + λθ
                if mu:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        b = state["momentum_buffer"] = g.clone()  # b₁ = g
                    else:
                        b = state["momentum_buffer"].mul_(mu).add_(g, alpha=1 - tau)  # μb + (1-τ)g
                    g = g.add(b, alpha=mu) if group["nesterov"] else b
                p.add_(g, alpha=-lr)  # θ ← θ - ηg
        return loss


class RMSprop(_CheckedOptimizer):
    r"""RMSprop: divide each gradient by a running root-mean-square of its past values.

    Per parameter, with α = ``alpha`` and μ = ``momentum``:

    .. math::
        g \leftarrow g + \lambda\theta, \qquad
        v_t = \alpha v_{t-1} + (1-\alpha) g^2, \qquad
        \theta \leftarrow \theta - \eta \, \frac{g}{\sqrt{v_t} + \epsilon}

    ``centered=True`` divides by a running standard deviation instead,
    :math:`\sqrt{v_t - \bar g_t^2} + \epsilon` with :math:`\bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g`.
    With μ > 0 the scaled gradient feeds a momentum buffer,
    :math:`b_t = \mu b_{t-1} + g / (\sqrt{v_t} + \epsilon)` and :math:`\theta \leftarrow \theta - \eta b_t`.
    State per parameter (each the parameter's shape): ``"square_avg"`` v,
    ``"grad_avg"`` ḡ (centered only), ``"momentum_buffer"`` b (μ > 0 only), all starting at 0.

    Args:
        params: tensors to optimise, or dicts of parameter groups.
        lr: learning rate η >= 0.
        alpha: α in [0, 1), the decay of the running averages.
        eps: ε >= 0, added to the root-mean-square (outside the square root).
        weight_decay: λ >= 0 (L2 penalty added to the gradient).
        momentum: μ in [0, 1).
        centered: subtract the running mean of g before taking the root.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        defaults = dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay, centered=centered)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        _at_least_zero("lr", group["lr"])
        _fraction("alpha", group["alpha"])
        _at_least_zero("eps", group["eps"])
        _fraction("momentum", group["momentum"])
        _at_least_zero("weight_decay", group["weight_decay"])
        _flag("centered", group["centered"])

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor | float | None:
        """Update every parameter that has a gradient; return the closure's loss, if any."""
        loss = _evaluate(closure)
        for group in self.param_groups:
            lr, alpha, eps, mu, wd = group["lr"], group["alpha"], group["eps"], group["momentum"], group["weight_decay"]
            for p in _with_grad(group):
                g = p.grad.add(p, alpha=wd) if wd else p.grad  # g + λθ
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                    if mu:
                        state["momentum_buffer"] = torch.zeros_like(p)
                v = state["square_avg"].mul_(alpha).addcmul_(g, g, value=1 - alpha)  # αv + (1-α)g²
                if group["centered"]:
                    g_avg = state["grad_avg"].lerp_(g, 1 - alpha)  # αḡ + (1-α)g
                    denom = v.addcmul(g_avg, g_avg, value=-1).sqrt_().add_(eps)  # √(v - ḡ²) + ε
                else:
                    denom = v.sqrt().add_(eps)  # √v + ε
                if mu:
                    b = state["momentum_buffer"].mul_(mu).addcdiv_(g, denom)  # μb + g/denom
                    p.add_(b, alpha=-lr)
                else:
                    p.addcdiv_(g, denom, value=-lr)  # θ ← θ - ηg/denom
        return loss


class Adam(_CheckedOptimizer):
    r"""Adam: momentum on the gradient, RMSprop's scaling, and a correction for their zero start.

    Per parameter, at step t = 1, 2, ...:

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2, \quad
        \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad
        \hat v_t = \frac{v_t}{1-\beta_2^t}, \quad
        \theta \leftarrow \theta - \eta \, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    ε sits outside the square root and is added to the bias-corrected
    :math:`\sqrt{\hat v_t}`. ``step()`` folds the two corrections into scalars,

    .. math::
        \theta \leftarrow \theta - \frac{\eta}{1-\beta_1^t} \cdot
        \frac{m_t}{\sqrt{v_t}\,/\sqrt{1-\beta_2^t} + \epsilon},

    the same number without the full-size temporaries m̂ and v̂. ``weight_decay`` λ adds λθ to g
    before the moments (an L2 penalty, which Adam's scaling then rescales; see :class:`AdamW`).
    State per parameter: ``"step"`` t (int), ``"exp_avg"`` m and ``"exp_avg_sq"`` v
    (the parameter's shape and dtype, starting at 0). AMSGrad is not included.

    Args:
        params: tensors to optimise, or dicts of parameter groups.
        lr: learning rate η >= 0.
        betas: (β₁, β₂), each in [0, 1): decays of the first and second moment averages.
        eps: ε >= 0.
        weight_decay: λ >= 0.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        _at_least_zero("lr", group["lr"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        _fraction("betas[0] (beta1)", betas[0])
        _fraction("betas[1] (beta2)", betas[1])
        _at_least_zero("eps", group["eps"])
        _at_least_zero("weight_decay", group["weight_decay"])

    def apply_weight_decay(self, p: torch.Tensor, lr: float, weight_decay: float) -> torch.Tensor:
        """Apply weight decay λ to ``p``; return the gradient the moments see: g + λθ (an L2 penalty)."""
        return p.grad.add(p, alpha=weight_decay) if weight_decay else p.grad

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor | float | None:
        """Update every parameter that has a gradient; return the closure's loss, if any."""
        loss = _evaluate(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in _with_grad(group):
                g = self.apply_weight_decay(p, lr, group["weight_decay"])
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                t = state["step"] = state["step"] + 1
                m = state["exp_avg"].lerp_(g, 1 - beta1)  # β₁m + (1-β₁)g
                v = state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)  # β₂v + (1-β₂)g²
                denom = v.sqrt().div_(math.sqrt(1 - beta2**t)).add_(eps)  # √v̂ + ε
                p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))  # θ ← θ - η m̂ / (√v̂ + ε)
        return loss


class AdamW(Adam):
    r"""Adam with decoupled weight decay: shrink θ directly instead of adding λθ to g.

    .. math::
        \theta \leftarrow \theta (1 - \eta\lambda) - \eta \, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    with :math:`\hat m_t, \hat v_t` computed by :class:`Adam` from the plain gradient g.
    Every weight then decays at the same rate ηλ, however large or small its
    gradients are, whereas Adam's L2 penalty λθ is divided by :math:`\sqrt{\hat v_t}`
    like the rest of the gradient. Same arguments and state as :class:`Adam`;
    ``weight_decay`` defaults to 0.01 as in ``torch.optim.AdamW``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def apply_weight_decay(self, p: torch.Tensor, lr: float, weight_decay: float) -> torch.Tensor:
        """Apply weight decay λ to ``p`` directly, θ ← θ(1 - ηλ); return the plain gradient g."""
        if weight_decay:
            p.mul_(1 - lr * weight_decay)
        return p.grad
