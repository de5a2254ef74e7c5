"""Self-checks of chapter 8, recurrent networks: one step of an RNN, an LSTM and a GRU, gradient
clipping by norm, and the validation loss of bigram and trigram models.

A failure names the case and says how the answer differs (a shape, which entries, a factor or a band of
percent) and names a common mistake when the answer matches it; it never prints the expected values.
The method is in each check's hint, shown by ``check.hint(name)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from companion.check.core import PLACEHOLDER_MESSAGE, CheckResult, _as_array, _how_far, _run, register_hint

__all__ = [
    "BIGRAM_MISTAKES",
    "CLIP_MISTAKES",
    "GRU_STEP_MISTAKES",
    "LSTM_STEP_MISTAKES",
    "RNN_STEP_MISTAKES",
    "TRIGRAM_MISTAKES",
    "bigram_loss",
    "clip_grad_norm",
    "gru_step",
    "lstm_step",
    "rnn_step",
    "trigram_loss",
]

Tensor = torch.Tensor


def _refuse(name: str, student: Any) -> CheckResult | None:
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    return None


def _differ(want: Any, have: Any, rtol: float, atol: float) -> str | None:
    """None when ``have`` matches ``want``, else how it differs — without printing ``want``."""
    if have is None:
        return "the function returned None (is a `return` missing, or is the placeholder `...` still there?)"
    a, b = _as_array(want), _as_array(have)
    if b is None:
        return f"expected a tensor or a number, got {type(have).__name__}"
    if a.shape != b.shape:
        return f"expected shape {a.shape}, got shape {b.shape}"
    if not np.all(np.isfinite(b)):
        return "the result contains NaN or infinity"
    close = np.isclose(b, a, rtol=rtol, atol=atol)
    if close.all():
        return None
    if a.ndim == 0:
        return _how_far(float(a), float(b))
    where = tuple(int(i) for i in np.argwhere(~close)[0])
    return (
        f"{int((~close).sum())} of {a.size} entries differ; at index {where} "
        f"{_how_far(float(a[where]), float(b[where]))}"
    )


def _detach(value: Any) -> Any:
    return value.detach() if isinstance(value, Tensor) else value


def _compare_outputs(
    name: str,
    student: Callable[..., Any],
    reference: Callable[..., tuple[Any, ...]],
    cases: Sequence[tuple[str, tuple[Any, ...]]],
    labels: Sequence[str],
    mistakes: dict[str, str],
    rtol: float = 1e-7,
    atol: float = 1e-10,
) -> CheckResult:
    """Run ``student(*args)`` on every case against ``reference(*args)`` (a tuple, one entry per label).

    A student function with one output returns it bare; with several, a tuple. On the first case that
    differs, the result names the output and how it differs, and the mistake of ``mistakes`` whose
    variant ``reference(*args, mistake=key)`` the answer matches.
    """
    for where, args in cases:
        got, error = _run(student, args)
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if len(labels) == 1:
            got = (got,)
        elif got is None:
            return CheckResult(name, False, f"{where}: {_differ(None, None, rtol, atol)}.")
        elif not isinstance(got, (tuple, list)) or len(got) != len(labels):
            return CheckResult(
                name, False, f"{where}: expected a tuple of {len(labels)} results ({', '.join(labels)}), "
                f"got {type(got).__name__}"
            )  # fmt: skip
        got = tuple(_detach(g) for g in got)
        expected = reference(*args)
        for label, want, have in zip(labels, expected, got):
            why = _differ(want, have, rtol, atol)
            if why is not None:
                named = ""
                for key, text in mistakes.items():
                    try:
                        variant = reference(*args, mistake=key)
                    except RuntimeError:  # this mistake cannot run on this case's shapes
                        continue
                    if all(_differ(w, h, rtol, atol) is None for w, h in zip(variant, got)):
                        named = f" It looks like this mistake: {text}."
                        break
                prefix = f"{label}: " if len(labels) > 1 else ""
                return CheckResult(name, False, f"{where}: {prefix}{why}.{named}")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference.")


def _rand(gen: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)


# --- one RNN step ------------------------------------------------------------------------------

RNN_STEP_MISTAKES = {
    "no tanh": "the tanh is missing: the new state is tanh of the weighted sum, which keeps it in (-1, 1)",
    "sigmoid": "a sigmoid instead of tanh: the state of a plain RNN is tanh(...), in (-1, 1) and centred on 0",
    "swapped": "W and U are swapped: W multiplies the previous state h, U the input x",
    "not transposed": "the weight matrices are not transposed: row i of W holds the weights into unit i, "
    "so a batch [N, H] is multiplied by W.T (h @ W.T), not by W",
    "no bias": "the bias b is missing",
}
"""The mistakes :func:`rnn_step` recognises, by name, each with what a matching answer is told."""


def _rnn_step(x: Tensor, h: Tensor, W: Tensor, U: Tensor, b: Tensor, mistake: str = "") -> tuple[Tensor]:
    """h' = tanh(h Wᵀ + x Uᵀ + b) for a batch; ``mistake`` makes one of :data:`RNN_STEP_MISTAKES`."""
    if mistake == "swapped":  # raises unless F = H, as the student's code would
        W, U = U, W
    if mistake == "not transposed":
        W, U = W.T, U.T
    pre = h @ W.T + x @ U.T + (0 if mistake == "no bias" else b)
    if mistake == "no tanh":
        return (pre,)
    return (torch.sigmoid(pre) if mistake == "sigmoid" else torch.tanh(pre),)


def rnn_step(student: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]) -> CheckResult:
    """Check ``student(x, h, W, U, b) -> h_new``: one step of a plain RNN, ``h' = tanh(W h + U x + b)``.

    Shapes (float64): ``x [N, F]``, ``h [N, H]``, ``W [H, H]``, ``U [H, F]``, ``b [H]``; the answer
    ``[N, H]``. For a batch, row n is ``tanh(h[n] Wᵀ + x[n] Uᵀ + b)``. Cases: a square case F = H
    first (it tells W from U and W from Wᵀ, which would not even run on other shapes), a batch of
    one, a zero state (the first step), large inputs that saturate the tanh, and one input
    feature. Compared to 1e-7.
    """
    name = "rnn_step"
    refused = _refuse(name, student)
    if refused is not None:
        return refused
    gen = torch.Generator().manual_seed(81)

    def case(n: int, f: int, h: int, scale: float = 1.0, zero_state: bool = False) -> tuple[Tensor, ...]:
        state = torch.zeros(n, h, dtype=torch.float64) if zero_state else _rand(gen, n, h, scale=0.5)
        return (_rand(gen, n, f, scale=scale), state, _rand(gen, h, h, scale=0.5), _rand(gen, h, f, scale=0.5),
                _rand(gen, h, scale=0.1))  # fmt: skip

    shapes = [(5, 4, 4, 1.0, False), (1, 3, 4, 1.0, False), (3, 2, 5, 1.0, True), (4, 3, 4, 20.0, False),
              (6, 1, 3, 1.0, False)]  # fmt: skip
    cases = [
        (f"case {k} (N = {n}, F = {f}, H = {h}{', large inputs' if s > 1 else ''}"
         f"{', h = 0' if z else ''})", case(n, f, h, s, z))
        for k, (n, f, h, s, z) in enumerate(shapes, start=1)
    ]  # fmt: skip
    order = ["swapped", "not transposed", "no tanh", "sigmoid", "no bias"]
    mistakes = {key: RNN_STEP_MISTAKES[key] for key in order}
    return _compare_outputs(name, student, _rnn_step, cases, ("h_new",), mistakes)


# --- one LSTM step -----------------------------------------------------------------------------

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
    """(h', c') of one LSTM step in torch's gate order i, f, g, o; ``mistake``: one of :data:`LSTM_STEP_MISTAKES`."""
    pre = x @ W_ih.T + h @ W_hh.T + b
    i, f, g, o = pre.chunk(4, dim=1)
    if mistake == "gate order":
        i, f, o, g = pre.chunk(4, dim=1)
    i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
    g = torch.sigmoid(g) if mistake == "sigmoid candidate" else torch.tanh(g)
    c_new = f * g + i * c if mistake == "roles swapped" else f * c + i * g
    h_new = o * c_new if mistake == "h without tanh" else o * torch.tanh(c_new)
    return (c_new, h_new) if mistake == "h and c swapped" else (h_new, c_new)


def lstm_step(student: Callable[..., tuple[Tensor, Tensor]]) -> CheckResult:
    """Check ``student(x, h, c, W_ih, W_hh, b) -> (h_new, c_new)``: one LSTM step with torch's layout.

    Shapes (float64): ``x [N, F]``, ``h, c [N, H]``, ``W_ih [4H, F]``, ``W_hh [4H, H]``, ``b [4H]``; rows
    of the weights in gate order i, f, g, o. ``i, f, o = σ(·)``, ``g = tanh(·)`` of ``x W_ihᵀ + h W_hhᵀ + b``
    (each its own quarter), ``c' = f ⊙ c + i ⊙ g``, ``h' = o ⊙ tanh(c')``. Cases: a batch of one, a
    zero state, F ≠ H, large inputs, a large cell state. Compared to 1e-7.
    """
    name = "lstm_step"
    refused = _refuse(name, student)
    if refused is not None:
        return refused
    gen = torch.Generator().manual_seed(82)

    def case(n: int, f: int, h: int, scale: float = 1.0, zero: bool = False, big_c: bool = False) -> tuple:
        hs = torch.zeros(n, h, dtype=torch.float64) if zero else _rand(gen, n, h, scale=0.5)
        cs = torch.zeros(n, h, dtype=torch.float64) if zero else _rand(gen, n, h, scale=5.0 if big_c else 1.0)
        return (_rand(gen, n, f, scale=scale), hs, cs, _rand(gen, 4 * h, f, scale=0.5),
                _rand(gen, 4 * h, h, scale=0.5), _rand(gen, 4 * h, scale=0.5))  # fmt: skip

    shapes = [(1, 3, 2, 1.0, False, False), (4, 3, 3, 1.0, True, False), (5, 2, 4, 1.0, False, False),
              (3, 4, 3, 10.0, False, False), (2, 3, 5, 1.0, False, True)]  # fmt: skip
    cases = [
        (f"case {k} (N = {n}, F = {f}, H = {h}{', large inputs' if s > 1 else ''}{', h = c = 0' if z else ''}"
         f"{', large c' if big else ''})", case(n, f, h, s, z, big))
        for k, (n, f, h, s, z, big) in enumerate(shapes, start=1)
    ]  # fmt: skip
    return _compare_outputs(name, student, _lstm_step, cases, ("h_new", "c_new"), LSTM_STEP_MISTAKES)


# --- gradient clipping by norm -----------------------------------------------------------------

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
    """(clipped gradients, total norm before clipping); ``mistake``: one of :data:`CLIP_MISTAKES`."""
    norms = torch.stack([g.norm() for g in grads])
    total = {"sum of norms": norms.sum(), "squared": norms.square().sum()}.get(mistake, norms.norm())
    if mistake == "per tensor":
        return [g * min(1.0, max_norm / (float(n) + 1e-6)) for g, n in zip(grads, norms)], total
    if mistake == "by value":
        return [g.clamp(-max_norm, max_norm) for g in grads], total
    scale = max_norm / (float(total) + 1e-6)
    scale = scale if mistake == "always" else min(1.0, scale)
    return [g * scale for g in grads], total


def clip_grad_norm(student: Callable[[list[Tensor], float], tuple[list[Tensor], Any]]) -> CheckResult:
    """Check ``student(grads, max_norm) -> (clipped, total_norm)``: clipping by the global norm.

    ``grads`` is a list of float64 tensors of any shapes; ``total_norm = √(Σ over all entries g²)``;
    when it exceeds ``max_norm`` every tensor is multiplied by ``max_norm / total_norm``, else left
    as it is (``torch.nn.utils.clip_grad_norm_`` divides by ``total_norm + 1e-6``; both pass).
    ``clipped`` is a list of tensors of the same shapes. Cases: a norm below the limit, above it,
    one tensor, tensors of several shapes, an all-zero gradient, a huge gradient. Without
    ``torch.nn.utils.clip_grad_norm_``.
    """
    name = "clip_grad_norm"
    refused = _refuse(name, student)
    if refused is not None:
        return refused
    gen = torch.Generator().manual_seed(83)
    layers = [_rand(gen, 4, 3), _rand(gen, 4), _rand(gen, 2, 4), _rand(gen, 2)]
    cases = [
        ("case 1 (one tensor of shape (3,) with norm 0.5, max_norm = 1)", [torch.tensor([0.3, 0.0, -0.4],
         dtype=torch.float64)], 1.0),
        ("case 2 (one tensor of shape (3,) with norm 5, max_norm = 1)", [torch.tensor([3.0, 0.0, -4.0],
         dtype=torch.float64)], 1.0),
        ("case 3 (4 tensors of shapes (4, 3), (4,), (2, 4), (2,), max_norm = 1)", layers, 1.0),
        ("case 4 (the same 4 tensors, max_norm = 100: no clipping)", layers, 100.0),
        ("case 5 (a tensor of zeros and a small one, max_norm = 0.5)", [torch.zeros(3, 3, dtype=torch.float64),
         _rand(gen, 5, scale=0.01)], 0.5),
        ("case 6 (huge gradients of norm about 1e6, max_norm = 5)", [_rand(gen, 10, 10, scale=1e5),
         _rand(gen, 10, scale=1e5)], 5.0),
    ]  # fmt: skip
    forbidden = ("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad.clip_grad_norm_")
    for where, grads, max_norm in cases:
        got, error = _run(student, ([g.clone() for g in grads], max_norm), forbidden)
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return CheckResult(
                name, False, f"{where}: expected a pair (clipped gradients, total norm), got {type(got).__name__}"
            )
        clipped, total = got
        want_clipped, want_total = _clip(grads, max_norm)
        if not isinstance(clipped, (tuple, list)) or len(clipped) != len(grads):
            return CheckResult(
                name, False, f"{where}: the clipped gradients must be a list of {len(grads)} tensors, one per "
                f"gradient; got {type(clipped).__name__}"
                + (f" of length {len(clipped)}" if isinstance(clipped, (tuple, list)) else "")
            )  # fmt: skip
        problem = None
        why = _differ(want_total, _detach(total), rtol=1e-6, atol=1e-12)
        if why is not None:
            problem = f"the total norm: {why}"
        else:
            for number, (want, have) in enumerate(zip(want_clipped, clipped), start=1):
                why = _differ(want, _detach(have), rtol=1e-5, atol=1e-12)
                if why is not None:
                    problem = f"clipped gradient {number}: {why}"
                    break
        if problem is not None:
            named = ""
            for key, text in CLIP_MISTAKES.items():
                mist_clipped, mist_total = _clip(grads, max_norm, mistake=key)
                same_total = _differ(mist_total, _detach(total), rtol=1e-6, atol=1e-12) is None
                if same_total and all(_differ(w, _detach(h), rtol=1e-5, atol=1e-12) is None
                                      for w, h in zip(mist_clipped, clipped)):  # fmt: skip
                    named = f" It looks like this mistake: {text}."
                    break
            return CheckResult(name, False, f"{where}: {problem}.{named}")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference clipping.")


# --- one GRU step ------------------------------------------------------------------------------

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
) -> tuple[Tensor]:
    """h' of one GRU step in torch's gate order r, z, n; ``mistake``: one of :data:`GRU_STEP_MISTAKES`."""
    H = h.shape[1]
    x_r, x_z, x_n = (x @ W_ih.T + b_ih).chunk(3, dim=1)
    h_r, h_z, h_n = (h @ W_hh.T + b_hh).chunk(3, dim=1)
    if mistake == "gate order":
        x_z, x_r, x_n = (x @ W_ih.T + b_ih).chunk(3, dim=1)
        h_z, h_r, h_n = (h @ W_hh.T + b_hh).chunk(3, dim=1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    if mistake == "reset before":
        hidden = (r * h) @ W_hh[2 * H :].T + b_hh[2 * H :]
    elif mistake == "bias outside":
        hidden = r * (h @ W_hh[2 * H :].T) + b_hh[2 * H :]
    else:
        hidden = r * h_n
    n = (torch.sigmoid if mistake == "sigmoid candidate" else torch.tanh)(x_n + hidden)
    return (z * n + (1 - z) * h if mistake == "z swapped" else (1 - z) * n + z * h,)


def gru_step(student: Callable[..., Tensor]) -> CheckResult:
    """Check ``student(x, h, W_ih, W_hh, b_ih, b_hh) -> h_new``: one GRU step with torch's layout.

    Shapes (float64): ``x [N, F]``, ``h [N, H]``, ``W_ih [3H, F]``, ``W_hh [3H, H]``, ``b_ih, b_hh [3H]``;
    rows in gate order r, z, n. ``r = σ(x_r + h_r)``, ``z = σ(x_z + h_z)``, ``n = tanh(x_n + r ⊙ h_n)``,
    ``h' = (1 - z) ⊙ n + z ⊙ h``, where ``x_· `` and ``h_·`` are the thirds of ``x W_ihᵀ + b_ih`` and
    ``h W_hhᵀ + b_hh``. Cases: a batch of one, a zero state, F ≠ H, large inputs, large biases.
    Compared to 1e-7.
    """
    name = "gru_step"
    refused = _refuse(name, student)
    if refused is not None:
        return refused
    gen = torch.Generator().manual_seed(85)

    def case(n: int, f: int, h: int, scale: float = 1.0, zero: bool = False, bias: float = 0.5) -> tuple:
        hs = torch.zeros(n, h, dtype=torch.float64) if zero else _rand(gen, n, h, scale=0.7)
        return (_rand(gen, n, f, scale=scale), hs, _rand(gen, 3 * h, f, scale=0.5), _rand(gen, 3 * h, h, scale=0.5),
                _rand(gen, 3 * h, scale=bias), _rand(gen, 3 * h, scale=bias))  # fmt: skip

    shapes = [(1, 3, 2, 1.0, False, 0.5), (4, 3, 3, 1.0, True, 0.5), (5, 2, 4, 1.0, False, 0.5),
              (3, 4, 3, 10.0, False, 0.5), (2, 3, 5, 1.0, False, 3.0)]  # fmt: skip
    cases = [
        (f"case {k} (N = {n}, F = {f}, H = {h}{', large inputs' if s > 1 else ''}{', h = 0' if z else ''}"
         f"{', large biases' if bias > 1 else ''})", case(n, f, h, s, z, bias))
        for k, (n, f, h, s, z, bias) in enumerate(shapes, start=1)
    ]  # fmt: skip
    return _compare_outputs(name, student, _gru_step, cases, ("h_new",), GRU_STEP_MISTAKES)


# --- n-gram baselines --------------------------------------------------------------------------

BIGRAM_MISTAKES = {
    "no smoothing": "a pair never seen in training gets probability 0 and a loss of infinity: add one to "
    "every count before normalising",
    "bits": "the loss is in bits (log base 2); the course reports the loss in nats (natural log) and "
    "converts to bits by dividing by ln 2 afterwards",
    "columns": "the counts are normalised over the wrong axis: each row a (the previous character) must "
    "sum to one over the next characters b",
    "validation counts": "the counts come from the validation text; they must come from the training text only",
    "sum": "the loss is the sum over the validation pairs; it is their mean",
    "shorter context": "the previous character is ignored: that is the unigram model",
}
"""The mistakes :func:`bigram_loss` recognises, by name, each with what a matching answer is told."""

TRIGRAM_MISTAKES = {
    "no smoothing": "a triple never seen in training gets probability 0 and a loss of infinity: add one to "
    "every count before normalising",
    "denominator": "the denominator misses + V: adding one to each of the V counts of a context adds V to "
    "its total, count(a, b) + V, so that the probabilities sum to one",
    "bits": "the loss is in bits (log base 2); the course reports the loss in nats (natural log) and "
    "converts to bits by dividing by ln 2 afterwards",
    "validation counts": "the counts come from the validation text; they must come from the training text only",
    "sum": "the loss is the sum over the validation triples; it is their mean",
    "shorter context": "only the previous character is used: that is the bigram model; the trigram "
    "conditions on the previous two",
}
"""The mistakes :func:`trigram_loss` recognises, by name, each with what a matching answer is told."""


def _ngram(train: Tensor, val: Tensor, vocab_size: int, order: int, mistake: str = "") -> tuple[Tensor]:
    """Mean negative log-likelihood (nats) on ``val`` of the add-one n-gram model of ``train``.

    The mean runs over the ``len(val) - order + 1`` positions that have a full context of
    ``order - 1`` characters; ``mistake`` makes one of :data:`BIGRAM_MISTAKES`/:data:`TRIGRAM_MISTAKES`.
    """
    source = val if mistake == "validation counts" else train
    V = vocab_size
    context = order - 1 - (mistake == "shorter context")

    def keys(ids: Tensor, start: int) -> Tensor:
        """The index of the context of each predicted character ``ids[start:]``."""
        key = torch.zeros(len(ids) - start, dtype=torch.long)
        for k in range(context):
            key = key * V + ids[start - context + k : len(ids) - context + k]
        return key

    counts = torch.zeros(V**context, V, dtype=torch.float64)
    start = order - 1
    counts.index_put_((keys(source, start), source[start:]),
                      torch.ones(len(source) - start, dtype=torch.float64), accumulate=True)  # fmt: skip
    totals = counts.sum(dim=1, keepdim=True)
    if mistake == "columns":
        totals = counts.sum(dim=0, keepdim=True) + V
    if mistake == "no smoothing":
        probs = counts / totals
    elif mistake == "denominator":
        probs = (counts + 1) / totals
    else:
        probs = (counts + 1) / (totals + V) if mistake != "columns" else (counts + 1) / totals
    nll = -probs[keys(val, start), val[start:]].log()
    if mistake == "bits":
        nll = nll / math.log(2)
    return (nll.sum() if mistake == "sum" else nll.mean(),)


def _markov_text(gen: torch.Generator, states: int, length: int) -> Tensor:
    """A text of ``length`` ids drawn from a random first-order Markov chain over ``states`` characters."""
    chain = torch.softmax(3 * torch.randn(states, states, generator=gen), dim=1)
    walk = [0]
    for _ in range(length - 1):
        walk.append(int(torch.multinomial(chain[walk[-1]], 1, generator=gen)))
    return torch.tensor(walk)


def _ngram_check(
    name: str, student: Callable[[Tensor, Tensor, int], Any], order: int, mistakes: dict[str, str]
) -> CheckResult:
    refused = _refuse(name, student)
    if refused is not None:
        return refused
    gen = torch.Generator().manual_seed(84 + order)
    walk = _markov_text(gen, 6, 3_000)
    cases = [
        ("case 1 (train 'ababab', validation 'abab', V = 2)",
         (torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([0, 1, 0, 1]), 2)),
        ("case 2 (random texts, V = 5)", (torch.randint(0, 5, (300,), generator=gen),
                                          torch.randint(0, 5, (60,), generator=gen), 5)),
        ("case 3 (validation n-grams never seen in training, V = 3)",
         (torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.tensor([0, 2, 1, 0, 0]), 3)),
        ("case 4 (a Markov chain of 3,000 characters split 2,500/500, V = 6)", (walk[:2500], walk[2500:], 6)),
        ("case 5 (ids 0-3 only, V = 8: four characters never occur)",
         (torch.randint(0, 4, (150,), generator=gen), torch.randint(0, 4, (40,), generator=gen), 8)),
    ]  # fmt: skip
    for where, (train, val, V) in cases:
        got, error = _run(student, (train, val, V))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        why = _differ(_ngram(train, val, V, order)[0], _detach(got), rtol=1e-6, atol=1e-12)
        if why is not None:
            have = _as_array(_detach(got))
            named = ""
            for key, text in mistakes.items():
                want = _as_array(_ngram(train, val, V, order, mistake=key)[0])
                same = have is not None and have.shape == want.shape and (
                    np.allclose(have, want, rtol=1e-6, atol=1e-12, equal_nan=True)
                    or (np.isinf(want).all() and np.isinf(have).all())
                )  # fmt: skip
                if same:
                    named = f" It looks like this mistake: {text}."
                    break
            return CheckResult(name, False, f"{where}: {why}.{named}")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference {name.split('_')[0]} loss.")


def bigram_loss(student: Callable[[Tensor, Tensor, int], Any]) -> CheckResult:
    """Check ``student(train_ids, val_ids, vocab_size) -> loss``: the bigram model's validation loss in nats.

    ``P(b | a) = (count(a, b) + 1) / (count(a) + V)`` with ``count(a, b)`` the number of times character
    ``b`` follows ``a`` in ``train_ids`` and ``count(a) = Σ_b count(a, b)``; the loss is the mean of
    ``-ln P(val[t+1] | val[t])`` over the ``len(val_ids) - 1`` pairs of the validation ids. Ids are
    ``int64 [T]`` in ``0 … V-1``. Cases: a hand-sized text, random texts, a validation pair never seen
    in training, characters that never occur. Compared to 1e-6 (relative).
    """
    return _ngram_check("bigram_loss", student, 2, BIGRAM_MISTAKES)


def trigram_loss(student: Callable[[Tensor, Tensor, int], Any]) -> CheckResult:
    """Check ``student(train_ids, val_ids, vocab_size) -> loss``: the trigram model's validation loss in nats.

    ``P(c | a, b) = (count(a, b, c) + 1) / (count(a, b) + V)`` with counts of consecutive triples of
    ``train_ids`` and ``count(a, b) = Σ_c count(a, b, c)``; the loss is the mean of
    ``-ln P(val[t+2] | val[t], val[t+1])`` over the ``len(val_ids) - 2`` triples of the validation ids.
    Cases as for :func:`bigram_loss`. Compared to 1e-6 (relative).
    """
    return _ngram_check("trigram_loss", student, 3, TRIGRAM_MISTAKES)


register_hint(
    "rnn_step",
    "for a batch the rows are samples: pre = h @ W.T + x @ U.T + b has shape [N, H]; the new state is "
    "torch.tanh(pre).",
)
register_hint(
    "lstm_step",
    "pre = x @ W_ih.T + h @ W_hh.T + b, then i, f, g, o = pre.chunk(4, dim=1); sigmoid on i, f, o and tanh "
    "on g; c_new = f * c + i * g; h_new = o * torch.tanh(c_new).",
)
register_hint(
    "clip_grad_norm",
    "total = torch.sqrt(sum((g ** 2).sum() for g in grads)); if total > max_norm multiply every g by "
    "max_norm / total, else keep it; return the list and total.",
)
register_hint(
    "gru_step",
    "x_r, x_z, x_n = (x @ W_ih.T + b_ih).chunk(3, dim=1) and the same for h @ W_hh.T + b_hh; r and z are "
    "sigmoids of the sums; n = torch.tanh(x_n + r * h_n); h_new = (1 - z) * n + z * h.",
)
register_hint(
    "trigram_loss",
    "number each pair of characters (a, b) as a * V + b; counts = torch.ones(V * V, V); add 1 at "
    "[pair, c] for each triple of train (index_put_ with accumulate=True); normalise each row; the loss is "
    "-log p(c | pair) averaged over the triples of val.",
)
register_hint(
    "bigram_loss",
    "counts = torch.ones(V, V) (the added one), then counts[a, b] += 1 for each neighbouring pair of train "
    "(index_put_ with accumulate=True, or a loop); probs = counts / counts.sum(1, keepdim=True); the loss is "
    "-probs[val[:-1], val[1:]].log().mean().",
)
