"""companion.check: the self-check core and chapter 1's checks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from companion import check


def test_explain_difference_accepts_close_values():
    assert check.explain_difference(1.0, 1.0 + 1e-9) is None
    assert check.explain_difference(torch.ones(3), np.ones(3)) is None
    assert check.explain_difference("relu", "relu") is None


@pytest.mark.parametrize(
    ("expected", "got", "message"),
    [
        (2.0, 2.5, "expected 2, got 2.5"),
        (torch.zeros(3), torch.zeros(3, 1), r"expected shape \(3,\), got shape \(3, 1\)"),
        (torch.zeros(4), torch.tensor([0.0, 0.0, 0.5, 0.0]), r"1 of 4 entries differ.*index \(2,\): expected 0, got 0.5"),
        (torch.ones(2), torch.tensor([1.0, float("nan")]), "NaN or infinity"),
        (1.0, "one", "expected a number or array like 1.0, got str"),
        ("relu", "tanh", "expected 'relu', got 'tanh'"),
    ],
)
def test_explain_difference_says_what_differs(expected, got, message):
    why = check.explain_difference(expected, got)
    assert why is not None and re.search(message, why)


def test_compare_reports_the_first_failing_case_and_hint():
    result = check.compare("double", lambda x: x * 2 if x < 3 else x * 3, lambda x: x * 2, [(1,), (2,), (3,)], hint="2x")
    assert not result and "case 3 (3): expected 6, got 9. Hint: 2x" in result.message
    assert str(result).startswith("❌ double:")
    passed = check.compare("double", lambda x: x + x, lambda x: x * 2, [(1,), (2.5,)])
    assert passed and str(passed) == "✅ double: 2 of 2 cases match the reference."


def test_compare_survives_a_crashing_answer_and_protects_inputs():
    def crashes(x):
        raise IndexError("boom")

    result = check.compare("f", crashes, lambda x: x, [(torch.zeros(2),)])
    assert not result and "case 1 (tensor([0., 0.])) raised IndexError: boom" in result.message

    def mutates(x):
        x += 1
        return x

    # the reference sees the original input even though the answer modified its own copy
    assert not check.compare("f", mutates, lambda x: x.clone(), [(torch.zeros(2),)])
    assert not check.compare("f", "not a function", lambda x: x, [(1,)])


def test_neuron_forward_passes_the_reference_and_explains_mistakes():
    assert check.neuron_forward(lambda x, w, b: torch.relu(x @ w + b))
    no_activation = check.neuron_forward(lambda x, w, b: x @ w + b)
    assert not no_activation and "case 2" in no_activation.message and "ReLU" in no_activation.message
    no_bias = check.neuron_forward(lambda x, w, b: torch.relu(x @ w))
    assert not no_bias and "case 1" in no_bias.message
    one_input_only = check.neuron_forward(lambda x, w, b: torch.relu(torch.dot(x, w) + b))
    assert not one_input_only and "raised RuntimeError" in one_input_only.message


@pytest.mark.parametrize(
    ("sizes", "expected"), [([784, 512, 512, 10], 669_706), ([2, 2, 1], 9), ([1, 1], 2), ([3, 4, 4, 2], 46)]
)
def test_mlp_parameter_count_matches_torch(sizes, expected):
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    assert check.mlp_parameter_count(sizes) == expected == sum(p.numel() for l in layers for p in l.parameters())


@pytest.mark.parametrize("sizes", [[784], [3, 0, 2], [2.0, 3], "784-10"])
def test_mlp_parameter_count_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="at least two positive int widths"):
        check.mlp_parameter_count(sizes)


def test_parameter_count_diagnoses_the_usual_miscounts():
    sizes = [784, 512, 512, 10]
    assert check.parameter_count(669_706, sizes)
    assert "not the biases" in check.parameter_count(668_672, sizes).message
    assert "input layer has no biases" in check.parameter_count(670_490, sizes).message
    assert "off by +4" in check.parameter_count(669_710, sizes).message
    assert "expected an int, got str" in check.parameter_count("669706", sizes).message


def test_network_2_check():
    abs_params = dict(w111=1, w112=-1, b11=0, w121=-1, w122=1, b12=0, w21=1, w22=1, b2=0)
    assert check.network_2(abs_params, lambda a, b: (a - b).abs())
    half = dict(abs_params, w22=0)
    result = check.network_2(half, lambda a, b: (a - b).abs())
    assert not result and "210 of 441 grid points differ" in result.message
    missing = check.network_2({"w111": 1}, lambda a, b: a)
    assert not missing and "missing: ['w112'" in missing.message
    assert not check.network_2([1, 2, 3], lambda a, b: a)


def test_value_check():
    assert check.value("x", torch.tensor([3.0, 5.0, 1.0]), [3, 5, 1])
    wrong = check.value("x", [3, 6, 1], [3, 5, 1], hint="W2 W1")
    assert not wrong and wrong.message.endswith("Hint: W2 W1")
