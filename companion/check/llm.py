"""Self-checks of chapter 11, large language models: one BPE merge, RMSNorm, and the nucleus of top-p
sampling."""

from __future__ import annotations

import functools

import torch

from companion.check.core import CheckSpec, define, keyed, randn

__all__ = ["bpe_merge", "nucleus", "rms_norm"]


def _merge(ids: list[int], pair: tuple[int, int], new_id: int, mistake: str = "") -> list[int]:
    if mistake == "right to left":
        return _merge(ids[::-1], pair[::-1], new_id)[::-1]
    out, i, done = [], 0, False
    while i < len(ids):
        here = tuple(ids[i : i + 2]) == tuple(pair) or mistake == "either order" and tuple(ids[i : i + 2]) == pair[::-1]
        if here and i + 1 < len(ids) and not (done and mistake == "first only"):
            out.append(new_id)
            i += 2
            done = True
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_cases(gen: torch.Generator) -> list:
    def draw(n: int, high: int) -> list[int]:
        return torch.randint(0, high, (n,), generator=gen).tolist()

    cases = [
        ([104, 105, 32, 104, 105], (104, 105), 256),
        ([97, 97, 97], (97, 97), 256),
        ([1, 2, 3], (4, 5), 300),
        ([11, 2, 1, 21, 1, 2], (1, 2), 300),
        (draw(40, 4), (1, 2), 260),
        (draw(60, 3), (0, 0), 280),
        ([7, 8, 8, 7, 7, 8], (7, 8), 270),
    ]
    return [(f"ids of length {len(ids)}, pair {pair}, new id {new}", (ids, pair, new)) for ids, pair, new in cases]


bpe_merge = define(CheckSpec(
    "bpe_merge", _merge, _merge_cases, forbidden=("companion.tokenize._merge", "tiktoken.core.Encoding.__init__"),
    mistakes=keyed(_merge, {
        "first only": "only the first occurrence is merged: a merge replaces every occurrence",
        "right to left":
            "the pairs are found from the right: scan left to right, so [a, a, a] keeps its last a on its own",
        "either order": "the pair is also merged in the other order: (b, a) is not (a, b)",
    }),
    hint="scan from the left with an index: where the pair starts at the current position, emit new_id and "
    "step over both ids, otherwise copy one id and step over one; mind the last position, and the order of "
    "the pair ([a, a, a] keeps its last a on its own).",
), doc="""Check ``student(ids, pair, new_id)``: the list of token ids with every occurrence of the adjacent
    ``pair`` (two ids, in that order) replaced by ``new_id``, scanning from the left, as one step of
    BPE training and encoding. ``ids``: a list of ints; the result: a new list of ints. The course's own
    ``companion.tokenize._merge`` raises while the function runs.""")


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float, mistake: str = "") -> torch.Tensor:
    if mistake == "centred":
        x = x - x.mean(dim=-1, keepdim=True)
    if mistake == "eps outside":
        return x / (x.pow(2).mean(dim=-1, keepdim=True).sqrt() + eps) * weight
    scale = torch.rsqrt(x.pow(2).mean(dim=0 if mistake == "dim 0" else -1, keepdim=True) + eps)
    return x * scale * (1 if mistake == "no weight" else weight)


def _rms_cases(gen: torch.Generator) -> list:
    r = functools.partial(randn, gen)
    cases = [
        (r(4, 8) + 2.0, r(8), 1e-6),
        (r(2, 5, 16, scale=3.0) - 1.0, r(16), 1e-5),
        (r(3, 6) * 1e-4, torch.ones(6, dtype=torch.float64), 1e-2),
        (r(1, 7, 32) + 0.5, r(32), 1e-6),
    ]
    return [(f"x {tuple(x.shape)}, eps={eps:g}", (x, w, eps)) for x, w, eps in cases]


rms_norm = define(CheckSpec(
    "rms_norm", _rms, _rms_cases, rtol=1e-7, atol=1e-9,
    forbidden=(*(f"torch.nn.functional.{norm}" for norm in ("rms_norm", "layer_norm", "group_norm", "instance_norm",
                                                            "batch_norm")),
               *(f"torch.{norm}" for norm in ("rms_norm", "layer_norm", "native_layer_norm", "group_norm",
                                              "instance_norm", "batch_norm")),
               "companion.attention.RMSNorm.forward", "companion.attention.LayerNorm.forward"),
    mistakes=keyed(_rms, {
        "centred": "the mean is subtracted first: that is layer norm, which RMSNorm leaves out",
        "eps outside": "eps is added after the square root, not inside it",
        "no weight": "the learned scale (weight) is not applied",
        "dim 0": "the mean runs over the first dimension: normalise each vector over its last dimension (the features)",
    }),
    hint="normalise each vector over its last dimension by its root mean square, with eps inside the square "
    "root; unlike layer norm no mean is subtracted; then apply weight. Keep the reduced dimension for "
    "broadcasting (torch.rsqrt gives one over a square root).",
), doc="""Check ``student(x, weight, eps)``: RMSNorm of every vector along the last dimension of
    ``x [..., d]`` (float64), scaled by ``weight [d]``; same shape out. PyTorch's norms (``F.rms_norm``,
    ``F.layer_norm`` and the others) and the course's ``RMSNorm`` and ``LayerNorm`` raise while the function runs.""")


def _nucleus(probs: torch.Tensor, p: float, mistake: str = "") -> torch.Tensor:
    ordered, order = probs.sort(dim=-1, descending=mistake != "ascending")
    before = ordered.cumsum(dim=-1) - (0 if mistake == "strict" else ordered)
    cut = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before >= p if mistake != "strict"
                                                            else before > p)
    kept = probs.masked_fill(cut, 0.0)
    return kept if mistake == "unnormalised" else kept / kept.sum(dim=-1, keepdim=True)


def _nucleus_cases(gen: torch.Generator) -> list:
    def dist(b: int, v: int, temperature: float) -> torch.Tensor:
        return torch.softmax(randn(gen, b, v) / temperature, dim=-1)

    cases = [
        (torch.tensor([[0.5, 0.1, 0.3, 0.1]], dtype=torch.float64), 0.7),
        (dist(3, 20, 1.0), 0.9),
        (dist(2, 50, 0.5), 0.5),
        (dist(4, 10, 2.0), 0.95),
        (dist(1, 30, 1.0), 1.0),
    ]
    return [(f"probs {tuple(q.shape)}, p={p}", (q, p)) for q, p in cases]


nucleus = define(CheckSpec(
    "nucleus", _nucleus, _nucleus_cases, rtol=1e-7, atol=1e-10,
    forbidden=("companion.models.base.sample_next", "companion.models.base.sampling_probabilities",
               "transformers.generation.logits_process.TopPLogitsWarper.__call__"),
    mistakes=keyed(_nucleus, {
        "strict":
            "the token whose probability crosses p is dropped: keep tokens until their total reaches p, that one "
            "included",
        "unnormalised": "the kept probabilities are not renormalised to sum to 1",
        "ascending": "the least likely tokens are kept: sort in descending order",
    }),
    hint="sort each row from the most likely token down; a token is kept when the probability of the tokens "
    "before it in that order is still below p (so the one that crosses p stays); zero the others, scatter "
    "back to the original order, and divide by the row's new sum.",
), doc="""Check ``student(probs, p)``: the distribution of top-p (nucleus) sampling. ``probs [B, V]`` (float64,
    rows summing to 1) and ``p`` in (0, 1] → ``[B, V]``: the smallest set of most likely tokens whose
    probabilities add up to at least ``p`` keep theirs, renormalised to sum to 1; the others get 0.""")
