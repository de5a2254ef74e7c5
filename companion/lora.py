"""Low-rank adaptation (LoRA, Hu et al. 2021): fine-tune a few small matrices beside a frozen model.

A linear layer ``y = x Wᵀ + b`` with ``W`` of shape ``[out, in]`` is adapted as

.. math::

    y = x W^\\top + b + \\frac{\\alpha}{r}\\, \\mathrm{dropout}(x)\\, A^\\top B^\\top,
    \\qquad A \\in \\mathbb{R}^{r \\times \\mathrm{in}},\\; B \\in \\mathbb{R}^{\\mathrm{out} \\times r},

where ``W`` and ``b`` stay frozen and only ``A`` and ``B`` train: ``r·(in + out)``
numbers instead of ``in·out``. ``B`` starts at zero, so a freshly wrapped model
computes exactly what the base model did; ``A`` starts as Hugging Face ``peft``
starts it (Kaiming-uniform with ``a = √5``, the default of ``nn.Linear``).
After training, :func:`merge` folds the update into the weight,
``W ← W + (α/r)·B A``, so the adapted model costs nothing extra to run.

>>> model = wrap(TinyGPT(GPTConfig(vocab_size=65)), targets=["in_proj", "out_proj"], r=4)  # doctest: +SKIP
>>> count_parameters(model)  # only the A and B matrices train  # doctest: +SKIP
9216
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from companion.models.base import _check_dropout, replace_module, select_modules
from companion.quantize import QuantLinear

ADAPTABLE = (nn.Linear, QuantLinear)
"""The layers :func:`wrap` adapts: ``nn.Linear`` and the quantized :class:`~companion.quantize.QuantLinear`."""


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


def _positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update: ``base(x) + (α/r)·dropout(x) Aᵀ Bᵀ``.

    Args:
        base: the layer to adapt: an ``nn.Linear``, or any module mapping
            ``[..., in_features] → [..., out_features]`` that has those two attributes,
            such as a :class:`~companion.quantize.QuantLinear` (QLoRA's idea: only an
            ``nn.Linear`` can be merged). Its parameters are frozen.
        r: the rank of the update, ``>= 1``.
        alpha: the update is scaled by ``alpha / r``; keeping ``alpha`` fixed while
            ``r`` changes spares retuning the learning rate (Hu et al. 2021). The
            default, 8, is ``peft``'s.
        dropout: dropout on the input of the low-rank path only (training mode only).

    Attributes:
        lora_A: ``[r, in_features]``, Kaiming-uniform (``a = √5``) at the start, drawn from the CPU's
            generator and then moved to the base layer's device, so that a seed gives the same ``A``
            on every device.
        lora_B: ``[out_features, r]``, zero at the start.
        scaling: ``alpha / r``.
        merged: True while the update is folded into ``base.weight`` (see :meth:`merge`).
    """

    def __init__(self, base: nn.Module, r: int, alpha: float = 8.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Module) or not all(hasattr(base, a) for a in ("in_features", "out_features")):
            raise TypeError(
                f"LoRALinear adapts an nn.Linear (or a module with in_features and out_features); got {base!r}"
            )
        if isinstance(base, LoRALinear):
            raise TypeError("this layer already carries a LoRA update; wrap each layer once")
        self.r = _positive_int("r", r)
        self.alpha = _positive_number("alpha", alpha)
        self.scaling = self.alpha / self.r
        self.base = base.requires_grad_(False)
        floats = [t for t in (*base.parameters(), *base.buffers()) if t.dtype.is_floating_point]
        dtype, device = (floats[0].dtype, floats[0].device) if floats else (None, None)
        start = nn.init.kaiming_uniform_(torch.empty(self.r, base.in_features, dtype=dtype), a=math.sqrt(5))
        self.lora_A = nn.Parameter(start.to(device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.r, dtype=dtype, device=device))
        self.lora_dropout = nn.Dropout(_check_dropout(dropout))
        self.merged = False

    @property
    def in_features(self) -> int:
        """The width of the layer's input."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        """The width of the layer's output."""
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight ``[out, in]`` (the update included only while merged)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias ``[out]`` or None."""
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """The update ``(α/r)·B A``, ``[out_features, in_features]``: what :meth:`merge` adds to the weight."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in_features] → [..., out_features]``."""
        y = self.base(x)
        if self.merged:
            return y
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return y + self.scaling * update

    def _base_weight(self, action: str) -> torch.Tensor:
        if not isinstance(self.base, nn.Linear):
            raise TypeError(
                f"cannot {action} a LoRA update into a {type(self.base).__name__}: only an nn.Linear's "
                "floating-point weight can take it (a quantized base keeps its update beside it)"
            )
        return self.base.weight

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight: ``W ← W + (α/r)·B A``; the output stays the same.

        Raises:
            RuntimeError: the update is merged already (merging twice would add it twice).
        """
        if self.merged:
            raise RuntimeError(
                "this LoRA layer is already merged: merging again would add (alpha/r)·B·A to the weight a "
                "second time; call unmerge() first"
            )
        self._base_weight("merge").add_(self.delta_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the base weight: ``W ← W − (α/r)·B A``.

        Raises:
            RuntimeError: the update is not merged.
        """
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged: there is no update in the weight to take out")
        self._base_weight("unmerge").sub_(self.delta_weight())
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self.merged}"


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The :class:`LoRALinear` layers of ``model`` by qualified name (e.g. ``"blocks.0.attn.in_proj"``)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _targets(model: nn.Module, targets: str | Sequence[str]) -> dict[str, nn.Module]:
    """The :data:`ADAPTABLE` layers that ``targets`` name; each pattern must name at least one."""
    patterns = [targets] if isinstance(targets, str) else targets
    chosen = select_modules(model, patterns)
    adapted = [f"{name}." for name in lora_layers(model)]
    again = [name for name in chosen if any(f"{name}.".startswith(prefix) for prefix in adapted)]
    if again:
        raise ValueError(f"the layers {again} already carry LoRA updates; wrap each layer once")
    for pattern in patterns:
        found = select_modules(model, pattern)
        if not any(isinstance(m, ADAPTABLE) for m in found.values()):
            kinds = {name: type(m).__name__ for name, m in found.items()}
            raise TypeError(
                f"LoRA adapts nn.Linear (or QuantLinear) layers; the pattern {pattern!r} names none, only {kinds}"
            )
    return {name: m for name, m in chosen.items() if isinstance(m, ADAPTABLE)}


def wrap(
    model: nn.Module,
    targets: str | Sequence[str],
    r: int = 8,
    alpha: float = 8.0,
    dropout: float = 0.0,
    trainable: str | Sequence[str] = (),
) -> nn.Module:
    """Put a LoRA update on the linear layers named by ``targets`` and freeze everything else.

    The model is changed in place (and returned): each target becomes a
    :class:`LoRALinear` around the original layer, every parameter stops
    training except the ``lora_A`` and ``lora_B`` matrices and the parameters
    of the modules named by ``trainable`` (e.g. a new classification ``"head"``).

    Args:
        model: any ``nn.Module`` with ``nn.Linear`` layers, e.g. a :class:`~companion.models.gpt.TinyGPT`.
        targets: name patterns of the layers to adapt, matched as by
            :func:`~companion.models.base.select_modules`: ``["in_proj", "out_proj"]``
            adapts every attention projection of a TinyGPT, ``"mlp.*"`` its MLPs (of the
            modules a pattern matches, the ``nn.Linear`` and ``QuantLinear`` ones are adapted).
        r: the rank.
        alpha: the update is scaled by ``alpha / r`` (see :class:`LoRALinear`).
        dropout: dropout on the low-rank path's input.
        trainable: name patterns of modules that keep training in full.

    Returns:
        ``model``.

    Raises:
        ValueError: a pattern matches nothing, or a target is adapted already.
        TypeError: a pattern matches no linear layer, only other modules.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    chosen = _targets(model, targets)
    keep = select_modules(model, trainable) if trainable else {}
    model.requires_grad_(False)
    for name, layer in chosen.items():
        replace_module(model, name, LoRALinear(layer, r, alpha, dropout))
    for module in keep.values():
        module.requires_grad_(True)
    return model


def lora_parameter_count(model: nn.Module, targets: str | Sequence[str], r: int) -> int:
    """The number of numbers LoRA of rank ``r`` trains on ``targets``, by formula: ``Σ r·(in + out)``.

    ``model`` is the model before :func:`wrap`; compare with a full fine-tune's
    ``Σ in·out (+ out)`` over the same layers.
    """
    r = _positive_int("r", r)
    return sum(r * (layer.in_features + layer.out_features) for layer in _targets(model, targets).values())


def _each_layer(model: nn.Module) -> dict[str, LoRALinear]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers; wrap(model, targets=...) puts them on")
    return layers


def merge(model: nn.Module) -> nn.Module:
    """Fold every LoRA update of ``model`` into its base weight (see :meth:`LoRALinear.merge`); return ``model``.

    Raises:
        RuntimeError: a layer is merged already; nothing is changed then.
    """
    layers = _each_layer(model)
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise RuntimeError(
            f"the LoRA layers {merged} are already merged: merging again would add (alpha/r)·B·A to their "
            "weights a second time; call unmerge(model) first"
        )
    for layer in layers.values():
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Take every LoRA update of ``model`` back out of its base weight; return ``model``.

    Raises:
        RuntimeError: a layer is not merged; nothing is changed then.
    """
    layers = _each_layer(model)
    unmerged = [name for name, layer in layers.items() if not layer.merged]
    if unmerged:
        raise RuntimeError(
            f"the LoRA layers {unmerged} are not merged: there is no update in their weights to take out"
        )
    for layer in layers.values():
        layer.unmerge()
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """Replace every LoRA layer by its base layer with the update merged in (merging those not merged yet).

    The result is the base architecture again, with adapted weights and no
    extra cost at run time; its parameters keep ``requires_grad=False`` for the
    frozen ones. Returns ``model``.
    """
    for name, layer in _each_layer(model).items():
        if not layer.merged:
            layer.merge()
        replace_module(model, name, layer.base)
    return model
