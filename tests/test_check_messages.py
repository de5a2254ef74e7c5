"""Every check of the course: its failure messages never show the expected values, its documentation
holds no formula of the answer, its hint is no pastable code, a placeholder fails it, and the self-check
equals produce + judge."""

from __future__ import annotations

import inspect
import json
import math
import re

import numpy as np
import pytest
import torch

from companion import check

SPECS = sorted(check.SPECS)
FUNCTION_CHECKS = [n for n in SPECS if not check.SPECS[n].answers and check.SPECS[n].apply is None]
ANSWER_FORMULA = re.compile(r"⌊|√|Σ|←|//|\be\^|relu\(|softmax\(|tanh\(|\+ 1\b")


def numbers(value) -> list[float]:
    """Every number in an output (a number, a tensor, or a tuple or list of them)."""
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in numbers(v)]
    if isinstance(value, torch.Tensor):
        return [float(x) for x in value.detach().double().flatten()[:200]]
    return [float(value)] if isinstance(value, (int, float)) else []


def shown(x: float) -> set[str]:
    """How an expected number could appear in a message: with 3 to 6 significant digits."""
    return {f"{x:.{d}g}" for d in (3, 4, 5, 6)} | ({f"{int(x):,}", str(int(x))} if x == int(x) else set())


def assert_no_expected_value(message: str, expected: list[float]) -> None:
    told = message.split("): ", 1)[-1]  # after the case's own description, which shows its inputs
    told = re.sub(r"\d+–\d+ %|\d+ %|\d+ times|index \([\d, ]*\)|\d+ of \d+ entries", "", told)  # how, not what
    for x in expected:
        if math.isfinite(x) and abs(x) >= 10 or (x != round(x, 1) and math.isfinite(x)):
            for text in shown(x):
                assert not re.search(rf"(?<![\d.]){re.escape(text)}(?![\d])", told), (x, message)


def scaled(value, factor: float):
    if isinstance(value, (tuple, list)):
        return type(value)(scaled(v, factor) for v in value)
    if isinstance(value, int):
        return round(value * factor) + 1
    return value * factor if isinstance(value, (torch.Tensor, float)) else value


@pytest.mark.parametrize("name", FUNCTION_CHECKS)
@pytest.mark.parametrize("factor", [1.37, -0.8])
def test_a_wrong_answer_is_never_told_the_expected_values(name, factor):
    spec, seed = check.SPECS[name], 11
    cases = spec.cases(torch.Generator().manual_seed(seed))
    expected = [spec.reference(*case) for _, case in cases]
    calls = iter(expected)

    def wrong(*args):  # the expected output of each case, scaled: wrong, and close to the numbers it hides
        return scaled(next(calls), factor)

    result = check.judge(name, seed, check.produce(name, (wrong,), seed))
    assert not result, name
    assert_no_expected_value(result.message, [x for e in expected for x in numbers(e)])


@pytest.mark.parametrize(
    ("name", "args"),
    [("parameter_count", (46 * 1.37, [3, 4, 4, 2])), ("finite_difference_cost", (3.5e11 * 1.37, 11090.6 * 0.7, 2.1)),
     ("uncorrected_adam_ratio", (0.7,)), ("training_days", (20.0,)), ("largest_stable_learning_rate", (0.4, [1.0, 2.0])),
     ("linear_fold", ([3.3, 5.5, 1.1],)), ("transformer_block_parameters", (123_456, 256))],
)  # fmt: skip
def test_a_wrong_value_is_never_told_the_expected_value(name, args):
    spec = check.SPECS[name]
    expected = numbers(spec.reference(*args[spec.answers:]))
    result = getattr(check, name)(*args)
    assert not result
    assert_no_expected_value(result.message, expected)


ANSWER_QUESTIONS = {"parameter_count": ([3, 4, 4, 2],), "largest_stable_learning_rate": ([1.0, 2.0],),
                    "transformer_block_parameters": (256, 4), "network_2": (lambda a, b: a,)}


@pytest.mark.parametrize("name", [n for n in SPECS if check.SPECS[n].answers and n != "network_2"])
@pytest.mark.parametrize("factor", [2, 3, 10, -1])
def test_an_answer_off_by_an_exact_factor_is_not_told_the_factor(name, factor):
    """A typed-in answer told "2 times too large" or "the size is right" could be corrected by arithmetic."""
    spec = check.SPECS[name]
    question = ANSWER_QUESTIONS.get(name, ())
    expected = spec.reference(*question)
    answers = [a * factor for a in (expected if spec.answers > 1 else (expected,))]  # exactly, ints too
    result = getattr(check, name)(*answers, *question)
    assert not result and result.message, name
    assert "times too" not in result.message and "size is right" not in result.message, result.message


@pytest.mark.parametrize("name", SPECS)
def test_documentation_holds_no_formula_of_the_answer(name):
    doc = inspect.getdoc(getattr(check, name))
    assert doc and not ANSWER_FORMULA.search(doc), (name, ANSWER_FORMULA.search(doc))
    assert getattr(check, name).__annotations__["return"] == "CheckResult"


@pytest.mark.parametrize("name", SPECS)
def test_a_placeholder_fails_and_the_self_check_is_produce_then_judge(name):
    spec = check.SPECS[name]
    args = (...,) * max(spec.answers, 1) + ANSWER_QUESTIONS.get(name, ())
    result = getattr(check, name)(*args)
    assert not result and result.message == check.PLACEHOLDER_MESSAGE
    produced = check.produce(name, args, 5)
    assert check.judge(name, 5, produced) == result
    plain = {k: v for k, v in produced.items() if not isinstance(v, np.ndarray)}
    assert json.loads(json.dumps(plain)) == plain  # plain data only: no object of the student's


def test_no_reference_implementation_is_public():
    public = [n for n in dir(check) if not n.startswith("_")]
    assert not [n for n in public if n.startswith("reference") or n in ("shifted", "mlp_parameter_count")]
    assert not [n for n in public if n.endswith("_of_class") or n == "early_stopping_epochs"]


def shortcuts() -> list[tuple[str, object]]:
    """Answers that reach what their exercise does without: the library, the course's own, the check's own."""
    from torch.nn import functional as F

    from companion import attention, conv, distributed, recurrent, scale

    def sdpa_head(x, w_q, w_k, w_v, sdpa=F.scaled_dot_product_attention):  # captured as a default argument
        return sdpa(x @ w_q, x @ w_k, x @ w_v, is_causal=True)

    return [
        ("conv2d_forward", F.conv2d),
        ("conv2d_forward", lambda x, w, b: torch.convolution(x, w, b, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)),
        ("conv2d_forward", check.conv._conv2d),
        ("attention_head", sdpa_head),
        ("attention_weights", lambda q, k: attention.scaled_dot_product_attention(q, k, k)),
        ("causal_mask", attention.causal_mask),
        ("gru_step", recurrent.gru_cell),
        ("gpt_parameter_count", lambda V, T, d, L, b, t: scale.gpt_parameters(
            vocab_size=V, context=T, dim=d, layers=L, bias=b, tied_head=t)),
        ("training_bytes", lambda n, o, m: scale.training_memory(n, o, "mixed" if m else "fp32")["total"]),
        ("conv_output_size", conv.output_size),
        ("ring_chunk", distributed.ring_chunk),
        ("ring_chunk", lambda w, s, n: (w - s) % n + 0 * distributed.ring_all_reduce([torch.ones(1)] * n)[1][0]),
        ("max_pool2d", F.max_pool2d),
    ]


@pytest.mark.parametrize(("name", "shortcut"), shortcuts(), ids=[f"{n}-{i}" for i, (n, _) in enumerate(shortcuts())])
def test_every_shortcut_an_exercise_forbids_fails_and_is_named(name, shortcut):
    result = getattr(check, name)(shortcut)
    assert not result and "this exercise asks you to do without" in result.message, result.message


CODE_IN_HINT = re.compile(
    r"(?<![\w.])[A-Za-z_]\w*\s*(?<![=<>!])=(?!=)(?:(?!;|\.\s).){0,60}?(?:\s[-+*/@%−×÷]\s|\w\()"  # x = a + b
    r"|\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\((?!\))"  # torch.tanh(h), x.unfold(2, k, k): a call with arguments
    r"|@\s*[A-Za-z_(]"  # h @ W.T: a matrix product of names
    r"|\w\[[^\]]*:"  # x[:, :, i:i+k]: a slice
)
"""What makes a hint pastable code rather than a pointer: an assignment whose right side computes, a call of a
dotted name with arguments, a matrix product ``@``, or a slice."""
OLD_HINTS_THAT_WERE_CODE = [
    "for a batch the rows are samples: pre = h @ W.T + x @ U.T + b has shape [N, H]; the new state is "
    "torch.tanh(pre).",
    "pre = x @ W_ih.T + h @ W_hh.T + b, then i, f, g, o = pre.chunk(4, dim=1); sigmoid on i, f, o and tanh "
    "on g; c_new = f * c + i * g; h_new = o * torch.tanh(c_new).",
    "the output has H // k rows and W // k columns; output (i, j) is the largest entry of the window "
    "x[:, :, i*k:(i+1)*k, j*k:(j+1)*k], for every image and channel separately (amax over the last two "
    "dimensions). Or cut all windows at once with x.unfold(2, k, k).unfold(3, k, k).",
    "counts = torch.ones(V, V) (the added one), then counts[a, b] += 1 for each neighbouring pair of train; "
    "the loss is -probs[val[:-1], val[1:]].log().mean().",
    "scores = q @ k.transpose(-2, -1) compares every query with every key ([..., L, S]); divide them by "
    "math.sqrt(d_k), d_k = q.shape[-1], then take torch.softmax over the last dimension (the keys).",
    "the low-rank path first shrinks x to r numbers with A (x @ A.T), then grows them back with B (@ B.T)",
    "FLOPs = 6 × parameters × tokens; FLOP/s of the cluster = GPUs × peak × utilization",
]
PROSE_THAT_IS_NOT_CODE = [
    "count the pairs so that repeats add up (index_put_ with accumulate=True, or a loop)",
    "keep it a tensor (no .item()) so that backward() reaches the weights",
    "|a| = max(0, a) + max(0, −a): each term is what one ReLU neuron can compute",
    "the True entries fill one triangle (torch.tril and torch.triu keep one triangle of a matrix)",
    "average the negative log-probability of the validation pairs; rows [N, H] and [a, a, a]",
]


@pytest.mark.parametrize("text", OLD_HINTS_THAT_WERE_CODE)
def test_the_rule_for_code_in_hints_catches_code(text):
    assert CODE_IN_HINT.search(text), text


@pytest.mark.parametrize("text", PROSE_THAT_IS_NOT_CODE)
def test_the_rule_for_code_in_hints_lets_prose_pass(text):
    assert not CODE_IN_HINT.search(text), CODE_IN_HINT.search(text)


@pytest.mark.parametrize("name", [n for n in SPECS if check.SPECS[n].hint])
def test_a_hint_points_the_way_without_being_the_code(name):
    text = check.hint(name).text
    assert not CODE_IN_HINT.search(text), (name, CODE_IN_HINT.search(text))
