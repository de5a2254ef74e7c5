"""Self-checks of chapter 1, neurons and networks.

Each check computes its expected answer itself. A failed check names the case and
how the answer is off (a shape, a sign, a factor, a percentage band, a mistake it
recognises) but never the expected number and never the method; the method is the
check's hint, shown by ``check.hint(name)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from companion.check.core import (
    PLACEHOLDER_MESSAGE,
    CheckResult,
    _as_array,
    _how_far,
    compare,
    register_hint,
    value,
)

__all__ = [
    "NETWORK_2_PARAMETERS",
    "SOFTMAX_FORBIDDEN",
    "linear_fold",
    "mlp_parameter_count",
    "network_2",
    "network_2_relu",
    "neuron_forward",
    "parameter_count",
    "stable_softmax",
]


def _reference_neuron(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    return torch.relu(x @ w + b)


def neuron_forward(student: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(x, w, b)``: a ReLU neuron, ``relu(x · w + b)``.

    Shapes: ``x [..., n]``, ``w [n]``, ``b []`` → ``[...]``. The cases: one input vector with a
    positive and one with a negative pre-activation, a random vector, a batch, a batch of one
    (the answer keeps its batch dimension, shape ``[1]``), all-zero inputs and a zero bias
    (the output is exactly 0), and large inputs.
    """
    gen = torch.Generator().manual_seed(0)
    cases = [
        (torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.25]), torch.tensor(0.1)),
        (torch.tensor([1.0, 2.0]), torch.tensor([-0.5, -0.25]), torch.tensor(0.1)),
        (torch.randn(3, generator=gen), torch.randn(3, generator=gen), torch.randn((), generator=gen)),
        (torch.randn(8, 4, generator=gen), torch.randn(4, generator=gen), torch.randn((), generator=gen)),
        (torch.randn(1, 4, generator=gen), torch.randn(4, generator=gen), torch.tensor(0.3)),
        (torch.zeros(2, 3), torch.randn(3, generator=gen), torch.tensor(0.0)),
        (1e4 * torch.randn(6, 5, generator=gen, dtype=torch.float64),
         torch.randn(5, generator=gen, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)),
        (torch.randn(5, 784, generator=gen), torch.randn(784, generator=gen) * 0.05, torch.tensor(-0.2)),
    ]
    return compare("neuron_forward", student, _reference_neuron, cases, rtol=1e-5, atol=1e-5)


def mlp_parameter_count(sizes: Sequence[int]) -> int:
    """Parameters of a fully connected network with layer widths ``sizes`` (inputs first).

    Each layer ``n_in → n_out`` has ``n_in·n_out`` weights and ``n_out`` biases:
    ``Σ_l (n_{l-1} + 1)·n_l``.
    """
    if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes must list at least two positive int widths, inputs first; got {sizes!r}")
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def _as_whole_number(answer: Any) -> int | None:
    """``answer`` as an int when it is a whole number (int, integral float, 0-d tensor), else None."""
    if isinstance(answer, (bool, str, bytes)):
        return None
    array = _as_array(answer)
    if array is None or array.shape != () or not math.isfinite(float(array)):
        return None
    number = float(array)
    return int(number) if number.is_integer() else None


def parameter_count(answer: int, sizes: Sequence[int]) -> CheckResult:
    """Check a hand count of the parameters of a fully connected network with widths ``sizes``.

    A wrong count is told which usual miscount it matches (weights only, biases on the inputs
    too, one bias per layer, no weights into the output layer), or else how far off it is, in
    percentage bands; never the count itself or its parts.
    """
    expected = mlp_parameter_count(sizes)
    name = f"parameter_count({list(sizes)})"
    if answer is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    count = _as_whole_number(answer)
    if count is None:
        return CheckResult(name, False, f"expected a whole number, got {type(answer).__name__}.")
    if count == expected:
        return CheckResult(name, True, f"correct: {expected:,} parameters.")
    pairs = list(zip(sizes[:-1], sizes[1:]))
    weights = sum(a * b for a, b in pairs)
    known: dict[int, str] = {}
    for miscount, text in (  # the most common miscount first: it wins where two coincide
        (weights, "you counted the weights but not the biases (every neuron has one)"),
        (weights + sum(sizes), "the input layer has no biases: its 'neurons' only hold the inputs"),
        (weights + len(pairs), "each neuron has its own bias, not each layer"),
        (sum((a + 1) * b for a, b in pairs[:-1]), "the output layer's weights and biases count too"),
        (sum(sizes), "that counts neurons (and inputs); count the weights and biases"),
    ):
        known.setdefault(miscount, text)
    why = known.get(count, f"the count is wrong: {_how_far(expected, count)}")
    return CheckResult(name, False, why + ".")


NETWORK_2_PARAMETERS = ("w111", "w112", "b11", "w121", "w122", "b12", "w21", "w22", "b2")
"""The names of network 2's nine parameters (chapter 1), the keys of the ``params`` its checks pass."""


def network_2_relu(params: dict[str, float], x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Chapter 1's network 2 with ReLU hidden neurons, from its nine named parameters.

    ``h_j = relu(w_1j1·x1 + w_1j2·x2 + b_1j)`` for j = 1, 2; ``ŷ = w21·h1 + w22·h2 + b2``.
    Shapes: ``x1``, ``x2`` any equal shape → the same shape.
    """
    h1 = torch.relu(params["w111"] * x1 + params["w112"] * x2 + params["b11"])
    h2 = torch.relu(params["w121"] * x1 + params["w122"] * x2 + params["b12"])
    return params["w21"] * h1 + params["w22"] * h2 + params["b2"]


def network_2(
    params: dict[str, float], target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> CheckResult:
    """Check that network 2 with ReLU and these nine parameters computes ``target(x1, x2)``.

    ``params``: a dict with the keys of :data:`NETWORK_2_PARAMETERS` and numbers as values.
    Compared on a 21 x 21 grid over [-2, 2]² and on inputs of size 100, in float64.
    """
    name = "network_2"
    if params is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not isinstance(params, dict):
        return CheckResult(name, False, f"expected a dict of the nine parameters, got {type(params).__name__}")
    missing = [key for key in NETWORK_2_PARAMETERS if key not in params]
    unknown = sorted(set(params) - set(NETWORK_2_PARAMETERS))
    if missing or unknown:
        return CheckResult(
            name, False, f"the parameters must be exactly {', '.join(NETWORK_2_PARAMETERS)}; "
            f"missing: {missing or 'none'}, unknown: {unknown or 'none'}"
        )
    unset = [key for key in NETWORK_2_PARAMETERS if params[key] is Ellipsis]
    if unset:
        return CheckResult(name, False, f"{PLACEHOLDER_MESSAGE} (in {', '.join(unset)})")
    numbers = {key: None if isinstance(params[key], (str, bytes)) else _as_array(params[key])
               for key in NETWORK_2_PARAMETERS}
    bad = [key for key, v in numbers.items() if v is None or v.shape != () or not math.isfinite(float(v))]
    if bad:
        return CheckResult(name, False, f"each parameter must be one finite number; not so for {', '.join(bad)}")
    floats = {key: float(v) for key, v in numbers.items()}
    grid = torch.linspace(-2, 2, 21, dtype=torch.float64)
    far = torch.tensor([-100.0, 100.0], dtype=torch.float64)
    x1, x2 = (g.reshape(-1) for g in torch.meshgrid(grid, grid, indexing="ij"))
    f1, f2 = (g.reshape(-1) for g in torch.meshgrid(far, far, indexing="ij"))
    x1, x2 = torch.cat([x1, f1]), torch.cat([x2, f2])
    got = network_2_relu(floats, x1, x2)
    want = target(x1, x2)
    wrong = ~torch.isclose(got, want, rtol=1e-9, atol=1e-9)
    if not wrong.any():
        return CheckResult(name, True, f"matches the target on all {len(x1)} test points.")
    i = int(wrong.nonzero()[0])
    return CheckResult(
        name, False, f"{int(wrong.sum())} of {len(x1)} test points differ; e.g. at x1 = {x1[i]:g}, "
        f"x2 = {x2[i]:g} the target is {want[i]:.4g} but the network gives {got[i]:.4g}."
    )


# The linear network of chapter 1's exercise "fold a linear network".
_FOLD_W1 = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=torch.float64)
_FOLD_B1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
_FOLD_W2 = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
_FOLD_B2 = torch.tensor([-2.0], dtype=torch.float64)


def _fold(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    return torch.cat([(w2 @ w1).squeeze(0), w2 @ b1 + b2])


def linear_fold(answer: Sequence[float]) -> CheckResult:
    """Check ``[w1', w2', b']``, the single linear neuron equal to chapter 1's two-layer exercise network.

    The network: ``h = W1 x + b1`` with ``W1 = [[1, 2], [0, -1]]``, ``b1 = (1, 0)``, then
    ``ŷ = W2 h + b2`` with ``W2 = [[3, 1]]``, ``b2 = -2``. The answer: three numbers (a list,
    tuple or tensor), in the order w1', w2', b'.
    """
    name = "linear_fold"
    if answer is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    got = None if isinstance(answer, (str, bytes)) else _as_array(answer)
    if got is None or got.shape != (3,):
        shape = "not numbers" if got is None else f"shape {got.shape}"
        return CheckResult(name, False, f"expected three numbers [w1', w2', b'], got {shape}.")
    expected = _fold(_FOLD_W1, _FOLD_B1, _FOLD_W2, _FOLD_B2)
    result = value(name, got, expected, rtol=1e-9)
    if result:
        return result
    zero_b1, zero_b2 = torch.zeros(2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    mistakes = {
        "b1 was left out of b'; the hidden layer's bias reaches the output too": _fold(
            _FOLD_W1, zero_b1, _FOLD_W2, _FOLD_B2
        ),
        "W1 was read transposed; W1[j, i] is the weight from input i to hidden neuron j": _fold(
            _FOLD_W1.T, _FOLD_B1, _FOLD_W2, _FOLD_B2
        ),
        "b2 was left out of b'": _fold(_FOLD_W1, _FOLD_B1, _FOLD_W2, zero_b2),
    }
    for text, variant in mistakes.items():
        if value(name, got, variant, rtol=1e-9):
            return CheckResult(name, False, f"{result.message} It looks like this mistake: {text}.")
    return result


SOFTMAX_FORBIDDEN = (
    "torch.softmax",
    "torch.nn.functional.softmax",
    "torch.Tensor.softmax",
    "torch.special.softmax",
    "torch.log_softmax",
    "torch.nn.functional.log_softmax",
    "torch.Tensor.log_softmax",
    "torch.special.log_softmax",
)
"""What the softmax exercise does without, PyTorch's softmax and log-softmax under all their names."""


def _reference_softmax(z: torch.Tensor) -> torch.Tensor:
    return torch.softmax(z.double(), dim=-1)


def stable_softmax(student: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(z)``: the softmax over the last dimension, without overflow, without torch's softmax.

    ``z``: float32 logits ``[..., K]`` → probabilities of the same shape, each row positive
    and summing to 1. The cases: one vector, a batch, a batch of one, all zeros (uniform),
    one class (K = 1: exactly 1), logits of 1000 and of −1000 (a naive ``exp`` overflows to
    inf or underflows to 0), and a batch whose rows lie far apart. ``torch.softmax``,
    ``log_softmax`` and their aliases (:data:`SOFTMAX_FORBIDDEN`) raise while it runs.
    """
    gen = torch.Generator().manual_seed(1)
    cases = [
        (torch.tensor([2.0, 1.0, 0.1, -1.0]),),
        (torch.randn(5, 3, generator=gen),),
        (torch.randn(1, 4, generator=gen),),
        (torch.zeros(2, 5),),
        (torch.randn(3, 1, generator=gen),),
        (torch.tensor([1000.0, 999.0, 990.0]),),
        (torch.tensor([[-1000.0, -1001.0, -1003.0]]),),
        (torch.stack([torch.randn(4, generator=gen) + shift for shift in (-500.0, 0.0, 800.0)]),),
    ]
    return compare(
        "stable_softmax", student, _reference_softmax, cases, rtol=1e-4, atol=1e-6, forbidden=SOFTMAX_FORBIDDEN
    )


register_hint(
    "neuron_forward",
    "weighted sum x·w, plus the bias b, then ReLU (max(0, ·)); `x @ w` works for one vector [n] and for a "
    "batch [B, n] alike.",
)
register_hint(
    "parameter_count",
    "a layer n_in → n_out has n_in·n_out weights and n_out biases; add the layers up (the inputs have none).",
)
register_hint(
    "network_2",
    "|a| = max(0, a) + max(0, −a): let one hidden neuron compute max(0, x1 − x2), the other max(0, x2 − x1), "
    "and add them in the output neuron.",
)
register_hint(
    "linear_fold",
    "substitute h = W1 x + b1 into ŷ = W2 h + b2: the weights are W2 W1 and the bias W2 b1 + b2.",
)
register_hint(
    "stable_softmax",
    "subtract each row's largest logit, z − z.max(dim=-1, keepdim=True).values, before the exponentials "
    "(that changes nothing in the result), then divide each row by its sum.",
)
