"""Self-checks of chapter 8, recurrent networks: one GRU step, gradient clipping by norm, and the
validation loss of a trigram model."""

from __future__ import annotations

import math

import torch

from companion.check.core import CheckSpec, aten, define, keyed, randn

__all__ = ["CLIP_MISTAKES", "GRU_STEP_MISTAKES", "TRIGRAM_MISTAKES", "clip_grad_norm", "gru_step", "trigram_loss"]

Tensor = torch.Tensor


CLIP_MISTAKES = {
    "per tensor": "each tensor is clipped by its own norm; clipping by norm uses one norm of all the "
    "gradients together, so the direction of the whole step is kept",
    "by value": "each entry is clamped to [-max_norm, max_norm]: that is clipping by value, which "
    "changes the direction of the step",
    "always": "the gradients are rescaled to length max_norm even when they are shorter: only a norm "
    "above max_norm is reduced",
    "sum of norms": "the total norm is the sum of the tensors' norms; it is the square root of the sum "
    "of all squared entries",
    "squared": "the total norm is missing its square root",
}
"""The mistakes :func:`clip_grad_norm` recognises, by name, each with what a matching answer is told."""


def _clip(grads: list[Tensor], max_norm: float, mistake: str = "") -> tuple[list[Tensor], Tensor]:
    norms = torch.stack([g.norm() for g in grads])
    total = {"sum of norms": norms.sum(), "squared": norms.square().sum()}.get(mistake, norms.norm())
    if mistake == "per tensor":
        return [g * min(1.0, max_norm / (float(n) + 1e-6)) for g, n in zip(grads, norms)], total
    if mistake == "by value":
        return [g.clamp(-max_norm, max_norm) for g in grads], total
    scale = max_norm / (float(total) + 1e-6)
    return [g * (scale if mistake == "always" else min(1.0, scale)) for g in grads], total


def _clip_cases(gen: torch.Generator) -> list:
    layers = [randn(gen, 4, 3), randn(gen, 4), randn(gen, 2, 4), randn(gen, 2)]
    return [
        ("one tensor of shape (3,) with norm 0.5, max_norm = 1", ([torch.tensor([0.3, 0.0, -0.4]).double()], 1.0)),
        ("one tensor of shape (3,) with norm 5, max_norm = 1", ([torch.tensor([3.0, 0.0, -4.0]).double()], 1.0)),
        ("4 tensors of shapes (4, 3), (4,), (2, 4), (2,), max_norm = 1", (layers, 1.0)),
        ("the same 4 tensors, max_norm = 100: no clipping", (layers, 100.0)),
        ("a tensor of zeros and a small one, max_norm = 0.5",
         ([torch.zeros(3, 3, dtype=torch.float64), randn(gen, 5, scale=0.01)], 0.5)),
        ("huge gradients of norm about 1e6, max_norm = 5",
         ([randn(gen, 10, 10, scale=1e5), randn(gen, 10, scale=1e5)], 5.0)),
    ]  # fmt: skip


clip_grad_norm = define(CheckSpec(
    "clip_grad_norm", _clip, _clip_cases, labels=("the clipped gradients", "the total norm"),
    mistakes=keyed(_clip, CLIP_MISTAKES), rtol=1e-5, atol=1e-12,
    forbidden=(*(f"torch.nn.utils.{f}" for f in ("clip_grad_norm_", "get_total_norm", "clip_grads_with_norm_")),
               *(f"torch.nn.utils.clip_grad.{f}" for f in ("clip_grad_norm_", "_get_total_norm",
                                                           "_clip_grads_with_norm_"))),
    hint="one norm for all the gradients together: square every entry of every tensor, add them all up, take "
    "the square root. Only a norm above max_norm is reduced, and then every tensor is scaled by the same "
    "factor, the one that brings the total norm down to max_norm.",
), doc="""Check ``student(grads, max_norm) -> (clipped, total_norm)``: clipping a list of float64 gradient tensors
    by their global norm into a list of the same shapes, without ``torch.nn.utils.clip_grad_norm_``.""")


GRU_STEP_MISTAKES = {
    "reset before": "the reset gate multiplies h before the matrix product, W_hn (r ⊙ h), as in the original "
    "paper; torch (and this course) multiply the product: r ⊙ (W_hn h + b_hn)",
    "bias outside": "b_hn is added outside the reset gate; it belongs inside: r ⊙ (W_hn h + b_hn)",
    "z swapped": "z and 1 - z are swapped: h' = (1 - z) ⊙ n + z ⊙ h, so z ≈ 1 keeps the old state",
    "gate order": "the gates are taken in the wrong order: the rows of the weights hold r, z, n "
    "(reset, update, candidate), as in torch",
    "sigmoid candidate": "the candidate n has a sigmoid; it is a tanh",
}
"""The mistakes :func:`gru_step` recognises, by name, each with what a matching answer is told."""


def _gru_step(x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
              mistake: str = "") -> Tensor:  # fmt: skip
    H = h.shape[1]
    x_r, x_z, x_n = (x @ W_ih.T + b_ih).chunk(3, dim=1)
    h_r, h_z, h_n = (h @ W_hh.T + b_hh).chunk(3, dim=1)
    if mistake == "gate order":
        x_r, x_z, h_r, h_z = x_z, x_r, h_z, h_r
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    if mistake == "reset before":
        hidden = (r * h) @ W_hh[2 * H :].T + b_hh[2 * H :]
    else:
        hidden = r * (h @ W_hh[2 * H :].T) + b_hh[2 * H :] if mistake == "bias outside" else r * h_n
    n = (torch.sigmoid if mistake == "sigmoid candidate" else torch.tanh)(x_n + hidden)
    return z * n + (1 - z) * h if mistake == "z swapped" else (1 - z) * n + z * h


def _gru_cases(gen: torch.Generator) -> list:
    cases = []
    for n, f, h, scale, zero, large in [(1, 3, 2, 1.0, False, False), (4, 3, 3, 1.0, True, False),
                                        (5, 2, 4, 1.0, False, False), (3, 4, 3, 10.0, False, False),
                                        (2, 3, 5, 1.0, False, True)]:  # fmt: skip
        state = torch.zeros(n, h, dtype=torch.float64) if zero else randn(gen, n, h, scale=0.5)
        args = (randn(gen, n, f, scale=scale), state, randn(gen, 3 * h, f, scale=0.5), randn(gen, 3 * h, h, scale=0.5),
                *(randn(gen, 3 * h, scale=3.0 if large else 0.5) for _ in range(2)))  # fmt: skip
        text = f"N = {n}, F = {f}, H = {h}{', large inputs' if scale > 1 else ''}{', h = 0' if zero else ''}"
        cases.append((text + (", large biases" if large else ""), args))
    return cases


gru_step = define(CheckSpec(
    "gru_step", _gru_step, _gru_cases, mistakes=keyed(_gru_step, GRU_STEP_MISTAKES),
    rtol=1e-7, atol=1e-10, forbidden=("companion.recurrent.gru_cell", *aten("gru_cell", "gru")),
    hint="each of the two affine maps, x W_ihᵀ + b_ih and h W_hhᵀ + b_hh, holds three blocks of H columns, in the "
    "order r, z, n; the two gates are sigmoids of their blocks added up; in the candidate the reset gate scales "
    "the whole hidden block, its bias included; and z is the share of the old state that the new one keeps.",
), doc="""Check ``student(x, h, W_ih, W_hh, b_ih, b_hh) -> h_new``: one GRU step with torch's layout, the rows in
    gate order r, z, n; float64 ``x [N, F]``, ``h [N, H]``, ``W_ih [3H, F]``, ``W_hh [3H, H]``, ``b_ih, b_hh [3H]``.
    PyTorch's GRU cell and the course's own ``companion.recurrent.gru_cell`` raise while the function runs.""")


TRIGRAM_MISTAKES = {
    "no smoothing": "a triple never seen in training gets probability 0 and a loss of infinity: add one to every "
    "count before normalising",
    "once": "each distinct triple of the training text is counted once: repeated triples must add up (an indexed "
    "`counts[...] += 1` on whole tensors counts a repeated index once; index_put_ with accumulate=True adds)",
    "bits": "the loss is in bits (log base 2); the course reports the loss in nats (natural log) and "
    "converts to bits by dividing by ln 2 afterwards",
    "validation counts": "the counts come from the validation text; they must come from the training text only",
    "sum": "the loss is the sum over the validation triples; it is their mean",
    "denominator": "the denominator misses + V: adding one to each of the V counts of a context adds V to "
    "its total, count(a, b) + V, so that the probabilities sum to one",
    "shorter context": "only the previous character is used: that is the bigram model; the trigram "
    "conditions on the previous two",
}
"""The mistakes :func:`trigram_loss` recognises, by name, each with what a matching answer is told."""


def _ngram(train: Tensor, val: Tensor, vocab_size: int, order: int = 3, mistake: str = "") -> Tensor:
    """Mean negative log-likelihood (nats) on ``val`` of the add-one n-gram model of ``train``, over the
    positions with a full context of ``order - 1`` characters; ``mistake`` makes one of the known mistakes."""
    source, V = (val if mistake == "validation counts" else train), vocab_size
    context, start = order - 1 - (mistake == "shorter context"), order - 1

    def keys(ids: Tensor) -> Tensor:
        key = torch.zeros(len(ids) - start, dtype=torch.long)
        for k in range(context):
            key = key * V + ids[start - context + k : len(ids) - context + k]
        return key

    counts = torch.zeros(V**context, V, dtype=torch.float64)
    ones = torch.ones(len(source) - start, dtype=torch.float64)
    counts.index_put_((keys(source), source[start:]), ones, accumulate=mistake != "once")
    totals = counts.sum(dim=1, keepdim=True)
    smooth = 0 if mistake == "no smoothing" else 1
    probs = (counts + smooth) / (totals + (0 if mistake in ("no smoothing", "denominator") else V))
    nll = -probs[keys(val), val[start:]].log() / (math.log(2) if mistake == "bits" else 1)
    return nll.sum() if mistake == "sum" else nll.mean()


def _markov_text(gen: torch.Generator, states: int, length: int) -> Tensor:
    chain = torch.softmax(3 * torch.randn(states, states, generator=gen), dim=1)
    walk = [0]
    for _ in range(length - 1):
        walk.append(int(torch.multinomial(chain[walk[-1]], 1, generator=gen)))
    return torch.tensor(walk)


def _ngram_cases(gen: torch.Generator) -> list:
    walk = _markov_text(gen, 6, 3_000)
    return [
        ("train 'ababab', validation 'abab', V = 2", (torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([0, 1, 0, 1]), 2)),
        ("random texts, V = 5",
         (torch.randint(0, 5, (300,), generator=gen), torch.randint(0, 5, (60,), generator=gen), 5)),
        ("validation n-grams never seen in training, V = 3",
         (torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.tensor([0, 2, 1, 0, 0]), 3)),
        ("a Markov chain of 3,000 characters split 2,500/500, V = 6", (walk[:2500], walk[2500:], 6)),
        ("ids 0-3 only, V = 8: four characters never occur",
         (torch.randint(0, 4, (150,), generator=gen), torch.randint(0, 4, (40,), generator=gen), 8)),
    ]  # fmt: skip


trigram_loss = define(CheckSpec(
    "trigram_loss", _ngram, _ngram_cases, mistakes=keyed(_ngram, TRIGRAM_MISTAKES), rtol=1e-6, atol=1e-12,
    passed="5 of 5 cases match the reference trigram loss.",
    hint="a trigram model is a bigram model whose context is a pair of characters: give each pair (a, b) a row "
    "of V counts of its own (V² rows), count the triples of the training ids so that repeats add up "
    "(index_put_ with accumulate=True, or a loop), add one, turn each row into probabilities, and average "
    "the negative log-probability of the last character of each validation triple.",
), doc="""Check ``student(train_ids, val_ids, vocab_size) -> loss``: the validation loss in nats of the add-one trigram
    model of ``train_ids``, the mean over the ``len(val_ids) − 2`` triples of ``val_ids`` (int64 ids in 0 … V−1).""")

