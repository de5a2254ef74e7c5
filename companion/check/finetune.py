"""Self-checks of chapter 12, adapting a pretrained model: a merged LoRA weight (plain and rank-stabilized, in
both layouts), the IPO loss of preference pairs and the answer-only mask of instruction tuning."""

from __future__ import annotations

import torch

from companion.check.core import CheckSpec, define, keyed, sampler

__all__ = ["answer_only_mask", "ipo_loss", "lora_merge"]


def _merge_cases(gen: torch.Generator) -> list:
    r = sampler(gen)
    cases = []
    for d_in, d_out, rank, alpha, stabilized, transposed in [
        (4, 3, 1, 1.0, False, False), (8, 6, 2, 8.0, False, False), (16, 12, 4, 8.0, True, False),
        (12, 20, 9, 16.0, True, False), (6, 6, 4, 2.0, False, False), (6, 6, 2, 4.0, False, True),
        (10, 10, 5, 8.0, True, True), (8, 12, 3, 6.0, False, True), (12, 4, 4, 16.0, True, True),
    ]:  # fmt: skip
        shape = (d_in, d_out) if transposed else (d_out, d_in)
        cases.append((f"W {shape} ({'[in, out]' if transposed else '[out, in]'}), r = {rank}, α = {alpha:g}, "
                      f"rank_stabilized = {stabilized}",
                      (r(*shape), r(rank, d_in), r(d_out, rank), alpha, stabilized, transposed)))
    return cases


def _merge(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float, stabilized: bool,
           transposed: bool, mistake: str = "") -> torch.Tensor:  # fmt: skip
    r = a.shape[0]
    stabilized = {"ignores stabilized": False, "always stabilized": True}.get(mistake, stabilized)
    scale = {"unscaled": 1.0, "alpha": alpha}.get(mistake, alpha / r**0.5 if stabilized else alpha / r)
    update = scale * b @ a  # [out, in]
    if transposed and mistake != "layout":
        update = update.T
    return (0 if mistake == "update only" else weight) + update


lora_merge = define(CheckSpec(
    "lora_merge", _merge, _merge_cases, rtol=1e-7, atol=1e-9,
    forbidden=("companion.lora.LoRALinear.forward", "companion.lora.LoRALinear.merge",
               "companion.lora.LoRALinear.delta_weight", "peft.tuners.lora.layer.Linear.get_delta_weight",
               "peft.tuners.lora.layer.Linear.merge"),
    mistakes=keyed(_merge, {
        "unscaled": "the low-rank product is not scaled",
        "alpha": "the product is scaled by α alone: the rank is left out of the scale",
        "ignores stabilized": "with rank_stabilized=True the scale is still the one of plain LoRA",
        "always stabilized": "with rank_stabilized=False the scale is the rank-stabilized one",
        "update only": "the frozen weight W is missing: this is the update alone",
        "layout": "a transposed ([in, out]) weight got the update in the [out, in] layout: a square weight "
        "takes it without an error, and every entry off the diagonal lands in the wrong place",
    }),
    hint="write down the shape of every piece: which product of A and B has the shape of an [out, in] weight, "
    "where does the rank r come from, and what shape is the weight you add it to when transposed is true? "
    "Try a square weight with transposed=True: would a mistake in the layout raise an error there?",
), doc="""Check ``student(weight, A, B, alpha, rank_stabilized, transposed)``: the weight of a linear layer with its
    LoRA update merged in, plain or rank-stabilized (rsLoRA), for float64 ``weight`` (``[out, in]``, or ``[in, out]``
    when ``transposed``, as GPT-2's ``Conv1D`` keeps it), ``A [r, in]`` and ``B [out, r]``, a float ``alpha`` and
    bools ``rank_stabilized`` and ``transposed``. The course's ``LoRALinear`` and ``peft`` raise while it runs.""")


def _ipo_cases(gen: torch.Generator) -> list:
    cases = []
    for n, beta in [(1, 0.1), (4, 0.1), (8, 0.5), (16, 1.0), (5, 2.0)]:
        logps = tuple(-torch.rand(n, generator=gen, dtype=torch.float64) * 20 for _ in range(4))
        cases.append((f"B = {n}, β = {beta:g}", (*logps, beta)))
    return cases


def _ipo(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float,
         mistake: str = "") -> torch.Tensor:  # fmt: skip
    chosen = pc - (0 if mistake == "no reference" else rc)
    rejected = pr - (0 if mistake == "no reference" else rr)
    margin = rejected - chosen if mistake == "swapped" else chosen - rejected
    if mistake == "beta inside":
        margin = beta * margin
    target = 1 / beta if mistake == "one over beta" else 1 / (2 * beta)
    losses = (margin - target) ** 2
    return losses.sum() if mistake == "sum" else losses.mean()


ipo_loss = define(CheckSpec(
    "ipo_loss", _ipo, _ipo_cases, rtol=1e-7, atol=1e-9, forbidden=("companion.preference.dpo_loss",),
    mistakes=keyed(_ipo, {
        "swapped": "chosen and rejected are swapped: the margin is the rejected answer's minus the chosen one's",
        "beta inside": "the margin is multiplied by β, as in DPO: in IPO β only sets the target",
        "no reference": "the reference model's log-probabilities are not subtracted",
        "one over beta": "the target margin is 1/β: it is half of that",
        "sum": "the loss is summed over the pairs, not averaged",
    }),
    hint="first each pair's margin: the chosen answer's log-ratio (policy minus reference) minus the "
    "rejected answer's; then the squared distance of that margin from its target, which depends on beta "
    "alone; average over the pairs.",
), doc="""Check ``student(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)``: the IPO loss of a
    batch of preference pairs, a 0-d tensor. Each of the four log-probabilities is a float tensor ``[B]``.""")


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
    hint="for each position, what must be true of the tokens before it (and of the token itself) for it to be "
    "part of the answer? A running count along the row can answer 'has a start_id come before?' at every "
    "position at once.",
), doc="""Check ``student(ids, start_id, end_id)``: the answer-only loss mask of a batch of conversations,
    a bool tensor of the shape of ``ids`` (``int64 [B, T]``), without ``companion.instruct.answer_mask``.""")
