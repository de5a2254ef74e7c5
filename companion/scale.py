"""What changes at scale, as arithmetic: parameters, memory and compute of training (chapter 10).

Parameter counts of GPT- and BERT-style Transformers from their sizes, by formula
with every term (embeddings, positions, biases, layer norms, the read-out head);
the bytes that training keeps per parameter (weights, gradients, optimizer state)
and a measurement of the same on a real model and optimizer; the ≈ 6·N·D rule for
the FLOPs of training next to a count of the FLOPs a step really performs
(:class:`torch.utils.flop_counter.FlopCounterMode`); the GPU-hours that compute
takes at a stated utilization; and a least-squares power-law fit for scaling plots.

Units: counts are Python ints; bytes are ints; FLOPs count a multiply and an add
as two floating-point operations; times are in hours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "BYTES_PER_VALUE",
    "GPU_PEAK_FLOPS",
    "OPTIMIZER_STATES",
    "PowerLaw",
    "bert_parameter_counts",
    "bert_parameters",
    "count_flops",
    "fit_power_law",
    "gpt_parameter_counts",
    "gpt_parameters",
    "gpu_hours",
    "measured_training_memory",
    "saved_activation_bytes",
    "training_flops",
    "training_memory",
]

BYTES_PER_VALUE: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "int8": 1}
"""Bytes of one number in each storage format."""

OPTIMIZER_STATES: dict[str, int] = {"sgd": 0, "momentum": 1, "rmsprop": 1, "adam": 2, "adamw": 2}
"""How many fp32 numbers an optimizer keeps per parameter; Adam keeps two (the moving averages m and v)."""

GPU_PEAK_FLOPS: dict[str, float] = {
    "V100 (fp16)": 125e12,
    "A100 (bf16)": 312e12,
    "H100 SXM (bf16)": 989e12,
}
"""Published dense tensor-core peaks in FLOP/s (no sparsity), per GPU."""


def _count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return value


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def _block_counts(dim: int, layers: int, mlp_ratio: int, bias: bool) -> dict[str, int]:
    """The Transformer blocks: attention (q, k, v, out), feed-forward (two layers), two layer norms each."""
    hidden = mlp_ratio * dim
    attention = 4 * dim * dim + (4 * dim if bias else 0)
    feed_forward = 2 * dim * hidden + ((hidden + dim) if bias else 0)
    norms = 2 * (2 * dim if bias else dim)
    return {
        "attention": layers * attention,
        "feed-forward": layers * feed_forward,
        "block layer norms": layers * norms,
    }


def gpt_parameter_counts(
    *,
    vocab_size: int,
    context: int,
    dim: int,
    layers: int,
    mlp_ratio: int = 4,
    bias: bool = True,
    tied_head: bool = True,
    head_bias: bool = False,
    learned_positions: bool = True,
) -> dict[str, int]:
    """The parameters of a GPT-style (pre-norm, decoder-only) Transformer, part by part.

    Parts: token embeddings ``V·d``; learned position embeddings ``T·d``; per block
    attention ``4d² + 4d`` (q, k, v and output projections with biases), feed-forward
    ``2·r·d² + r·d + d`` (``d → r·d → d``) and two layer norms ``2·2d``; a final layer
    norm ``2d``; the read-out head ``d·V`` unless it reuses (ties) the token
    embedding, plus ``V`` for a head bias. With ``r = 4`` and biases every block
    has ``12d² + 13d`` parameters, so ``N ≈ 12·L·d² + V·d``.

    GPT-2 ties its head and has biases (``tied_head=True, head_bias=False``);
    :class:`companion.models.gpt.TinyGPT` has its own head with a bias
    (``tied_head=False, head_bias=True``).

    Args:
        vocab_size: tokens ``V``.
        context: positions ``T`` (only counted with ``learned_positions``).
        dim: model width ``d``.
        layers: blocks ``L``.
        mlp_ratio: feed-forward width as a multiple ``r`` of ``d``.
        bias: biases in the linear layers and layer norms of the blocks and the final norm.
        tied_head: the head reuses the token-embedding matrix (no parameters of its own).
        head_bias: the head adds a bias per token.
        learned_positions: positions are a trained table (False: fixed sinusoids, no parameters).

    Returns:
        ``{part: count}`` with keys ``"token embeddings"``, ``"position embeddings"``,
        ``"attention"``, ``"feed-forward"``, ``"block layer norms"``, ``"final layer norm"``, ``"head"``.
    """
    for name, value in (("vocab_size", vocab_size), ("context", context), ("dim", dim), ("layers", layers)):
        _count(name, value)
    _count("mlp_ratio", mlp_ratio)
    counts = {
        "token embeddings": vocab_size * dim,
        "position embeddings": context * dim if learned_positions else 0,
        **_block_counts(dim, layers, mlp_ratio, bias),
        "final layer norm": 2 * dim if bias else dim,
        "head": (0 if tied_head else dim * vocab_size) + (vocab_size if head_bias else 0),
    }
    return counts


def gpt_parameters(**sizes: Any) -> int:
    """The total of :func:`gpt_parameter_counts` (same keyword arguments).

    >>> gpt_parameters(vocab_size=50257, context=1024, dim=768, layers=12)  # GPT-2 small
    124439808
    """
    return sum(gpt_parameter_counts(**sizes).values())


def bert_parameter_counts(
    *,
    vocab_size: int = 30522,
    context: int = 512,
    dim: int,
    layers: int,
    mlp_ratio: int = 4,
    type_vocab_size: int = 2,
    pooler: bool = True,
) -> dict[str, int]:
    """The parameters of a BERT-style (post-norm encoder) Transformer, without pre-training heads.

    Parts: token ``V·d``, position ``T·d`` and segment (token-type) ``S·d``
    embeddings with their layer norm ``2d``; ``L`` blocks of ``12d² + 13d``
    (for ``r = 4``: attention ``4d² + 4d``, feed-forward ``8d² + 5d``, two layer
    norms ``4d``); the pooler, a ``d → d`` layer on the first token, ``d² + d``.
    BERT-base (``d = 768, L = 12``) has 109,482,240.

    Returns:
        ``{part: count}`` with keys ``"embeddings"``, ``"attention"``, ``"feed-forward"``,
        ``"block layer norms"``, ``"pooler"``.
    """
    for name, value in (("vocab_size", vocab_size), ("context", context), ("dim", dim), ("layers", layers)):
        _count(name, value)
    _count("mlp_ratio", mlp_ratio)
    _count("type_vocab_size", type_vocab_size, minimum=0)
    return {
        "embeddings": (vocab_size + context + type_vocab_size) * dim + 2 * dim,
        **_block_counts(dim, layers, mlp_ratio, bias=True),
        "pooler": dim * dim + dim if pooler else 0,
    }


def bert_parameters(**sizes: Any) -> int:
    """The total of :func:`bert_parameter_counts` (same keyword arguments).

    >>> bert_parameters(dim=768, layers=12)  # BERT-base
    109482240
    """
    return sum(bert_parameter_counts(**sizes).values())


def training_memory(n_params: int, optimizer: str = "adam", precision: str = "fp32") -> dict[str, int]:
    """Bytes that training keeps for the model itself (its *states*), before any activations.

    ``precision="fp32"``: weights and gradients in fp32 (4 + 4 bytes), plus the
    optimizer's fp32 states (:data:`OPTIMIZER_STATES`: Adam 2 × 4 bytes): 16 bytes
    per parameter with Adam. ``precision="mixed"`` (fp16/bf16 compute, as in
    Micikevicius et al. 2018 and the ZeRO paper): 16-bit weights and gradients
    (2 + 2 bytes), an fp32 master copy of the weights (4) and the fp32 optimizer
    states (Adam: 8): again 16 bytes per parameter with Adam. Mixed precision
    saves time and activation memory, not model-state memory.

    Args:
        n_params: number of parameters ``N``.
        optimizer: a key of :data:`OPTIMIZER_STATES`.
        precision: ``"fp32"`` or ``"mixed"``.

    Returns:
        ``{"weights", "gradients", "master weights", "optimizer", "total"}`` in bytes.
    """
    n = _count("n_params", n_params, minimum=0)
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_STATES)}; got {optimizer!r}")
    if precision not in ("fp32", "mixed"):
        raise ValueError(f"precision must be 'fp32' or 'mixed'; got {precision!r}")
    low = 4 if precision == "fp32" else 2
    parts = {
        "weights": low * n,
        "gradients": low * n,
        "master weights": 0 if precision == "fp32" else 4 * n,
        "optimizer": 4 * OPTIMIZER_STATES[optimizer] * n,
    }
    return parts | {"total": sum(parts.values())}


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def measured_training_memory(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes that ``model`` and ``optimizer`` hold right now, counted tensor by tensor.

    ``weights``: every parameter; ``gradients``: every ``.grad`` present;
    ``optimizer``: the optimizer's per-parameter state tensors (those with as many
    elements as their parameter, e.g. Adam's ``exp_avg`` and ``exp_avg_sq``);
    ``bookkeeping``: its other state tensors (e.g. Adam's step counters, one number
    per parameter tensor). Call it after a first ``optimizer.step()``: optimizers
    create their state lazily.

    Returns:
        ``{"weights", "gradients", "optimizer", "bookkeeping", "total"}`` in bytes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    params = list(model.parameters())
    parts = {
        "weights": sum(_tensor_bytes(p) for p in params),
        "gradients": sum(_tensor_bytes(p.grad) for p in params if p.grad is not None),
        "optimizer": 0,
        "bookkeeping": 0,
    }
    for p, state in optimizer.state.items():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                key = "optimizer" if value.numel() == p.numel() and value.numel() > 1 else "bookkeeping"
                parts[key] += _tensor_bytes(value)
    return parts | {"total": sum(parts.values())}


def saved_activation_bytes(forward: Callable[[], torch.Tensor], model: nn.Module | None = None) -> int:
    """Bytes of the tensors autograd keeps from ``forward()`` for the backward pass: the *activations*.

    Runs ``forward()`` once with grad enabled under
    :func:`torch.autograd.graph.saved_tensors_hooks` and adds up the distinct
    storages saved for backward. The parameters of ``model`` (and any tensor
    that is a parameter) are left out: they are counted as weights.

    Args:
        forward: a function of no arguments that runs the forward pass (e.g. the loss).
        model: the model whose parameters to leave out.

    Returns:
        bytes, an int.
    """
    if not callable(forward):
        raise TypeError(f"forward must be a function of no arguments; got {type(forward).__name__}")
    excluded = {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, nn.Parameter):
            storage = t.untyped_storage()
            if storage.data_ptr() not in excluded:
                seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def training_flops(n_params: float, n_tokens: float) -> float:
    """The ≈ 6·N·D FLOPs of training ``N`` parameters on ``D`` tokens (Kaplan et al. 2020).

    Each parameter takes part in one multiply-add per token forward (2 FLOPs) and
    two backward (4 FLOPs: the gradient of the input and of the weight).
    Attention over the context and everything but matrix products are left out.
    """
    return 6.0 * _positive("n_params", n_params) * _positive("n_tokens", n_tokens)


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs that ``step()`` performs, counted operation by operation.

    Uses :class:`torch.utils.flop_counter.FlopCounterMode`, which counts matrix
    products and convolutions (2 FLOPs per multiply-add), forward and backward;
    element-wise work (activations, norms, softmax, the optimizer's update) is
    not counted. Attention runs in PyTorch's plain ("math") kernel while counting,
    so its products are seen too (the fused CPU kernel would count as zero).
    """
    if not callable(step):
        raise TypeError(f"step must be a function of no arguments; got {type(step).__name__}")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def gpu_hours(flops: float, peak_flops: float, utilization: float = 0.4) -> float:
    """Hours one GPU needs for ``flops`` at ``utilization`` of its ``peak_flops`` (FLOP/s).

    ``hours = flops / (peak_flops · utilization) / 3600``. Large training runs
    reach roughly 30–50 % of the peak (model FLOPs utilization).
    """
    _positive("flops", flops)
    _positive("peak_flops", peak_flops)
    if isinstance(utilization, bool) or not isinstance(utilization, (int, float)) or not 0 < utilization <= 1:
        raise ValueError(f"utilization must be a fraction in (0, 1]; got {utilization!r}")
    return flops / (peak_flops * utilization) / 3600


@dataclass(frozen=True)
class PowerLaw:
    """``y = coefficient · x ** (-exponent)``, fitted on log-log axes."""

    coefficient: float
    exponent: float

    def __call__(self, x: float | torch.Tensor) -> float | torch.Tensor:
        return self.coefficient * x ** (-self.exponent)


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Least-squares fit of ``log y = log a − α · log x``; returns ``PowerLaw(a, α)``.

    Args:
        x: at least two distinct positive numbers (parameters, FLOPs, tokens).
        y: as many positive numbers (losses).
    """
    xs, ys = (torch.as_tensor(v, dtype=torch.float64) for v in (x, y))
    if xs.ndim != 1 or xs.shape != ys.shape or len(xs) < 2:
        raise ValueError(
            f"x and y must be two sequences of the same length >= 2; got {tuple(xs.shape)} and {tuple(ys.shape)}"
        )
    if not bool((xs > 0).all() and (ys > 0).all()):
        raise ValueError("x and y must be positive: a power law is fitted on their logarithms")
    lx, ly = xs.log(), ys.log()
    if float(lx.std()) == 0:
        raise ValueError("x needs at least two distinct values")
    slope = float(((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum())
    intercept = float(ly.mean() - slope * lx.mean())
    return PowerLaw(coefficient=math.exp(intercept), exponent=-slope)
