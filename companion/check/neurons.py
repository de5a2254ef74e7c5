"""Self-checks of chapter 1, neurons and networks: a neuron, a parameter count, folding a linear
network, designing with ReLU, and a softmax that does not overflow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from companion.check.core import CheckSpec, Wrong, aten, define, sampler

__all__ = ["NETWORK_2_PARAMETERS", "linear_fold", "network_2", "neuron_forward", "parameter_count", "stable_softmax"]

FUSED_ATTENTION = ("torch.nn.functional.scaled_dot_product_attention",
                   "torch.nn.functional.multi_head_attention_forward",
                   *aten("scaled_dot_product_attention", "_scaled_dot_product_attention_math",
                         "_scaled_dot_product_flash_attention_for_cpu", "_fused_sdp_choice"))  # fmt: skip
"""PyTorch's fused attention, under its Python names and its internal operators."""

SOFTMAX_FORBIDDEN = (*(f"torch.{m}{f}" for m in ("", "_", "nn.functional.", "Tensor.", "special.", "sparse.")
                       for f in ("softmax", "log_softmax")), *FUSED_ATTENTION,
                     "scipy.special.softmax", "scipy.special.log_softmax",
                     *aten("softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax", "_sparse_softmax",
                           "_sparse_log_softmax", "_masked_softmax"))  # fmt: skip
"""PyTorch's softmax and log-softmax under all their names, its internal operators and sparse tensors' included, and
the fused attention that computes one inside."""


def _neuron_cases(gen: torch.Generator) -> list:
    r = sampler(gen, torch.float32)
    return [
        ("one vector, positive sum", (torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.25]), torch.tensor(0.1))),
        ("one vector, negative sum", (torch.tensor([1.0, 2.0]), torch.tensor([-0.5, -0.25]), torch.tensor(0.1))),
        ("one random vector", (r(3), r(3), r())),
        ("a batch of 8", (r(8, 4), r(4), r())),
        ("a batch of one", (r(1, 4), r(4), torch.tensor(0.3))),
        ("zero inputs, zero bias", (torch.zeros(2, 3), r(3), torch.tensor(0.0))),
        ("large inputs", (1e4 * r(6, 5, dtype=torch.float64), r(5, dtype=torch.float64),
                          torch.tensor(-2.0, dtype=torch.float64))),
        ("784 inputs", (r(5, 784), r(784) * 0.05, torch.tensor(-0.2))),
    ]  # fmt: skip


neuron_forward = define(CheckSpec(
    "neuron_forward", lambda x, w, b: torch.relu(x @ w + b), _neuron_cases, rtol=1e-5, atol=1e-5,
    hint="the weighted sum of the inputs plus the bias, then ReLU; pick the one matrix product that works for "
    "one vector [n] and for a batch [B, n] alike, so that a batch of one keeps its batch dimension.",
), doc="""Check ``student(x, w, b)``, one ReLU neuron: ``x [..., n]``, ``w [n]``, ``b []`` → ``[...]``; a batch
    of one keeps its batch dimension.""")


def _mlp_parameter_count(sizes: Sequence[int]) -> int:
    if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes must list at least two positive int widths, inputs first; got {sizes!r}")
    return _weights(sizes) + sum(sizes[1:])


def _weights(sizes: Sequence[int]) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


parameter_count = define(CheckSpec(
    "parameter_count", _mlp_parameter_count, answers=1, passed="correct.",
    mistakes={  # the most common miscount first: it wins where two coincide
        "you counted the weights but not the biases (every neuron has one)": _weights,
        "the input layer has no biases: its 'neurons' only hold the inputs": lambda s: _weights(s) + sum(s),
        "each neuron has its own bias, not each layer": lambda s: _weights(s) + len(s) - 1,
        "the output layer's weights and biases count too": lambda s: _mlp_parameter_count(s[:-1]),
        "that counts neurons (and inputs); count the weights and biases": sum,
    },
    hint="a layer n_in → n_out has n_in·n_out weights and n_out biases; add the layers up (the inputs have "
    "none).",
), "answer", "sizes", doc="""Check a hand count of the parameters of a fully connected network with layer widths
    ``sizes`` (inputs first). A wrong count is told which usual miscount it matches, or how far off it is.""")


NETWORK_2_PARAMETERS = ("w111", "w112", "b11", "w121", "w122", "b12", "w21", "w22", "b2")
"""The names of network 2's nine parameters (chapter 1), the keys of the dict :func:`network_2` takes."""
_X1, _X2 = (torch.cat([g.reshape(-1), f.reshape(-1)]) for g, f in zip(
    torch.meshgrid(*[torch.linspace(-2, 2, 21, dtype=torch.float64)] * 2, indexing="ij"),
    torch.meshgrid(*[torch.tensor([-100.0, 100.0], dtype=torch.float64)] * 2, indexing="ij"),
))  # fmt: skip


def _network_2(params: Any) -> torch.Tensor:
    """Network 2 with ReLU on the test points, from the nine named parameters; Wrong when they are not that."""
    if not isinstance(params, dict) or set(params) != set(NETWORK_2_PARAMETERS):
        keys = sorted(params) if isinstance(params, dict) else []
        raise Wrong(f"expected a dict of exactly the parameters {', '.join(NETWORK_2_PARAMETERS)}; missing: "
                    f"{[k for k in NETWORK_2_PARAMETERS if k not in keys] or 'none'}, unknown: "
                    f"{[k for k in keys if k not in NETWORK_2_PARAMETERS] or 'none'}")  # fmt: skip
    bad = [k for k, v in params.items() if isinstance(v, (str, bool)) or torch.as_tensor(v).numel() != 1]
    if bad or not all(torch.isfinite(torch.tensor(float(v))) for v in params.values()):
        raise Wrong(f"each parameter must be one finite number; not so for {', '.join(bad) or 'some'}")
    p = {k: float(v) for k, v in params.items()}
    h1 = torch.relu(p["w111"] * _X1 + p["w112"] * _X2 + p["b11"])
    h2 = torch.relu(p["w121"] * _X1 + p["w122"] * _X2 + p["b12"])
    return p["w21"] * h1 + p["w22"] * h2 + p["b2"]


def _where_network_differs(case: tuple, expected: Any, got: Any) -> str:
    try:
        target = expected[0]
        wrong = (_network_2(got) - target).abs() > 1e-9 * (1 + target.abs())
    except (Wrong, TypeError):
        return ""
    i = int(wrong.nonzero()[0])
    return f"The first is at x1 = {_X1[i]:g}, x2 = {_X2[i]:g}."


class _Target(tuple):
    """The reference's output: the target's values, which the view leaves as they are (an answer, whatever
    it is, must be the nine parameters)."""


network_2 = define(CheckSpec(
    "network_2", lambda target: _Target((target,)), answers=1, rtol=1e-9, atol=1e-9,
    prepare=lambda target: (torch.as_tensor(target(_X1, _X2), dtype=torch.float64),),
    view=lambda case, out: out[0] if isinstance(out, _Target) else _network_2(out),
    diagnose=_where_network_differs, passed=f"matches the target on all {len(_X1)} test points.",
    hint="|a| = max(0, a) + max(0, −a): with a the difference x1 − x2, each term is what one ReLU neuron can "
    "compute (which weights and bias give it that input?), and the output neuron only has to add the two.",
), "params", "target", doc="""Check that network 2 of chapter 1, with ReLU hidden neurons and the nine parameters
    ``params`` (a dict with the keys of :data:`NETWORK_2_PARAMETERS`), computes ``target(x1, x2)`` on a 21 × 21
    grid over [-2, 2]² and at four far points, in float64.""")


def _fold(w1: Any, b1: Any, w2: Any, b2: Any) -> torch.Tensor:
    w1, b1, w2, b2 = (torch.tensor(t, dtype=torch.float64) for t in (w1, b1, w2, b2))
    return torch.cat([(w2 @ w1).squeeze(0), w2 @ b1 + b2])


_W1, _B1, _W2, _B2 = [[1.0, 2.0], [0.0, -1.0]], [1.0, 0.0], [[3.0, 1.0]], [-2.0]
linear_fold = define(CheckSpec(
    "linear_fold", lambda: _fold(_W1, _B1, _W2, _B2), answers=1, rtol=1e-9, atol=1e-12, passed="correct.",
    mistakes={
        "b1 was left out of b'; the hidden layer's bias reaches the output too": lambda: _fold(_W1, [0, 0], _W2, _B2),
        "W1 was read transposed; W1[j, i] is the weight from input i to hidden neuron j":
            lambda: _fold(list(zip(*_W1)), _B1, _W2, _B2),
        "b2 was left out of b'": lambda: _fold(_W1, _B1, _W2, [0.0]),
    },
    hint="substitute the hidden layer's expression for h into the output's and collect the terms: what "
    "multiplies x is the new weight (a product of the two weight matrices: in which order?), the rest is the "
    "new bias, and b1 passes through W2 on its way there.",
), "answer", doc="""Check ``[w1', w2', b']``, the one linear neuron equal to chapter 1's two-layer exercise network
    (three numbers: a list, tuple or tensor, in that order).""")


stable_softmax = define(CheckSpec(
    "stable_softmax", lambda z: torch.softmax(z, dim=-1), rtol=1e-4, atol=1e-6,
    forbidden=(*SOFTMAX_FORBIDDEN, "torch.logsumexp", "torch.Tensor.logsumexp", "torch.special.logsumexp",
               *aten("logsumexp")),
    cases=lambda gen: [
        ("one vector", (torch.tensor([2.0, 1.0, 0.1, -1.0]),)),
        ("a batch", (torch.randn(5, 3, generator=gen),)),
        ("a batch of one", (torch.randn(1, 4, generator=gen),)),
        ("all zeros", (torch.zeros(2, 5),)),
        ("one class", (torch.randn(3, 1, generator=gen),)),
        ("logits near 1000", (torch.tensor([1000.0, 999.0, 990.0]),)),
        ("logits near −1000", (torch.tensor([[-1000.0, -1001.0, -1003.0]]),)),
        ("rows far apart", (torch.stack([torch.randn(4, generator=gen) + s for s in (-500.0, 0.0, 800.0)]),)),
    ],
    hint="softmax does not change when the same number is subtracted from every logit of a row; choose that "
    "number so that no exponential can overflow (each row's largest logit), keep the dimension for "
    "broadcasting, then divide each row by its sum.",
), doc="""Check ``student(z)``: the softmax over the last dimension of float32 logits ``[..., K]``, without
    overflow and without PyTorch's softmax, log-softmax or log-sum-exp (they raise while it runs, as does fused
    attention, which computes a softmax inside).""")


