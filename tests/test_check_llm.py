"""The self-checks of chapter 11: each passes a right answer, names realistic mistakes, and refuses the
package's and PyTorch's own versions where the exercise does without them."""

import torch
from torch.nn import functional as F

from bpe_reference import merge_pair as merge
from companion import autograd, check, tokenize
from companion.check.llm import _rms_backward_cases
from companion.models.base import sample_next


def encode(ids, merges):
    """GPT-2's loop: merge the adjacent pair learned first, every occurrence, until no pair is a merge."""
    rank = {tuple(pair): i for i, pair in enumerate(merges)}
    ids = list(ids)
    while len(ids) > 1:
        first = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
        if first not in rank:
            return ids
        ids = merge(ids, first, 256 + rank[first])
    return ids


def in_training_order(ids, merges):  # one pass over the merges: the same tokens for merges learned in order
    for i, pair in enumerate(merges):
        ids = merge(ids, tuple(pair), 256 + i)
    return ids


def test_bpe_encode_passes_gpt2s_loop_and_a_pass_in_training_order():
    assert check.bpe_encode(encode)
    assert check.bpe_encode(in_training_order)
    assert check.bpe_encode(lambda ids, merges: tuple(encode(ids, merges)))  # a tuple of the right ids is right
    assert not check.bpe_encode(...)


def test_bpe_encode_matches_the_courses_tokenizer_on_real_merges():
    tok = tokenize.BPETokenizer.train("the theme of these three themes " * 20, vocab_size=280, special_tokens=())
    for piece in tokenize.pre_split("the themes thereof, three"):
        assert encode(list(piece.encode()), tok.merges) == tok.encode_ordinary(piece), piece


def test_bpe_encode_names_the_realistic_mistakes():
    def leftmost(ids, merges):  # the first pair from the left that is a merge, not the one learned first
        rank = {tuple(pair): i for i, pair in enumerate(merges)}
        ids = list(ids)
        while (found := [p for p in zip(ids, ids[1:]) if p in rank]):
            ids = merge(ids, found[0], 256 + rank[found[0]])
        return ids

    def latest(ids, merges):
        rank = {tuple(pair): i for i, pair in enumerate(merges)}
        ids = list(ids)
        while (found := [p for p in zip(ids, ids[1:]) if p in rank]):
            pair = max(found, key=rank.get)
            ids = merge(ids, pair, 256 + rank[pair])
        return ids

    def once(ids, merges):
        rank = {tuple(pair): i for i, pair in enumerate(merges)}
        found = [p for p in zip(ids, ids[1:]) if p in rank]
        return merge(list(ids), min(found, key=rank.get), 256 + rank[min(found, key=rank.get)]) if found else ids

    def rank_as_id(ids, merges):
        for i, pair in enumerate(merges):
            ids = merge(ids, tuple(pair), i)
        return ids

    def from_the_right(ids, merges):
        for i, pair in enumerate(merges):
            ids = merge(ids[::-1], tuple(pair)[::-1], 256 + i)[::-1]
        return ids

    for wrong, words in [(leftmost, "leftmost"), (latest, "learned last"), (once, "only one merge"),
                         (rank_as_id, "wrong ids"), (from_the_right, "from the right")]:
        result = check.bpe_encode(wrong)
        assert not result and words in result.message, (wrong.__name__, result.message)


def test_the_chapters_own_merge_is_not_an_encoding():
    def chapter_merge(w, pair, new_id):  # book/11-llm.md's merge, as the chapter writes it
        out, i = [], 0
        while i < len(w):
            if w[i:i + 2] == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(w[i])
                i += 1
        return tuple(out)

    for pair in range(2):  # one merge of the chapter's, whichever it is, is not the encoding
        assert not check.bpe_encode(lambda ids, merges: list(chapter_merge(tuple(ids), tuple(merges[pair]), 256 + pair)))


def test_bpe_encode_refuses_the_courses_tokenizer_and_tiktoken():
    import tiktoken

    def by_the_tokenizer(ids, merges):
        return tokenize.BPETokenizer(merges, special_tokens=()).encode_ordinary(bytes(ids).decode())

    def by_a_tokenizer_of_the_notebook(ids, merges, tok=tokenize.BPETokenizer([], special_tokens=())):
        tok._ranks = {tuple(pair): 256 + i for i, pair in enumerate(merges)}
        tok._byte_ids, tok._cache = list(range(256)), {}
        return tok._encode_piece(bytes(ids).decode())

    def by_tiktoken(ids, merges):
        vocab = {i: bytes([i]) for i in range(256)}
        for i, (a, b) in enumerate(merges):
            vocab[256 + i] = vocab[a] + vocab[b]
        encoding = tiktoken.Encoding("merges", pat_str=r"[\s\S]+", mergeable_ranks={v: i for i, v in vocab.items()},
                                     special_tokens={})
        return encoding.encode_ordinary(bytes(ids).decode())

    for shortcut in (by_the_tokenizer, by_a_tokenizer_of_the_notebook, by_tiktoken):
        result = check.bpe_encode(shortcut)
        assert not result and "do without" in result.message, (shortcut.__name__, result.message)


def rms_backward(x, weight, eps, grad_y):
    r = torch.rsqrt((x * x).mean(-1, keepdim=True) + eps)
    x_hat = x * r
    g = grad_y * weight
    grad_x = r * g - x_hat * r * (g * x_hat).mean(-1, keepdim=True)
    return grad_x, (grad_y * x_hat).flatten(0, -2).sum(0)


def by_autograd(x, weight, eps, grad_y):
    leaves = [t.clone().requires_grad_() for t in (x, weight)]
    y = F.rms_norm(leaves[0], x.shape[-1:], leaves[1], eps)
    return torch.autograd.grad(y, leaves, grad_y)


def test_the_rms_norm_backward_reference_is_autograds():
    for _, case in _rms_backward_cases(torch.Generator().manual_seed(0)):
        for want, got in zip(by_autograd(*case), check.SPECS["rms_norm_backward"].reference(*case)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_rms_norm_backward_passes_a_right_answer_and_names_mistakes():
    assert check.rms_norm_backward(rms_backward)
    assert not check.rms_norm_backward(...)
    mistakes = [
        (lambda x, w, eps, g: (torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * g * w, rms_backward(x, w, eps, g)[1]),
         "constant"),
        (lambda x, w, eps, g: (rms_backward(x, torch.ones_like(w), eps, g)[0], rms_backward(x, w, eps, g)[1]),
         "leaves out weight"),
        (lambda x, w, eps, g: (rms_backward(x, w, eps, g)[0], rms_backward(x, w, eps, g)[1] * w),
         "multiplied by weight"),
        (lambda x, w, eps, g: (rms_backward(x, w, eps, g)[0], g * x * torch.rsqrt((x * x).mean(-1, True) + eps)),
         "shape of x"),
    ]
    for wrong, words in mistakes:
        result = check.rms_norm_backward(wrong)
        assert not result and words in result.message, (words, result.message)


def test_the_chapters_rms_norm_is_not_its_backward_pass():
    def rms_norm(x, weight, eps=1e-6):  # book/11-llm.md's forward pass
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    assert not check.rms_norm_backward(rms_norm)
    assert not check.rms_norm_backward(lambda x, w, eps, g: (rms_norm(x, w, eps) * g, w))


def test_rms_norm_backward_refuses_autograd_and_the_norms_backward_kernels():
    from torch.func import vjp

    def backward(x, w, eps, g):
        leaves = [t.clone().requires_grad_() for t in (x, w)]
        F.rms_norm(leaves[0], x.shape[-1:], leaves[1], eps).backward(g)
        return leaves[0].grad, leaves[1].grad

    def func_vjp(x, w, eps, g):
        _, pull = vjp(lambda a, b: a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + eps) * b, x, w)
        return pull(g)

    def kernel(x, w, eps, g):
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return torch.ops.aten._fused_rms_norm_backward(g, x, [x.shape[-1]], rstd, w, [True, True])

    def scalar_engine(x, w, eps, g):  # chapter 3's Value, one number at a time
        value = autograd.Value(float(x.flatten()[0]))
        (value * value).backward()
        return rms_backward(x, w, eps, g)

    for shortcut in (by_autograd, backward, func_vjp, kernel, scalar_engine,
                     lambda x, w, eps, g: tuple(torch.func.jacrev(lambda a: a.sum())(x) for _ in range(2))):
        result = check.rms_norm_backward(shortcut)
        assert not result and "do without" in result.message, result.message


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
