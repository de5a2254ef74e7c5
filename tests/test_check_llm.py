"""The self-checks of chapter 11: each passes a right answer, names realistic mistakes, and refuses the
package's and PyTorch's own versions where the exercise does without them."""

import torch
from torch import nn
from torch.nn import functional as F

from bpe_reference import merge_pair as merge
from companion import attention, check, tokenize
from companion.models.base import sample_next


def test_bpe_merge():
    assert check.bpe_merge(merge)
    assert not check.bpe_merge(...)

    def first_only(ids, pair, new_id):
        for i in range(len(ids) - 1):
            if (ids[i], ids[i + 1]) == tuple(pair):
                return ids[:i] + [new_id] + ids[i + 2:]
        return list(ids)

    result = check.bpe_merge(first_only)
    assert not result and "first occurrence" in result.message

    def from_the_right(ids, pair, new_id):
        return merge(ids[::-1], pair[::-1], new_id)[::-1]

    result = check.bpe_merge(from_the_right)
    assert not result and "from the right" in result.message

    def by_replace(ids, pair, new_id):  # a string replace merges across token boundaries: "1 2" in "11 2"
        text = " ".join(map(str, ids)).replace(f"{pair[0]} {pair[1]}", str(new_id))
        return [int(t) for t in text.split()]

    assert not check.bpe_merge(by_replace)
    result = check.bpe_merge(lambda ids, pair, new_id: tokenize._merge(ids, pair, new_id))
    assert not result and "do without" in result.message


def rms(x, weight, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def test_rms_norm():
    assert check.rms_norm(rms)
    assert not check.rms_norm(...)
    layer = check.rms_norm(lambda x, w, eps: F.layer_norm(x, x.shape[-1:], eps=eps) * w)
    assert not layer and "do without" in layer.message
    centred = check.rms_norm(lambda x, w, eps: rms(x - x.mean(-1, keepdim=True), w, eps))
    assert not centred and "layer norm" in centred.message
    outside = check.rms_norm(lambda x, w, eps: x / ((x * x).mean(-1, keepdim=True).sqrt() + eps) * w)
    assert not outside and "after the square root" in outside.message
    unscaled = check.rms_norm(lambda x, w, eps: rms(x, 1.0, eps))
    assert not unscaled and "weight" in unscaled.message
    for shortcut in (lambda x, w, eps: F.rms_norm(x, x.shape[-1:], w, eps),
                     lambda x, w, eps: nn.RMSNorm(x.shape[-1], eps=eps, dtype=x.dtype)(x) * w,
                     lambda x, w, eps: attention.RMSNorm(x.shape[-1], eps).double()(x) * w):
        result = check.rms_norm(shortcut)
        assert not result and "do without" in result.message


def nucleus(probs, p):
    ordered, order = probs.sort(-1, descending=True)
    keep = ordered.cumsum(-1) - ordered < p
    kept = torch.zeros_like(probs).scatter(-1, order, ordered * keep)
    return kept / kept.sum(-1, keepdim=True)


def test_nucleus():
    assert check.nucleus(nucleus)
    assert not check.nucleus(...)

    def strict(probs, p):
        ordered, order = probs.sort(-1, descending=True)
        kept = torch.zeros_like(probs).scatter(-1, order, ordered * (ordered.cumsum(-1) <= p))
        return kept / kept.sum(-1, keepdim=True)

    result = check.nucleus(strict)
    assert not result and "crosses p" in result.message
    result = check.nucleus(lambda probs, p: nucleus(probs, p) * (probs * (nucleus(probs, p) > 0)).sum(-1, True))
    assert not result and "renormalised" in result.message

    def sampled(probs, p):  # the package's sampler, drawn many times
        draws = sample_next(probs.log(), 1.0, None, torch.Generator().manual_seed(0), p)
        return torch.zeros_like(probs).scatter(-1, draws, 1.0)

    result = check.nucleus(sampled)
    assert not result and "do without" in result.message
