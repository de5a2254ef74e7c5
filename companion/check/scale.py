"""Self-checks of chapter 10, from small to large models: parameters, memory, all-reduce, compute."""

from __future__ import annotations

from typing import Any

import torch

from companion import distributed
from companion.check.core import NONE_MESSAGE, CheckSpec, Wrong, define, keyed, plural

__all__ = ["gpt_parameter_count", "ring_chunk", "training_bytes", "training_days"]


def _gpt_count(V: int, T: int, d: int, L: int, bias: bool, tied: bool, mistake: str = "") -> int:
    """The parameters of a GPT-2-style model with vocabulary V, context T, width d and L blocks, by part:
    with or without biases (a layer norm without them keeps its scale), its head tied or its own."""
    bias = bias or mistake == "bias ignored"
    norm = 2 * d if bias or mistake == "norm shifts kept" else d
    terms = {"tokens": V * d, "positions": T * d, "weights": 12 * L * d * d, "biases": 9 * L * d if bias else 0,
             "block norms": 2 * L * norm, "final norm": norm, "head": 0 if tied else V * d}  # fmt: skip
    if mistake == "norms dropped" and not bias:
        terms["block norms"] = terms["final norm"] = 0
    elif mistake == "untied head":
        terms["head"] = V * d
    elif mistake == "no head":
        terms["head"] = 0
    elif mistake == "head bias" and not tied:
        terms["head"] += V
    return terms["weights"] if mistake == "only 12Ld²" else sum(v for k, v in terms.items() if k != mistake)


_GPT_MISTAKES = {
    "positions": "the position embeddings (T·d) seem to be missing",
    "final norm": "the final layer norm seems to be missing",
    "block norms": "the two layer norms of each block seem to be missing",
    "biases": "the biases of the linear layers (9d per block: 3d + d in attention, 4d + d in the feed-forward) "
    "seem to be missing",
    "untied head": "a tied head seems to be counted with V·d weights of its own, but it reuses the token "
    "embedding",
    "no head": "an untied head has V·d weights of its own, and they seem to be missing",
    "head bias": "the untied head seems to be counted with a bias; it has none",
    "bias ignored": "without biases, the linear layers' biases and the layer norms' shifts seem to be counted "
    "all the same",
    "norms dropped": "without biases the layer norms seem to be left out, but they keep their scale (d each)",
    "norm shifts kept": "without biases the layer norms seem to keep their shifts; they keep only their scale",
    "only 12Ld²": "only the 12·L·d² weight matrices of the blocks seem to be counted",
    "tokens": "the token embeddings (V·d) seem to be missing",
}
_GPT_SIZES = [(65, 64, 32, 2, True, True), (50257, 1024, 768, 12, True, True), (1000, 128, 64, 1, False, False),
              (10, 8, 8, 4, True, False), (500, 32, 16, 3, False, True), (32000, 2048, 512, 6, False, False)]
gpt_parameter_count = define(CheckSpec(
    "gpt_parameter_count", _gpt_count, mistakes=keyed(_gpt_count, _GPT_MISTAKES), rtol=0, atol=0,
    forbidden=("companion.scale.gpt_parameters", "companion.scale.gpt_parameter_counts",
               "companion.scale._block_counts"),
    passed=f"{len(_GPT_SIZES)} of {len(_GPT_SIZES)} models give the exact count.",
    cases=lambda gen: [(f"vocab_size={V}, context={T}, dim={d}, layers={L}, bias={b}, tied={t}", (V, T, d, L, b, t))
                       for V, T, d, L, b, t in _GPT_SIZES],
    hint="follow a token through the model: which tables does it look up, which matrices (what shapes?) and "
    "biases does one block hold, which vectors does a layer norm keep, and which of them are biases? Count one "
    "block and multiply; then ask what a tied head adds, and what a head of its own does.",
), doc="""Check ``student(vocab_size, context, dim, layers, bias, tied) -> int``: the parameters of a GPT-2-style
    model (pre-norm blocks with a 4·d feed-forward, learned positions, a final layer norm); ``bias`` False
    takes every bias out (a layer norm then keeps only its scale), ``tied`` False gives the read-out head
    weights of its own and no bias. The course's own count raises while the function runs.""")


def _bytes(n_params: int, optimizer: str, mixed: bool, mistake: str = "") -> int:
    states = {"sgd": 0, "momentum": 1, "adam": 2}[optimizer] * 4 * n_params  # fp32 states per parameter
    if mistake == "one adam state" and optimizer == "adam" or mistake == "16-bit states" and mixed:
        states //= 2
    low = 2 if mixed else 4
    master = 4 * n_params if mixed and mistake != "no master" else 0
    return low * n_params + (0 if mistake == "no gradients" else low * n_params) + master + states


_BYTE_MISTAKES = {
    "no master": "mixed precision keeps an fp32 master copy of the weights (4 bytes each) besides the 16-bit copy",
    "no gradients": "the gradients (one per parameter) seem to be missing",
    "one adam state": "Adam keeps two numbers per parameter (m and v), not one",
    "16-bit states": "the optimizer's states stay in fp32 (4 bytes) under mixed precision",
}
training_bytes = define(CheckSpec(
    "training_bytes", _bytes, mistakes=keyed(_bytes, _BYTE_MISTAKES), rtol=0, atol=0,
    forbidden=("companion.scale.training_memory", "companion.scale.measured_training_memory"),
    cases=lambda gen: [(f"n_params={n:,}, optimizer={o!r}, mixed={m}", (n, o, m)) for n, o, m in [
        (1000, "sgd", False), (1000, "adam", False), (7_000_000_000, "adam", True), (10, "momentum", False),
        (1000, "momentum", True), (1, "sgd", True), (124_439_808, "adam", False), (0, "adam", True)]],
    hint="count bytes per parameter, then multiply by n_params: the weights and the gradients (how many bytes "
    "each in fp32, and in 16 bits?), the fp32 master copy that mixed precision keeps, and the optimizer's "
    "states, which stay in fp32 (how many numbers per parameter do SGD, momentum and Adam keep?).",
), doc="""Check ``student(n_params, optimizer, mixed) -> int``: the bytes of weights, gradients and optimizer
    state in training; ``optimizer`` is ``"sgd"``, ``"momentum"`` or ``"adam"``, and ``mixed`` selects mixed
    precision. The course's own ``scale.training_memory`` raises while the function runs.""")


def _ring_table(workers: int) -> list[list[int]]:
    return [[distributed.ring_chunk(w, s, workers) for s in range(2 * (workers - 1))] for w in range(workers)]


def _ring_counts(case: tuple, table: Any) -> torch.Tensor:
    """The ring run with the schedule ``table[worker][step]`` on workers whose tensors mark their own part:
    ``[W, W, W]``, how often worker j's gradient is in worker w's chunk c. Wrong unless every count is one."""
    (workers,) = case
    if not isinstance(table, (list, tuple)) or len(table) != workers:
        raise Wrong("the schedule's answers could not be read")
    marks = [torch.zeros(workers, workers, dtype=torch.float64).index_fill_(1, torch.tensor([j]), 1.0)
             for j in range(workers)]  # fmt: skip
    if any(chunk is None for row in table for chunk in row):
        raise Wrong(NONE_MESSAGE)
    try:
        reduced, _ = distributed.ring_all_reduce(marks, lambda w, s, n: table[w][s])
    except (TypeError, ValueError) as err:
        raise Wrong(str(err).replace("the schedule must give", "the function must return")) from None
    counts = torch.stack(reduced)
    wrong = (counts != 1).any(-1).nonzero().tolist()  # [worker, chunk] pairs
    if wrong:
        w, c = wrong[0]
        twice = [j for j in range(workers) if counts[w, c, j] > 1]
        lacks = [j for j in range(workers) if counts[w, c, j] == 0]
        told = [f"counts the gradient of {_workers(twice)} more than once" if twice else "",
                f"lacks the gradient of {_workers(lacks)}" if lacks else ""]
        raise Wrong(f"after the all-reduce, worker {w}'s chunk {c} {' and '.join(filter(None, told))}")
    return counts


def _workers(numbers: list[int]) -> str:
    """``"worker 2"``, ``"workers 0, 1 and 3"``."""
    listed = ", ".join(map(str, numbers[:-1])) + " and " * (len(numbers) > 1) + str(numbers[-1])
    return f"worker{'s' * (len(numbers) > 1)} {listed}"


ring_chunk = define(CheckSpec(
    "ring_chunk", _ring_table, rtol=0, atol=0, view=_ring_counts,
    apply=lambda student, workers: [[student(w, s, workers) for s in range(2 * (workers - 1))]
                                    for w in range(workers)],
    forbidden=("companion.distributed.ring_chunk", "companion.distributed.ring_all_reduce"),
    cases=lambda gen: [(f"{plural(n, 'worker')}", (n,)) for n in (2, 3, 4, 5, 8)],
    passed="5 of 5 rings (2 to 8 workers) leave every worker with every chunk summed over all workers.",
    hint="follow one chunk round the ring. At step 0 every worker sends a different chunk; at the next step, "
    "which chunk does a worker hold that has more than its own part in it? After how many steps has a chunk "
    "passed every worker, and where is it then, complete, to start its second round?",
), "student", doc="""Check ``student(worker, step, workers) -> int``: the chunk (0 to ``workers`` − 1) that
    ``worker`` sends to the next worker of the ring (the last one's next is worker 0) at ``step`` of a ring
    all-reduce, for steps 0 to 2·(``workers`` − 1) − 1: in the first ``workers`` − 1 the receiver adds what
    arrives to its copy, in the rest it replaces its copy. The check runs the ring with that schedule and counts whose gradients each
    worker's chunks hold; the course's ``distributed.ring_chunk`` raises while the function runs.""")


def _days(factor: float = 1.0) -> float:
    return factor * 6 * 175e9 * 300e9 / (1024 * 312e12 * 0.4) / 86_400


training_days = define(CheckSpec(
    "training_days", _days, answers=1, rtol=0.02, passed="correct.",
    mistakes={
        "that is hours, not days": lambda: _days(24),
        "a GPU reaches only a fraction of its peak: the cluster does GPUs × peak × utilization FLOP/s":
            lambda: _days(0.4),
        "the utilization divides the time, it does not multiply it": lambda: _days(0.16),
        "the work is shared by all 1,024 GPUs": lambda: _days(1024),
        "training costs 6 FLOPs per parameter and token, not 2 (forward only)": lambda: _days(1 / 3),
    },
    hint="how many FLOPs does one training token cost a model of N parameters (forward and backward), and "
    "how many FLOPs per second does the cluster really deliver? Work in seconds first.",
), "answer", doc="""Check the days GPT-3's training takes on 1,024 A100s at 40 % of their 312 TFLOP/s (bf16) peak:
    175 billion parameters, 300 billion training tokens; within 2 %.""")


