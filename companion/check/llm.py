"""Self-checks of chapter 11, large language models: GPT-2's encoding of one piece with learned BPE merges,
the backward pass of RMSNorm, and the nucleus of top-p sampling."""

from __future__ import annotations

from collections import Counter

import torch
from companion.check.core import CheckSpec, aten, define, keyed, plural, randn, sampler
from companion.check.learning import AUTOGRAD_FORBIDDEN

__all__ = ["bpe_encode", "nucleus", "rms_norm_backward"]


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """``ids`` with every occurrence of ``pair``, left to right and without overlap, replaced by ``new_id``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _encode(ids: list[int], merges: list[tuple[int, int]], mistake: str = "") -> list[int]:
    token = {tuple(pair): i + (0 if mistake == "ids" else 256) for i, pair in enumerate(merges)}
    ids, backwards = list(ids), mistake == "right to left"
    while len(ids) > 1:
        present = [pair for pair in zip(ids, ids[1:]) if pair in token]
        if not present:
            break
        pair = {"leftmost": present[0], "latest": max(present, key=token.__getitem__)}.get(
            mistake, min(present, key=token.__getitem__))
        ids = _merge(ids[::-1], pair[::-1], token[pair])[::-1] if backwards else _merge(ids, pair, token[pair])
        if mistake == "once":
            break
    return ids


def _learned(ids: list[int], n: int) -> list[tuple[int, int]]:
    """Up to ``n`` merges learned on one sequence: the most frequent adjacent pair, again and again."""
    merges: list[tuple[int, int]] = []
    for new_id in range(256, 256 + n):
        counts = Counter(zip(ids, ids[1:]))
        if not counts or max(counts.values()) < 2:
            break
        best = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        merges.append(best)
        ids = _merge(ids, best, new_id)
    return merges


def _encode_cases(gen: torch.Generator) -> list:
    def draw(n: int) -> list[int]:  # a random text over the letters a, b, c, d
        return (97 + torch.randint(0, 4, (n,), generator=gen)).tolist()

    learned = _learned(draw(400), 14)
    cases = [
        (list(b"lower"), [(108, 111), (256, 119), (101, 114), (257, 258)]),
        (list(b"abc"), [(98, 99), (97, 98)]),  # the pair on the right was learned first
        (list(b"bcbbc"), [(99, 98), (98, 99), (98, 98)]),  # leftmost, first and last learned: three pairs
        (list(b"aaaaa"), [(97, 97), (256, 256)]),
        ([1, 2, 3], [(4, 5)]),
        ([120], [(120, 120)]),
        (draw(30), learned),
        (draw(80), learned),
    ]
    return [(f"a piece of {plural(len(ids), 'byte')}, {plural(len(merges), 'merge')}", (ids, merges))
            for ids, merges in cases]


bpe_encode = define(CheckSpec(
    "bpe_encode", _encode, _encode_cases,
    forbidden=(*(f"companion.tokenize.BPETokenizer.{name}" for name in ("__init__", "_encode_piece",
                                                                         "encode_ordinary", "encode")),
               *(f"tiktoken.core.Encoding.{name}" for name in ("__init__", "encode", "encode_ordinary",
                                                               "_encode_single_piece", "_encode_bytes")),
               "tiktoken._educational.bpe_encode", "tiktoken._educational.SimpleBytePairEncoding.encode",
               *(f"tiktoken._tiktoken.CoreBPE.{name}" for name in ("encode", "encode_ordinary", "encode_single_piece",
                                                                   "_encode_bytes", "encode_with_unstable"))),
    mistakes=keyed(_encode, {
        "leftmost": "the leftmost pair that is a merge is merged first: the pair learned first goes first, "
        "wherever it stands",
        "latest": "the pair learned last is merged first: GPT-2 merges the pair learned first",
        "once": "only one merge is applied: repeat until no adjacent pair is a merge",
        "ids": "the merged tokens have the wrong ids: see which id each merge makes",
        "right to left": "the occurrences of a pair are found from the right: scan left to right, so five equal "
        "bytes keep their last one on its own",
    }),
    hint="work \"lowly\" through by hand with the example's two merges first. Then two questions shape the code: "
    "how can you tell, for any pair, whether it is a merge, which token it makes and when it was learned, without "
    "searching the list each time (the token's number says more than it seems); and what tells the loop to stop? "
    "Pairs are tuples of two ints.",
), doc="""Check ``student(ids, merges)``: the tokens of one pre-split piece under GPT-2's encoding. ``ids``: the
    piece's bytes (a list of ints); ``merges``: the learned pairs in training order, merge ``i`` making token
    ``256 + i``. The result, a list of ints, is what is left when no adjacent pair is a merge any more, the
    pair learned first merged first each time, each of its occurrences from the left. The course's tokenizer
    (``companion.tokenize.BPETokenizer``) and ``tiktoken``'s encodings raise while the function runs.""")


def _rms_backward(x: torch.Tensor, weight: torch.Tensor, eps: float, grad_y: torch.Tensor,
                  mistake: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    x_hat = x * r
    g = grad_y * (1.0 if mistake == "no weight" else weight)
    grad_weight = (grad_y * x_hat * (weight if mistake == "weight twice" else 1.0)).reshape(-1, x.shape[-1]).sum(0)
    if mistake == "scale constant":
        return r * g, grad_weight
    inner = (g * x_hat).sum(-1, keepdim=True) if mistake == "sum" else (g * x_hat).mean(-1, keepdim=True)
    centre = g.mean(-1, keepdim=True) if mistake == "centred" else 0.0
    return r * (g - centre - x_hat * inner), grad_weight


def _rms_backward_cases(gen: torch.Generator) -> list:
    r = sampler(gen)
    cases = [
        (r(4, 8) + 2.0, r(8), 1e-6, r(4, 8)),
        (r(2, 5, 16, scale=3.0) - 1.0, r(16), 1e-5, r(2, 5, 16)),
        (r(3, 6) * 1e-2, torch.ones(6, dtype=torch.float64), 1e-2, r(3, 6)),
        (r(1, 7, 32) + 0.5, r(32), 1e-6, r(1, 7, 32)),
    ]
    return [(f"x {tuple(x.shape)}, eps={eps:g}", (x, w, eps, g)) for x, w, eps, g in cases]


def _weight_shape(case: tuple, expected: tuple, got: tuple) -> str:
    x = case[0]
    if x.dim() > 1 and getattr(got[1], "shape", None) == x.shape:
        return ("grad_weight has the shape of x: one weight scales the same feature at every position, so its "
                "gradient gathers all of them.")
    return ""


rms_norm_backward = define(CheckSpec(
    "rms_norm_backward", _rms_backward, _rms_backward_cases, labels=("grad_x", "grad_weight"),
    diagnose=_weight_shape, rtol=1e-7, atol=1e-9,
    forbidden=(*AUTOGRAD_FORBIDDEN,
               *aten("_fused_rms_norm_backward", "native_layer_norm_backward", "native_group_norm_backward")),
    mistakes=keyed(_rms_backward, {
        "scale constant": "the normalising scale is treated as a constant: it depends on every entry of the "
        "vector, which gives grad_x a second term",
        "no weight": "grad_x leaves out weight, through which y depends on the normalised x",
        "weight twice": "grad_weight is multiplied by weight: y's derivative with respect to weight is the "
        "normalised x alone",
        "sum": "the second term of grad_x sums over the features where the root mean square takes their mean",
        "centred": "grad_x has layer norm's term for the subtracted mean, which RMSNorm does not subtract",
    }),
    hint="write y as the normalised x times weight, and the normalised x as x times a scale that depends on the "
    "whole vector through its mean of squares. The chain rule gives grad_x two terms: one with the scale held "
    "fixed, one through the scale (differentiate the mean of squares). grad_weight collects grad_y times the "
    "normalised x over every position, since one weight serves them all. Keep the reduced dimension for "
    "broadcasting.",
), doc="""Check ``student(x, weight, eps, grad_y) -> (grad_x, grad_weight)``: the backward pass of RMSNorm.
    ``y`` is the RMSNorm of every vector along the last dimension of ``x [..., d]`` (float64), scaled by
    ``weight [d]``, with ``eps`` inside the root; ``grad_y`` is ∂L/∂y, of the shape of ``x``. Each gradient has
    the shape of its variable. Autograd (``backward``, ``torch.autograd.grad``, ``torch.func``) and PyTorch's
    own backward kernels of the norms raise while the function runs.""")


def _nucleus(probs: torch.Tensor, p: float, mistake: str = "") -> torch.Tensor:
    ordered, order = probs.sort(dim=-1, descending=mistake != "ascending")
    before = ordered.cumsum(dim=-1) - (0 if mistake == "strict" else ordered)
    drop = before > p if mistake == "strict" else before >= p
    cut = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, drop)
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
        "strict": "the token whose probability crosses p is dropped: keep tokens until their total reaches p, that "
        "one included",
        "unnormalised": "the kept probabilities are not renormalised to sum to 1",
        "ascending": "the least likely tokens are kept: sort in descending order",
    }),
    hint="think in the order of probability, most likely first: for each token, how much probability lies in "
    "the tokens ranked above it, and what does comparing that with p say about whether the token is still "
    "needed? Then bring the answer back to the tokens' own order.",
), doc="""Check ``student(probs, p)``: the distribution of top-p (nucleus) sampling. ``probs [B, V]`` (float64,
    rows summing to 1) and ``p`` in (0, 1] → ``[B, V]``: the smallest set of most likely tokens whose
    probabilities add up to at least ``p`` keep theirs, renormalised to sum to 1; the others get 0.""")
