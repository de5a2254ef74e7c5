"""Self-checks of chapter 10, from small to large models: parameters, memory, all-reduce, compute."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from companion.check.core import PLACEHOLDER_MESSAGE, CheckResult, _how_far, _run, register_hint, value

__all__ = ["all_reduce_mean", "gpt_parameter_count", "training_bytes", "training_days"]

_NONE = "the function returned None (is a `return` missing, or is the placeholder `...` still there?)"

_GPT_CASES = [
    dict(vocab_size=65, context=64, dim=32, layers=2),
    dict(vocab_size=50257, context=1024, dim=768, layers=12),
    dict(vocab_size=1000, context=128, dim=64, layers=1),
    dict(vocab_size=10, context=8, dim=8, layers=4),
]


def _gpt2_count(vocab_size: int, context: int, dim: int, layers: int, mistake: str | None = None) -> int:
    """GPT-2's count (tied head, biases, learned positions, final norm), or one of its usual mistakes."""
    V, T, d, L = vocab_size, context, dim, layers
    terms = {"tokens": V * d, "positions": T * d, "weights": 12 * L * d * d, "biases": 9 * L * d,
             "block norms": 4 * L * d, "final norm": 2 * d}  # fmt: skip
    if mistake == "untied head":
        return sum(terms.values()) + V * d
    if mistake == "only 12Ld²":
        return terms["weights"]
    return sum(v for k, v in terms.items() if k != mistake)


_GPT_MISTAKES = {
    "positions": "the position embeddings (T·d) seem to be missing",
    "final norm": "the final layer norm (2d) seems to be missing",
    "block norms": "the two layer norms of each block (4d per block) seem to be missing",
    "biases": "the biases of the linear layers (9d per block: 3d + d in attention, 4d + d in the feed-forward) "
    "seem to be missing",
    "untied head": "the read-out head seems to be counted with its own V·d weights, but GPT-2 reuses (ties) the "
    "token embedding",
    "only 12Ld²": "only the 12·L·d² weight matrices of the blocks seem to be counted",
    "tokens": "the token embeddings (V·d) seem to be missing",
}


def _is_int(answer: Any) -> bool:
    return (isinstance(answer, int) and not isinstance(answer, bool)) or (
        isinstance(answer, float) and answer.is_integer()
    ) or (isinstance(answer, torch.Tensor) and answer.numel() == 1 and not answer.dtype.is_floating_point)


def gpt_parameter_count(student: Callable[[int, int, int, int], int]) -> CheckResult:
    """Check ``student(vocab_size, context, dim, layers)``: the parameters of a GPT-2-style model.

    Pre-norm blocks with biases and a 4·d feed-forward, learned positions, a final
    layer norm and a head tied to the token embedding; the reference is
    :func:`companion.scale.gpt_parameters`.
    """
    name = "gpt_parameter_count"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    for number, case in enumerate(_GPT_CASES, start=1):
        args = tuple(case.values())
        where = f"case {number} ({', '.join(f'{k}={v}' for k, v in case.items())})"
        got, error = _run(student, args)
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if got is None:
            return CheckResult(name, False, f"{where}: {_NONE}")
        if not _is_int(got):
            return CheckResult(name, False, f"{where}: expected a whole number (an int), got {got!r}")
        got, expected = int(got), _gpt2_count(*args)
        if got != expected:
            mistake = next((text for key, text in _GPT_MISTAKES.items() if got == _gpt2_count(*args, key)), None)
            why = f"your count is wrong: {_how_far(expected, got)}"
            return CheckResult(name, False, f"{where}: {why}" + (f"; {mistake}." if mistake else "."))
    return CheckResult(name, True, f"{len(_GPT_CASES)} of {len(_GPT_CASES)} sizes give the exact count.")


register_hint(
    "gpt_parameter_count",
    "add up the parts: token embeddings V·d and positions T·d; per block 4d² + 4d for attention "
    "(q, k, v, output, each with a bias), d·4d + 4d + 4d·d + d for the feed-forward and 2·2d for two "
    "layer norms; 2d for the final layer norm; nothing for the tied head.",
)

_OPTIMIZERS = {"sgd": 0, "momentum": 1, "adam": 2}


def _bytes(n_params: int, optimizer: str, mixed: bool, mistake: str | None = None) -> int:
    states = _OPTIMIZERS[optimizer] * 4 * n_params
    if mistake == "one adam state" and optimizer == "adam":
        states //= 2
    low = 2 if mixed else 4
    weights, grads = low * n_params, (0 if mistake == "no gradients" else low * n_params)
    master = 4 * n_params if mixed and mistake != "no master" else 0
    if mistake == "16-bit states" and mixed:
        states //= 2
    return weights + grads + master + states


_BYTE_MISTAKES = {
    "no master": "mixed precision keeps an fp32 master copy of the weights (4 bytes each) besides the 16-bit copy",
    "no gradients": "the gradients (one per parameter) seem to be missing",
    "one adam state": "Adam keeps two numbers per parameter (m and v), not one",
    "16-bit states": "the optimizer's states stay in fp32 (4 bytes) under mixed precision",
}


def training_bytes(student: Callable[[int, str, bool], int]) -> CheckResult:
    """Check ``student(n_params, optimizer, mixed)``: bytes of weights, gradients and optimizer state.

    ``optimizer`` is ``"sgd"``, ``"momentum"`` or ``"adam"``; ``mixed`` selects
    16-bit weights and gradients plus an fp32 master copy. The reference is
    :func:`companion.scale.training_memory` (its ``"total"``).
    """
    name = "training_bytes"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    cases = [(1000, "sgd", False), (1000, "adam", False), (7_000_000_000, "adam", True), (10, "momentum", False),
             (1000, "momentum", True), (1, "sgd", True), (124_439_808, "adam", False), (0, "adam", True)]  # fmt: skip
    for number, case in enumerate(cases, start=1):
        where = f"case {number} (n_params={case[0]:,}, optimizer={case[1]!r}, mixed={case[2]})"
        got, error = _run(student, case)
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if got is None:
            return CheckResult(name, False, f"{where}: {_NONE}")
        if not _is_int(got):
            return CheckResult(name, False, f"{where}: expected a whole number of bytes (an int), got {got!r}")
        got, expected = int(got), _bytes(*case)
        if got != expected:
            matches = [text for key, text in _BYTE_MISTAKES.items() if got == _bytes(*case, key)]
            mistake = "; or ".join(matches) or None  # fp32 Adam without gradients = with one state
            why = "it is not zero" if expected == 0 else _how_far(expected, got)
            return CheckResult(name, False, f"{where}: {why}" + (f"; {mistake}." if mistake else "."))
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases give the right number of bytes.")


register_hint(
    "training_bytes",
    "count bytes per parameter: weights and gradients take 4 bytes each in fp32, 2 each in mixed "
    "precision, which adds a 4-byte fp32 master copy; the optimizer keeps 0 (SGD), 1 (momentum) or 2 "
    "(Adam) fp32 numbers. Multiply by n_params.",
)


def _reduce_cases() -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(10)
    return [
        [torch.tensor([1.0, -2.0, 3.0])],
        [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])],
        [torch.randn(2, 3, generator=gen) for _ in range(4)],
        [torch.zeros(5), torch.ones(5), torch.full((5,), -1.0)],
        [1e6 * torch.randn(4, generator=gen) for _ in range(8)],
    ]


def all_reduce_mean(student: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]]) -> CheckResult:
    """Check ``student(grads)``: the all-reduce of data-parallel training, done by hand.

    ``grads`` holds one gradient tensor per worker, all of one shape; the answer
    is one tensor per worker, each the element-wise mean of all of them (what
    ``DistributedDataParallel`` leaves in every worker's ``.grad``).
    """
    name = "all_reduce_mean"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    cases = _reduce_cases()
    for number, grads in enumerate(cases, start=1):
        workers = len(grads)
        where = f"case {number} ({workers} worker{'s' * (workers > 1)}, gradients of shape {tuple(grads[0].shape)})"
        got, error = _run(student, ([g.clone() for g in grads],))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if got is None:
            return CheckResult(name, False, f"{where}: {_NONE}")
        if isinstance(got, torch.Tensor) or not isinstance(got, (list, tuple)):
            why = f"expected a list with one tensor per worker, got {type(got).__name__}"
            return CheckResult(name, False, f"{where}: {why}")
        if len(got) != workers:
            return CheckResult(name, False, f"{where}: expected {workers} tensors (one per worker), got {len(got)}")
        mean = torch.stack(grads).mean(dim=0)
        for rank, mine in enumerate(got):
            if not isinstance(mine, torch.Tensor):
                return CheckResult(name, False, f"{where}: worker {rank} got a {type(mine).__name__}, not a tensor")
            if mine.shape != mean.shape:
                return CheckResult(name, False, f"{where}: worker {rank} got shape {tuple(mine.shape)}, "
                                   f"expected {tuple(mean.shape)} (the shape of one gradient)")  # fmt: skip
            if not torch.allclose(mine.double(), mean.double(), rtol=1e-5, atol=1e-6 * float(mean.abs().max() + 1)):
                if workers > 1 and torch.allclose(mine.double(), workers * mean.double(), rtol=1e-5, atol=1e-3):
                    why = f"it is {workers} times too large: the sum, not the mean, of the workers' gradients"
                else:
                    why = "its values differ from the mean of the workers' gradients"
                return CheckResult(name, False, f"{where}: worker {rank}'s tensor is wrong: {why}.")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference.")


register_hint(
    "all_reduce_mean",
    "add the workers' tensors element by element, divide by the number of workers, and give every "
    "worker its own copy of the result (a list as long as the input).",
)

_GPT3 = dict(n_params=175e9, tokens=300e9, gpus=1024, peak=312e12, utilization=0.4)


def training_days(answer: float) -> CheckResult:
    """Check the days GPT-3's training takes on 1,024 A100s at 40 % of their 312 TFLOP/s (bf16) peak.

    GPT-3: 175 billion parameters, 300 billion training tokens; ``6·N·D`` FLOPs.
    Within 2 %.
    """
    g = _GPT3
    expected = 6 * g["n_params"] * g["tokens"] / (g["gpus"] * g["peak"] * g["utilization"]) / 86_400
    result = value("training_days", answer, expected, rtol=0.02)
    if not result and answer is not Ellipsis:
        factor = answer / expected if isinstance(answer, (int, float)) and expected else None
        known = {24: "that is hours, not days", 0.4: "a GPU reaches only a fraction of its peak: the cluster "
                 "does GPUs × peak × utilization FLOP/s", 0.16: "the utilization divides the time, it does not "
                 "multiply it", 1024: "the work is shared by all 1,024 GPUs", 1 / 3: "training costs 6 FLOPs per "
                 "parameter and token, not 2 (forward only)"}  # fmt: skip
        for f, why in known.items():
            if factor is not None and abs(factor / f - 1) < 0.02:
                return CheckResult("training_days", False, f"{result.message} Perhaps: {why}.")
    return result


register_hint(
    "training_days",
    "FLOPs = 6 × parameters × tokens; FLOP/s of the cluster = GPUs × peak × utilization; "
    "seconds = FLOPs / (FLOP/s); days = seconds / 86,400.",
)
