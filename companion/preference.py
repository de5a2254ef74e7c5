"""Preference tuning: how likely a model finds an answer, and Direct Preference Optimization (DPO).

A language model's log-probability of an answer ``y`` to a prompt ``x`` is the
sum of its next-token log-probabilities over the answer's tokens,
``log π(y | x) = Σ_t log π(y_t | x, y_<t)``: :func:`sequence_logprobs`.

DPO (Rafailov et al. 2023) tunes a *policy* ``π`` on pairs ``(x, y_w, y_l)`` in
which the answer ``y_w`` is preferred to ``y_l``, against a frozen *reference*
model ``π_ref`` (the model before tuning). The implicit reward of an answer is
``r(x, y) = β·(log π(y | x) − log π_ref(y | x))`` and the loss is

.. math::

    \\mathcal{L}_\\mathrm{DPO} = -\\,\\mathbb{E}\\left[\\log \\sigma\\big(r(x, y_w) - r(x, y_l)\\big)\\right],

the loss of a Bradley–Terry model that predicts which answer a person
preferred. ``β`` is the leash: the smaller it is, the further the policy may
drift from the reference for the same reward margin. :func:`sequence_kl`
measures that drift.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits ``[B, T, V]`` (from a tensor, or an output object's ``.logits``)."""
    out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


def _check_ids_and_mask(ids: object, mask: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32) or ids.ndim != 2:
        raise TypeError(f"ids must be an integer tensor [B, T]; got {_describe(ids)}")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != ids.shape:
        raise TypeError(f"the mask must be a bool tensor of the ids' shape {tuple(ids.shape)}; got {_describe(mask)}")
    if ids.shape[1] < 2:
        raise ValueError(f"ids need at least two tokens (a prompt and an answer); got shape {tuple(ids.shape)}")
    if mask[:, 0].any():
        raise ValueError("mask[:, 0] must be False: the first token has no tokens before it to predict it from")
    return ids, mask.to(ids.device)


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def token_logprobs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``log π(ids[:, t] | ids[:, :t])`` for ``t = 1 … T−1``: float ``[B, T−1]``.

    One forward pass of ``ids int64 [B, T]``; column ``t − 1`` scores token ``t``
    from the logits at position ``t − 1``. ``model(ids)`` returns logits
    ``[B, T, V]`` (or an object with ``.logits``, as Hugging Face models do).
    """
    logits = _logits(model, ids)[:, :-1]
    return torch.gather(F.log_softmax(logits, dim=-1), -1, ids[:, 1:, None].to(logits.device)).squeeze(-1)


def sequence_logprobs(model: nn.Module, ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """The log-probability of each row's answer given its prompt: ``Σ_t mask[t]·log π(ids[t] | ids[:t])``, ``[B]``.

    Args:
        model: maps ``ids [B, T]`` to next-token logits ``[B, T, V]``.
        ids: prompt and answer tokens, ``int64 [B, T]`` (padding after the answer is fine
            when the mask leaves it out).
        answer_mask: ``bool [B, T]``, True on the tokens of the answer; ``answer_mask[:, 0]``
            must be False (the first token is never predicted).

    Returns:
        float ``[B]``, differentiable with respect to the model's parameters.
    """
    ids, mask = _check_ids_and_mask(ids, answer_mask)
    logprobs = token_logprobs(model, ids)
    return (logprobs * mask[:, 1:].to(logprobs.device, logprobs.dtype)).sum(dim=1)


def sequence_kl(policy: nn.Module, reference: nn.Module, ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """How far the policy has drifted from the reference on each row's answer: a KL divergence, ``[B]``.

    ``Σ_t mask[t] · KL(π(· | ids[:t]) ‖ π_ref(· | ids[:t]))``: the exact divergence of
    the two next-token distributions over the whole vocabulary, summed over the
    answer's positions (0 when the two models agree, never negative).
    """
    ids, mask = _check_ids_and_mask(ids, answer_mask)
    log_p = F.log_softmax(_logits(policy, ids)[:, :-1], dim=-1)
    log_q = F.log_softmax(_logits(reference, ids)[:, :-1], dim=-1).to(log_p.device, log_p.dtype)
    per_token = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return (per_token * mask[:, 1:].to(per_token.device, per_token.dtype)).sum(dim=1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss of a batch of preference pairs (Rafailov et al. 2023, eq. 7).

    With the implicit rewards ``r_w = β·(log π(y_w|x) − log π_ref(y_w|x))`` and
    ``r_l = β·(log π(y_l|x) − log π_ref(y_l|x))``, the loss is the batch mean of
    ``−log σ(r_w − r_l) = softplus(r_l − r_w)``.

    Args:
        policy_chosen: ``log π(y_w | x)`` of the model being tuned, ``[B]``
            (from :func:`sequence_logprobs`).
        policy_rejected: ``log π(y_l | x)``, ``[B]``.
        ref_chosen: ``log π_ref(y_w | x)`` of the frozen reference model, ``[B]``.
        ref_rejected: ``log π_ref(y_l | x)``, ``[B]``.
        beta: ``> 0``; how strongly the policy is tied to the reference.

    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``: the loss (a 0-d tensor that
        carries the gradient) and the rewards ``r_w``, ``r_l`` (``[B]``, detached).
    """
    logps = [policy_chosen, policy_rejected, ref_chosen, ref_rejected]
    names = ["policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected"]
    for name, value in zip(names, logps):
        if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point or value.ndim != 1:
            raise TypeError(f"{name} must be a float tensor [B] of log-probabilities; got {_describe(value)}")
        if value.shape != policy_chosen.shape:
            shapes = [tuple(v.shape) for v in logps]
            raise ValueError(f"the four log-probabilities need the same shape [B]; got {shapes}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < math.inf:
        raise ValueError(f"beta must be a positive finite number; got {beta!r}")
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def _check_rewards(chosen: object, rejected: object) -> None:
    if not isinstance(chosen, torch.Tensor) or not isinstance(rejected, torch.Tensor):
        raise TypeError(f"rewards must be tensors [B]; got {_describe(chosen)} and {_describe(rejected)}")
    if chosen.shape != rejected.shape or chosen.ndim != 1 or chosen.numel() == 0:
        raise ValueError(
            f"chosen and rejected rewards need the same shape [B], B >= 1; got {tuple(chosen.shape)} "
            f"and {tuple(rejected.shape)}"
        )


def reward_margin(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    """The mean of ``r_w − r_l`` over the pairs ``[B]``: how far, on average, the preferred answer is ahead."""
    _check_rewards(chosen_rewards, rejected_rewards)
    return float((chosen_rewards - rejected_rewards).double().mean())


def preference_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    """The fraction of pairs ``[B]`` whose preferred answer has the larger reward: ``r_w > r_l`` (a tie is wrong).

    With rewards from :func:`dpo_loss` it is 0 for a policy equal to its
    reference (all rewards 0); pass log-probabilities instead to ask how often a
    model itself prefers the right answer.
    """
    _check_rewards(chosen_rewards, rejected_rewards)
    return float((chosen_rewards > rejected_rewards).double().mean())
