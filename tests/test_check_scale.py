"""The self-checks of chapter 10: each passes the reference and explains realistic wrong answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from companion import check, scale
from companion.check import scale as checks


def gpt(vocab_size, context, dim, layers, bias, tied):
    V, T, d, L = vocab_size, context, dim, layers
    norm = 2 * d if bias else d
    block = 12 * d * d + (9 * d if bias else 0) + 2 * norm
    return V * d + T * d + L * block + norm + (0 if tied else V * d)


def built(V, T, d, L, bias, tied):
    """The parameters PyTorch counts in a GPT-2-shaped stack of torch.nn parts."""
    net = nn.ModuleDict({"tokens": nn.Embedding(V, d), "positions": nn.Embedding(T, d),
                         "norm": nn.LayerNorm(d, bias=bias), "head": nn.Linear(d, V, bias=False)})  # fmt: skip
    net["blocks"] = nn.ModuleList(
        nn.TransformerEncoderLayer(d, 2, 4 * d, norm_first=True, bias=bias) for _ in range(L))
    if tied:
        net["head"].weight = net["tokens"].weight
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(("bias", "tied"), [(True, True), (True, False), (False, True), (False, False)])
def test_the_checks_count_is_what_pytorch_counts_in_a_built_model(bias, tied):
    for V, T, d, L in [(65, 64, 32, 2), (1000, 128, 64, 1), (10, 8, 8, 3)]:
        assert check.SPECS["gpt_parameter_count"].reference(V, T, d, L, bias, tied) == built(V, T, d, L, bias, tied)
        assert gpt(V, T, d, L, bias, tied) == built(V, T, d, L, bias, tied)


def test_gpt_parameter_count_passes_the_reference():
    assert check.gpt_parameter_count(gpt)
    assert check.gpt_parameter_count(lambda *sizes: float(gpt(*sizes)))  # 1.0e8 as a float is fine
    assert gpt(50257, 1024, 768, 12, True, True) == 124_439_808  # GPT-2 small


def expected_counts():
    return [gpt(*case) for _, case in check.SPECS["gpt_parameter_count"].cases(torch.Generator())]


def assert_fails_without_answers(result, *phrases):
    assert not result
    for phrase in phrases:
        assert phrase in result.message, result.message
    for number in expected_counts():
        assert str(number) not in result.message.replace(",", "") and f"{number:,}" not in result.message


def test_gpt_parameter_count_names_usual_mistakes():
    assert_fails_without_answers(check.gpt_parameter_count(lambda V, T, d, L, b, t: 12 * L * d * d + V * d), "case 1")
    no_positions = check.gpt_parameter_count(lambda V, T, d, L, b, t: gpt(V, T, d, L, b, t) - T * d)
    assert_fails_without_answers(no_positions, "position embeddings")
    always_own_head = check.gpt_parameter_count(lambda V, T, d, L, b, t: gpt(V, T, d, L, b, False))
    assert_fails_without_answers(always_own_head, "reuses the token embedding")
    never_own_head = check.gpt_parameter_count(lambda V, T, d, L, b, t: gpt(V, T, d, L, b, True))
    assert_fails_without_answers(never_own_head, "case 3", "untied head has V·d weights of its own")
    head_bias = check.gpt_parameter_count(lambda V, T, d, L, b, t: gpt(V, T, d, L, b, t) + V * (not t))
    assert_fails_without_answers(head_bias, "counted with a bias")
    no_final = check.gpt_parameter_count(lambda V, T, d, L, b, t: gpt(V, T, d, L, b, t) - (2 * d if b else d))
    assert_fails_without_answers(no_final, "final layer norm")
    no_bias = check.gpt_parameter_count(lambda V, T, d, L, b, t: gpt(V, T, d, L, b, t) - 9 * L * d * b)
    assert_fails_without_answers(no_bias, "biases of the linear layers")
    bias_ignored = check.gpt_parameter_count(lambda V, T, d, L, b, t: gpt(V, T, d, L, True, t))
    assert_fails_without_answers(bias_ignored, "case 3", "counted all the same")
    no_norms = check.gpt_parameter_count(lambda V, T, d, L, b, t: gpt(V, T, d, L, b, t) - (0 if b else (2 * L + 1) * d))
    assert_fails_without_answers(no_norms, "keep their scale")
    shifts = check.gpt_parameter_count(lambda V, T, d, L, b, t: gpt(V, T, d, L, b, t) + (0 if b else (2 * L + 1) * d))
    assert_fails_without_answers(shifts, "keep only their scale")
    rule = check.gpt_parameter_count(lambda V, T, d, L, b, t: 12 * L * d * d)
    assert_fails_without_answers(rule, "only the 12·L·d²")


def test_gpt_parameter_count_reports_errors_and_types():
    assert_fails_without_answers(check.gpt_parameter_count(lambda V, T, d, L, b, t: 1 / 0), "ZeroDivisionError")
    many = check.gpt_parameter_count(lambda V, T, d, L, b, t: "many")
    assert_fails_without_answers(many, "expected a number, got a string")
    assert_fails_without_answers(check.gpt_parameter_count(lambda V, T, d, L, b, t: None), "returned None")
    four = check.gpt_parameter_count(lambda V, T, d, L: 1)
    assert_fails_without_answers(four, "TypeError")
    assert "returned None" in check.training_bytes(lambda n, o, m: None).message
    assert not check.gpt_parameter_count(...) and "placeholder" in check.gpt_parameter_count(...).message


def reference_bytes(n, optimizer, mixed):
    per_parameter = (2 + 2 + 4 if mixed else 4 + 4) + 4 * {"sgd": 0, "momentum": 1, "adam": 2}[optimizer]
    return per_parameter * n


def test_the_courses_own_counts_are_off_limits():
    assert reference_bytes(1000, "adam", True) == scale.training_memory(1000, "adam", "mixed")["total"]
    assert gpt(65, 64, 32, 2, False, False) == scale.gpt_parameters(
        vocab_size=65, context=64, dim=32, layers=2, bias=False, tied_head=False)
    count = check.gpt_parameter_count(lambda V, T, d, L, b, t: scale.gpt_parameters(
        vocab_size=V, context=T, dim=d, layers=L, bias=b, tied_head=t))
    assert not count and "do without companion.scale.gpt_parameters" in count.message
    memory = check.training_bytes(lambda n, o, m, f=scale.training_memory: f(n, o, "mixed" if m else "fp32")["total"])
    assert not memory and "do without companion.scale.training_memory" in memory.message


def test_training_bytes_names_the_one_mistake_that_fits_every_case():
    no_gradients = check.training_bytes(lambda n, o, m: reference_bytes(n, o, m) - (2 if m else 4) * n)
    assert not no_gradients and "gradients (one per parameter) seem to be missing" in no_gradients.message
    assert "; or" not in no_gradients.message and "two numbers" not in no_gradients.message


def test_training_bytes():
    assert check.training_bytes(reference_bytes)
    per = {"sgd": 0, "momentum": 1, "adam": 2}
    no_master = check.training_bytes(lambda n, o, m: (4 if m else 8) * n + 4 * per[o] * n)
    assert not no_master and "master copy" in no_master.message
    one_state = check.training_bytes(lambda n, o, m: reference_bytes(n, o, m) - (4 * n if o == "adam" else 0))
    assert not one_state and "two numbers" in one_state.message and "case 2" in one_state.message
    sixteen = check.training_bytes(lambda n, o, m: 16 * n)
    assert not sixteen and "case 1" in sixteen.message and "2 times too large" in sixteen.message
    assert "8000" not in sixteen.message and "8,000" not in sixteen.message
    floats = check.training_bytes(lambda n, o, m: reference_bytes(n, o, m) / 3)
    assert not floats and "whole number" in floats.message or "too small" in floats.message


def test_ring_chunk_passes_every_ring_schedule_and_only_those():
    assert check.ring_chunk(lambda worker, step, workers: (worker - step) % workers)
    assert check.ring_chunk(lambda worker, step, workers: (worker - step + 3) % workers)  # another start
    assert check.ring_chunk(lambda w, s, n: int(torch.tensor((w - s) % n)))
    backwards = check.ring_chunk(lambda w, s, n: (w + s) % n)  # sends on what it sent, not what it got
    assert not backwards and "case 2 (3 workers)" in backwards.message and "lacks the gradient of worker" in backwards.message
    own = check.ring_chunk(lambda w, s, n: w)
    assert not own and "worker 0's chunk 0 lacks the gradient of worker 1" in own.message
    second_round_wrong = check.ring_chunk(lambda w, s, n: (w - s) % n if s < n - 1 else w)
    assert not second_round_wrong and "after the all-reduce" in second_round_wrong.message


def test_ring_chunk_counts_a_chunk_added_twice():
    table = {2: [[1, 0], [0, 1]], 3: [[0, 0, 0, 0], [0, 0, 0, 0], [1, 2, 0, 1]]}
    twice = check.ring_chunk(lambda w, s, n: table[n][w][s] if n in table else (w - s) % n)
    assert not twice and "case 2 (3 workers)" in twice.message, twice.message
    assert "worker 0's chunk 0 counts the gradient of worker 1 more than once" in twice.message


def test_ring_chunk_says_what_a_schedule_must_return():
    assert "returned None" in check.ring_chunk(lambda w, s, n: None).message
    floats = check.ring_chunk(lambda w, s, n: float((w - s) % n))
    assert not floats and "must return an int chunk" in floats.message and "float" in floats.message
    beyond = check.ring_chunk(lambda w, s, n: w + s)
    assert not beyond and "chunks are 0 to 1" in beyond.message
    raises = check.ring_chunk(lambda w, s, n: [0][s])
    assert not raises and "IndexError" in raises.message


def test_training_days():
    days = 6 * 175e9 * 300e9 / (1024 * 312e12 * 0.4) / 86_400
    assert check.training_days(days) and check.training_days(round(days, 1))
    hours = check.training_days(days * 24)
    assert not hours and "hours" in hours.message and f"{days:.1f}" not in hours.message
    no_utilization = check.training_days(days * 0.4)
    assert not no_utilization and "fraction of its peak" in no_utilization.message
    forward_only = check.training_days(days / 3)
    assert not forward_only and "6 FLOPs" in forward_only.message
    assert not check.training_days(...) and not check.training_days("thirty")
    assert not check.training_days(days * 1.3) and "too high" in check.training_days(days * 1.3).message


def test_every_check_has_a_hint():
    for name in checks.__all__:
        assert check.hint(name).text
