"""companion.check's blocking of forbidden operations: the ways around it that a student's function might
take, and a decorated helper that must not be mistaken for a forbidden one."""

from __future__ import annotations

import threading
import types

import torch
from torch.nn import functional as F

from companion import check, lora
from companion.models import base


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def test_a_right_answer_that_calls_a_decorated_helper_of_its_own_passes():
    @torch.no_grad()
    def scale(alpha, A):
        return alpha / A.shape[0]

    def lora_forward(x, weight, bias, A, B, alpha):
        return x @ weight.T + bias + scale(alpha, A) * (x @ A.T) @ B.T

    assert check.lora_forward(lora_forward)


def test_a_forbidden_function_behind_a_decorator_is_blocked_by_its_own_body():
    def merged(x, weight, bias, A, B, alpha):
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0]).double()
        with torch.no_grad():
            layer.weight.copy_(weight), layer.bias.copy_(bias)
        adapted = lora.LoRALinear(layer, r=A.shape[0], alpha=alpha)
        with torch.no_grad():
            adapted.lora_A.copy_(A), adapted.lora_B.copy_(B)
        lora.LoRALinear.merge.__wrapped__(adapted)
        return adapted.base(x)

    result = check.lora_forward(merged)
    assert not result and "do without companion.lora.LoRALinear" in result.message


def test_a_copy_of_a_forbidden_functions_code_is_blocked():
    original = base.sampling_probabilities
    copy = types.FunctionType(original.__code__.replace(), original.__globals__, "copy", original.__defaults__)

    def nucleus(probs, p):
        return copy(probs.log(), 1.0, None, p).to(probs.dtype)

    result = check.nucleus(nucleus)
    assert not result and "do without" in result.message


def test_the_courses_own_sampling_probabilities_is_forbidden_in_the_nucleus_exercise():
    result = check.nucleus(lambda probs, p: base.sampling_probabilities(probs.log(), 1.0, None, p).to(probs.dtype))
    assert not result and "do without companion.models.base.sampling_probabilities" in result.message


def test_a_thread_cannot_run_what_the_exercise_forbids():
    def in_a_thread(x, weight, eps):
        out = {}
        worker = threading.Thread(target=lambda: out.update(y=F.rms_norm(x, x.shape[-1:], weight, eps)))
        worker.start()
        worker.join()
        return out["y"]

    result = check.rms_norm(in_a_thread)
    assert not result and "do without threading.Thread.start" in result.message


def test_switching_the_profile_hook_off_is_blocked():
    import sys

    from companion import tokenize

    def unhooked(ids, pair, new_id):
        sys.setprofile(None)
        return tokenize._merge(ids, pair, new_id)

    result = check.bpe_merge(unhooked)
    assert not result and "do without sys.setprofile" in result.message
    assert sys.getprofile() is None  # the caller's hook (none here) is back


def test_an_output_that_computes_its_value_later_is_computed_under_the_block():
    class Lazy(list):
        def __init__(self, compute):
            super().__init__()
            self.compute = compute

        def __iter__(self):
            return iter(self.compute())

        def __len__(self):
            return len(self.compute())

    def lazy_merge(ids, pair, new_id):
        from companion import tokenize

        return Lazy(lambda: list(tokenize._merge(tuple(ids), tuple(pair), new_id)))

    assert not check.bpe_merge(lazy_merge)


def test_other_norms_of_a_mirrored_input_cannot_stand_in_for_rms_norm():
    def mirrored(norm):  # [x, -x] has mean 0, so any mean-removing norm of it divides by the RMS
        def student(x, weight, eps):
            both = torch.cat([x, -x], dim=-1)
            return norm(both, eps)[..., : x.shape[-1]] * weight

        return student

    norms = [
        lambda z, eps: torch.layer_norm(z, z.shape[-1:], eps=eps),
        lambda z, eps: F.group_norm(z.reshape(-1, 1, z.shape[-1]), 1, eps=eps).reshape(z.shape),
    ]
    for norm in norms:
        result = check.rms_norm(mirrored(norm))
        assert not result and "do without" in result.message
    assert check.rms_norm(_rms)


def test_the_lora_layers_own_update_is_forbidden_in_the_lora_exercise():
    def through_delta_weight(x, weight, bias, A, B, alpha):
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0]).double()
        adapted = lora.LoRALinear(layer, r=A.shape[0], alpha=alpha)
        with torch.no_grad():
            adapted.lora_A.copy_(A), adapted.lora_B.copy_(B)
        return F.linear(x, weight + adapted.delta_weight(), bias)

    result = check.lora_forward(through_delta_weight)
    assert not result and "do without companion.lora.LoRALinear.delta_weight" in result.message


def test_a_tiktoken_encoding_cannot_do_the_merge():
    import tiktoken

    def with_tiktoken(ids, pair, new_id):
        ranks = {bytes([i]): i for i in range(256)} | {bytes(pair): new_id}
        encoding = tiktoken.Encoding("one merge", pat_str=r"[\s\S]+", mergeable_ranks=ranks, special_tokens={})
        return encoding._encode_single_piece(bytes(ids))

    result = check.bpe_merge(with_tiktoken)
    assert not result and "do without tiktoken.core.Encoding.__init__" in result.message
