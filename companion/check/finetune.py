"""Self-checks of chapter 12, adapting a pretrained model: a LoRA layer's forward pass, the DPO loss and
the answer-only mask of instruction tuning."""

from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

from companion.check.core import CheckSpec, define, keyed, randn

__all__ = ["answer_only_mask", "dpo_loss", "lora_forward"]


def _lora_cases(gen: torch.Generator) -> list:
    r = functools.partial(randn, gen)
    cases = []
    for batch, d_in, d_out, rank, alpha in [((2,), 4, 3, 1, 1.0), ((3,), 8, 6, 2, 8.0), ((2, 5), 16, 12, 4, 8.0),
                                         ((4,), 12, 20, 3, 16.0)]:  # fmt: skip
        args = (r(*batch, d_in), r(d_out, d_in), r(d_out), r(rank, d_in), r(d_out, rank), alpha)
        cases.append((f"x {tuple(args[0].shape)}, W {(d_out, d_in)}, r = {rank}, α = {alpha:g}", args))
    return cases


def _lora(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
          alpha: float, mistake: str = "") -> torch.Tensor:  # fmt: skip
    r = a.shape[0]
    scale = {"unscaled": 1.0, "alpha": alpha, "alpha times r": alpha * r, "r over alpha": r / alpha}.get(
        mistake, alpha / r
    )
    base = torch.zeros(()) if mistake == "no base" else x @ weight.T + bias
    return base + scale * (x @ a.T) @ b.T


lora_forward = define(CheckSpec(
    "lora_forward", _lora, _lora_cases, rtol=1e-7, atol=1e-9,
    forbidden=("companion.lora.LoRALinear.forward", "companion.lora.LoRALinear.merge",
               "companion.lora.LoRALinear.delta_weight", "peft.tuners.lora.layer.Linear.forward"),
    mistakes=keyed(_lora, {
        "unscaled": "the low-rank update is not scaled: it needs the factor α/r",
        "alpha": "the update is scaled by α, not by α/r",
        "alpha times r": "the update is scaled by α·r, not by α/r",
        "r over alpha": "the scale is upside down: r/α instead of α/r",
        "no base": "the frozen layer's own output x Wᵀ + b is missing: this is the update alone",
    }),
    hint="the frozen layer's own output plus the low-rank path: A shrinks x to r numbers and B grows them "
    "back to the output width (each applied like a linear layer's weight, transposed); r is the number of "
    "rows of A, and the path is scaled by alpha over r (the LoRA layer of \"Four ways to adapt\").",
), doc="""Check ``student(x, weight, bias, A, B, alpha)``: a linear layer with a LoRA update, without the
    course's ``LoRALinear`` (it raises while the function runs).

    Shapes (float64): ``x [..., in]``, ``weight [out, in]``, ``bias [out]``, ``A [r, in]``, ``B [out, r]``, ``alpha`` a
    float → ``[..., out]``.
    """)


def _dpo_cases(gen: torch.Generator) -> list:
    cases = []
    for n, beta in [(1, 0.1), (4, 0.1), (8, 0.5), (16, 1.0), (5, 2.0)]:
        logps = tuple(-torch.rand(n, generator=gen, dtype=torch.float64) * 20 for _ in range(4))
        cases.append((f"B = {n}, β = {beta:g}", (*logps, beta)))
    return cases


def _dpo(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float,
         mistake: str = "") -> torch.Tensor:  # fmt: skip
    b = 1.0 if mistake == "no beta" else beta
    chosen = b * (pc - (0 if mistake == "no reference" else rc))
    rejected = b * (pr - (0 if mistake == "no reference" else rr))
    margin = rejected - chosen if mistake == "swapped" else chosen - rejected
    losses = F.softplus(-margin) if mistake != "no minus" else F.logsigmoid(margin)
    return losses.sum() if mistake == "sum" else losses.mean()


dpo_loss = define(CheckSpec(
    "dpo_loss", _dpo, _dpo_cases, rtol=1e-5, atol=1e-7, forbidden=("companion.preference.dpo_loss",),
    mistakes=keyed(_dpo, {
        "swapped": "chosen and rejected are swapped: the loss falls when the rejected answer gains",
        "no beta": "β is missing: the log-ratios are not multiplied by it",
        "no reference": "the reference model's log-probabilities are not subtracted",
        "no minus": "the minus sign is missing: this is log σ, a number to maximise, not a loss",
        "sum": "the loss is summed over the pairs, not averaged",
    }),
    hint="each answer's implicit reward is how much more likely the policy makes it than the reference does "
    "(a difference of log-probabilities), scaled by beta; a pair's loss must fall as the chosen answer's "
    "reward rises above the rejected one's, through a log-sigmoid of the margin (F.logsigmoid is stable) "
    "with the sign that makes it a loss; average over the pairs.",
), doc="""Check ``student(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)``: the DPO loss of a
    batch of preference pairs, a 0-d tensor, without ``companion.preference.dpo_loss`` (it raises while the
    function runs). Each of the four log-probabilities is a float tensor ``[B]``.""")


START, END = 1, 2


def _mask_cases(gen: torch.Generator) -> list:
    cases = []
    for rows, prompt, answer, width in [(1, 2, 1, 7), (2, 3, 2, 9), (4, 5, 3, 12), (3, 1, 4, 10)]:
        ids = torch.randint(3, 50, (rows, width), generator=gen)
        for i in range(rows):
            p = prompt + int(torch.randint(0, 2, (), generator=gen))
            a = answer + int(torch.randint(0, 2, (), generator=gen))
            ids[i, p] = START
            ids[i, p + a + 1 :] = END  # the end token, then padding with it
        cases.append((f"ids {tuple(ids.shape)}, start_id = {START}, end_id = {END}", (ids, START, END)))
    return cases


def _mask(ids: torch.Tensor, start_id: int, end_id: int, mistake: str = "") -> torch.Tensor:
    is_start = ids == start_id
    seen_start = is_start.int().cumsum(1) > 0
    after = seen_start & ~is_start if mistake != "with start" else seen_start
    if mistake == "whole":
        after = torch.ones_like(ids, dtype=torch.bool)
    is_end = (ids == end_id) & after
    ended = (is_end.int().cumsum(1) - is_end.int()) > 0
    if mistake == "no end":
        return after & ~ended & ~is_end
    return after if mistake == "padding" else after & ~ended


answer_only_mask = define(CheckSpec(
    "answer_only_mask", _mask, _mask_cases,
    forbidden=("companion.instruct.answer_mask", "companion.instruct.ChatTemplate.answer_mask"),
    mistakes=keyed(_mask, {
        "no end": "the end token is left out: the model must learn to stop, so it is part of the answer",
        "with start": "the start token itself is marked: it belongs to the prompt",
        "padding": "the padding after the end token is marked too",
        "whole": "the prompt is marked too: this trains on every token up to the end",
    }),
    hint="walk along each row: nothing is marked up to and including the first start_id; from the next "
    "token on, mark every token up to and including the first end_id, then nothing. Running sums along "
    "the row (cumsum) tell, at each position, whether a start or an end token came before.",
), doc="""Check ``student(ids, start_id, end_id)``: the answer-only loss mask of a batch of conversations,
    a bool tensor of the shape of ``ids`` (``int64 [B, T]``), without ``companion.instruct.answer_mask``.""")
