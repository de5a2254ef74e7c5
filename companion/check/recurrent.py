"""Self-checks of chapter 8, recurrent networks: one step of an RNN, an LSTM and a GRU, gradient clipping
by norm, and the validation loss of bigram and trigram models."""

from __future__ import annotations

import math

import torch

from companion.check.core import CheckSpec, define, keyed, randn

__all__ = ["BIGRAM_MISTAKES", "CLIP_MISTAKES", "GRU_STEP_MISTAKES", "LSTM_STEP_MISTAKES", "RNN_STEP_MISTAKES",
           "TRIGRAM_MISTAKES", "bigram_loss", "clip_grad_norm", "gru_step", "lstm_step", "rnn_step",
           "trigram_loss"]  # fmt: skip

Tensor = torch.Tensor


RNN_STEP_MISTAKES = {
    "swapped": "W and U are swapped: W multiplies the previous state h, U the input x",
    "not transposed": "the weight matrices are not transposed: row i of W holds the weights into unit i, "
    "so a batch [N, H] is multiplied by W.T (h @ W.T), not by W",
    "no tanh": "the tanh is missing: the new state is tanh of the weighted sum, which keeps it in (-1, 1)",
    "sigmoid": "a sigmoid instead of tanh: the state of a plain RNN is tanh(...), in (-1, 1) and centred on 0",
    "no bias": "the bias b is missing",
}
"""The mistakes :func:`rnn_step` recognises, by name, each with what a matching answer is told."""


def _rnn_step(x: Tensor, h: Tensor, W: Tensor, U: Tensor, b: Tensor, mistake: str = "") -> Tensor:
    W, U = (U, W) if mistake == "swapped" else (W.T, U.T) if mistake == "not transposed" else (W, U)
    pre = h @ W.T + x @ U.T + (0 if mistake == "no bias" else b)
    return pre if mistake == "no tanh" else torch.sigmoid(pre) if mistake == "sigmoid" else torch.tanh(pre)


_RNN_SIZES = [(5, 4, 4, 1.0, False, False), (1, 3, 4, 1.0, False, False), (3, 2, 5, 1.0, True, False),
              (4, 3, 4, 20.0, False, False), (6, 1, 3, 1.0, False, False)]  # N, F, H, x's scale, h = 0, large
_GATED_SIZES = [(1, 3, 2, 1.0, False, False), (4, 3, 3, 1.0, True, False), (5, 2, 4, 1.0, False, False),
                (3, 4, 3, 10.0, False, False), (2, 3, 5, 1.0, False, True)]


def _cell_cases(gen: torch.Generator, gates: int, big: str = "") -> list:
    """Cases of a cell whose weights hold ``gates`` blocks of rows (1: the plain RNN, whose first case has F = H);
    a gated cell's last case has a large ``big`` (cell state or biases)."""
    cases = []
    for n, f, h, scale, zero, large in _RNN_SIZES if gates == 1 else _GATED_SIZES:
        state = torch.zeros(n, h, dtype=torch.float64) if zero else randn(gen, n, h, scale=0.5)
        x, w_x = randn(gen, n, f, scale=scale), randn(gen, gates * h, f, scale=0.5)
        w_h = randn(gen, gates * h, h, scale=0.5)
        if gates == 1:  # the RNN: W (on h) before U (on x), one bias
            args = (x, state, w_h, w_x, randn(gen, h, scale=0.1))
        elif gates == 4:  # the LSTM: a cell state and one bias
            cell = torch.zeros(n, h, dtype=torch.float64) if zero else randn(gen, n, h, scale=5.0 if large else 1.0)
            args = (x, state, cell, w_x, w_h, randn(gen, 4 * h, scale=0.5))
        else:  # the GRU: two biases
            args = (x, state, w_x, w_h, *(randn(gen, 3 * h, scale=3.0 if large else 0.5) for _ in range(2)))
        text = f"N = {n}, F = {f}, H = {h}{', large inputs' if scale > 1 else ''}{', h = 0' if zero else ''}"
        cases.append((text + (f", large {big}" if large else ""), args))
    return cases


rnn_step = define(CheckSpec(
    "rnn_step", _rnn_step, lambda gen: _cell_cases(gen, 1), mistakes=keyed(_rnn_step, RNN_STEP_MISTAKES),
    rtol=1e-7, atol=1e-10, forbidden=("companion.recurrent.rnn_cell",),
    hint="for a batch the rows are samples, so each weight matrix multiplies from the right, transposed (row i "
    "of W holds the weights into unit i); W goes with the state h and U with the input x, the sum of the "
    "two plus b has shape [N, H], and the activation keeps the new state in (-1, 1).",
), doc="""Check ``student(x, h, W, U, b) -> h_new``: one step of a plain RNN on a batch.

    Shapes (float64): ``x [N, F]``, ``h [N, H]``, ``W [H, H]``, ``U [H, F]``, ``b [H]`` → ``[N, H]``. Cases: a
    square case F = H first (it tells W from U and W from Wᵀ), a batch of one, a zero state, large inputs
    that saturate the activation, one input feature.
    """)


LSTM_STEP_MISTAKES = {
    "gate order": "the gates are taken in the wrong order: the rows of the weights hold the gates "
    "i, f, g, o (input, forget, candidate, output), as in torch",
    "h without tanh": "h' = o ⊙ c' is missing the tanh: h' = o ⊙ tanh(c')",
    "sigmoid candidate": "the candidate g has a sigmoid; it is the one gate with tanh, so it can add and subtract",
    "roles swapped": "the forget gate multiplies the candidate and the input gate the old cell; "
    "c' = f ⊙ c + i ⊙ g",
    "h and c swapped": "the results are returned as (c', h'); return (h', c')",
}
"""The mistakes :func:`lstm_step` recognises, by name, each with what a matching answer is told."""


def _lstm_step(
    x: Tensor, h: Tensor, c: Tensor, W_ih: Tensor, W_hh: Tensor, b: Tensor, mistake: str = ""
) -> tuple[Tensor, Tensor]:
    i, f, g, o = (x @ W_ih.T + h @ W_hh.T + b).chunk(4, dim=1)
    if mistake == "gate order":
        g, o = o, g
    i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
    g = torch.sigmoid(g) if mistake == "sigmoid candidate" else torch.tanh(g)
    c_new = f * g + i * c if mistake == "roles swapped" else f * c + i * g
    h_new = o * c_new if mistake == "h without tanh" else o * torch.tanh(c_new)
    return (c_new, h_new) if mistake == "h and c swapped" else (h_new, c_new)


lstm_step = define(CheckSpec(
    "lstm_step", _lstm_step, lambda gen: _cell_cases(gen, 4, "c"), labels=("h_new", "c_new"),
    mistakes=keyed(_lstm_step, LSTM_STEP_MISTAKES), rtol=1e-7, atol=1e-10,
    forbidden=("companion.recurrent.lstm_cell",),
    hint="one affine map of x and one of h, added with b, give [N, 4H]: four blocks of H columns, the gates in "
    "torch's order i, f, g, o. Which three are sigmoids and which one a tanh? The forget gate scales the old "
    "cell and the input gate the candidate; the output gate scales the squashed new cell (the LSTM section).",
), doc="""Check ``student(x, h, c, W_ih, W_hh, b) -> (h_new, c_new)``: one LSTM step with torch's layout.

    Shapes (float64): ``x [N, F]``, ``h, c [N, H]``, ``W_ih [4H, F]``, ``W_hh [4H, H]``, ``b [4H]``; the rows
    of the weights in gate order i, f, g, o. Cases: a batch of one, a zero state, F ≠ H, large inputs,
    a large cell state.
    """)


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
    forbidden=("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad.clip_grad_norm_"),
    hint="one norm for all the gradients together: square every entry of every tensor, add them all up, take "
    "the square root. Only a norm above max_norm is reduced, and then every tensor is scaled by the same "
    "factor, the one that brings the total norm down to max_norm.",
), doc="""Check ``student(grads, max_norm) -> (clipped, total_norm)``: clipping a list of float64 gradient
    tensors by their global norm, without ``torch.nn.utils.clip_grad_norm_``; ``clipped`` is a list of
    tensors of the same shapes. Cases: a norm below the limit, above it, one tensor, tensors of several
    shapes, an all-zero gradient, a huge gradient.""")


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


def _gru_step(
    x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor, mistake: str = ""
) -> Tensor:
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


gru_step = define(CheckSpec(
    "gru_step", _gru_step, lambda gen: _cell_cases(gen, 3, "biases"), mistakes=keyed(_gru_step, GRU_STEP_MISTAKES),
    rtol=1e-7, atol=1e-10, forbidden=("companion.recurrent.gru_cell",),
    hint="each of the two affine maps, x W_ihᵀ + b_ih and h W_hhᵀ + b_hh, holds three blocks of H columns, in the "
    "order r, z, n; the two gates are sigmoids of their blocks added up; in the candidate the reset gate scales "
    "the whole hidden block, its bias included; and z is the share of the old state that the new one keeps.",
), doc="""Check ``student(x, h, W_ih, W_hh, b_ih, b_hh) -> h_new``: one GRU step with torch's layout.

    Shapes (float64): ``x [N, F]``, ``h [N, H]``, ``W_ih [3H, F]``, ``W_hh [3H, H]``, ``b_ih, b_hh [3H]``;
    the rows in gate order r, z, n. Cases: a batch of one, a zero state, F ≠ H, large inputs, large biases.
    The course's own ``companion.recurrent.gru_cell`` raises while the function runs.
    """)


_NGRAM_MISTAKES = {
    "no smoothing": "a {n} never seen in training gets probability 0 and a loss of infinity: add one to every "
    "count before normalising",
    "once": "each distinct {n} of the training text is counted once: repeated {n}s must add up (an indexed "
    "`counts[...] += 1` on whole tensors counts a repeated index once; index_put_ with accumulate=True adds)",
    "bits": "the loss is in bits (log base 2); the course reports the loss in nats (natural log) and "
    "converts to bits by dividing by ln 2 afterwards",
    "validation counts": "the counts come from the validation text; they must come from the training text only",
    "sum": "the loss is the sum over the validation {n}s; it is their mean",
}
BIGRAM_MISTAKES = {key: text.format(n="pair") for key, text in _NGRAM_MISTAKES.items()} | {
    "columns": "the counts are normalised over the wrong axis: each row a (the previous character) must "
    "sum to one over the next characters b",
    "shorter context": "the previous character is ignored: that is the unigram model",
}
"""The mistakes :func:`bigram_loss` recognises, by name, each with what a matching answer is told."""
TRIGRAM_MISTAKES = {key: text.format(n="triple") for key, text in _NGRAM_MISTAKES.items()} | {
    "denominator": "the denominator misses + V: adding one to each of the V counts of a context adds V to "
    "its total, count(a, b) + V, so that the probabilities sum to one",
    "shorter context": "only the previous character is used: that is the bigram model; the trigram "
    "conditions on the previous two",
}
"""The mistakes :func:`trigram_loss` recognises, by name, each with what a matching answer is told."""


def _ngram(train: Tensor, val: Tensor, vocab_size: int, order: int = 2, mistake: str = "") -> Tensor:
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
    totals = counts.sum(dim=0, keepdim=True) if mistake == "columns" else counts.sum(dim=1, keepdim=True)
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


def _ngram_spec(name: str, order: int, mistakes: dict[str, str], hint: str) -> CheckSpec:
    def reference(train: Tensor, val: Tensor, V: int, mistake: str = "") -> Tensor:
        return _ngram(train, val, V, order, mistake)

    return CheckSpec(name, reference, _ngram_cases, mistakes=keyed(reference, mistakes), rtol=1e-6, atol=1e-12,
                     hint=hint, passed=f"5 of 5 cases match the reference {name.split('_')[0]} loss.")  # fmt: skip


bigram_loss = define(_ngram_spec("bigram_loss", 2, BIGRAM_MISTAKES,
    "a V × V table of counts, row a for the previous character and column b for the next, starts at one "
    "(the added one); count the neighbouring pairs of the training ids so that repeats add up (index_put_ "
    "with accumulate=True, or a loop), normalise each row, and average the negative log-probability of the "
    "validation pairs, in nats."),
    doc="""Check ``student(train_ids, val_ids, vocab_size) -> loss``: the validation loss in nats of the add-one
    bigram model counted on ``train_ids``, the mean over the pairs of ``val_ids`` (int64 ids in 0 … V−1). Cases: a
    hand-sized text, random texts, a validation pair never seen in training, characters that never occur.""")
trigram_loss = define(_ngram_spec("trigram_loss", 3, TRIGRAM_MISTAKES,
    "a trigram model is a bigram model whose context is a pair of characters: give each pair (a, b) a row "
    "of V counts of its own (V² rows), count the triples of the training ids so that repeats add up "
    "(index_put_ with accumulate=True, or a loop), add one, turn each row into probabilities, and average "
    "the negative log-probability of the last character of each validation triple."),
    doc="""Check ``student(train_ids, val_ids, vocab_size) -> loss``: the validation loss in nats of the add-one
    trigram model counted on ``train_ids``, the mean over the ``len(val_ids) − 2`` triples of ``val_ids``.
    Cases as for :func:`bigram_loss`.""")  # fmt: skip


