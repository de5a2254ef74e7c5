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
        (2.0, 2.5, "it is too high, by 10–50 %"),
        (torch.zeros(3), torch.zeros(3, 1), r"expected shape \(3,\), got shape \(3, 1\)"),
        (torch.ones(4), torch.tensor([1.0, 1.0, 1.5, 1.0]), r"1 of 4 entries differ; at index \(2,\) it is too high"),
        (torch.ones(2), torch.tensor([1.0, float("nan")]), "NaN or infinity"),
        (1.0, "one", "expected a number, got a string"),
        ("relu", "tanh", "it is not the expected answer"),
        (torch.ones(3, dtype=torch.float64), torch.ones(3) / 3 * 3 + 1e-7, "float32 precision"),
        ((1.0, 2.0), (1.0, 4.0), "entry 2: it is 2 times too large"),
        ((1.0, 2.0), [1.0], "expected 2 results, got 1"),
        (torch.ones(3), None, "returned None"),
    ],
)
def test_explain_difference_says_what_differs_but_not_what_is_expected(expected, got, message):
    why = check.explain_difference(expected, got, rtol=1e-9, atol=1e-12)
    assert why is not None and re.search(message, why), why
    assert "expected 2," not in why and "relu" not in why


def test_compare_reports_the_first_failing_case():
    result = check.compare("double", lambda x: x * 2 if x < 3 else x * 3, lambda x: x * 2, [(1,), (2,), (3,)])
    assert not result and result.message == "case 3 (3): it is too high, by more than 50 %."
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
    assert check.neuron_forward(lambda x, w, b: ((x * w).sum(dim=-1) + b).clamp(min=0))
    no_activation = check.neuron_forward(lambda x, w, b: x @ w + b)
    assert not no_activation and "case 2" in no_activation.message and "ReLU" not in no_activation.message
    assert str(no_activation).endswith("\nStuck? check.hint(\"neuron_forward\") gives a hint.")
    assert "ReLU" in check.hint("neuron_forward").text
    no_bias = check.neuron_forward(lambda x, w, b: torch.relu(x @ w))
    assert not no_bias and "case 1" in no_bias.message
    one_input_only = check.neuron_forward(lambda x, w, b: torch.relu(torch.dot(x, w) + b))
    assert not one_input_only and "raised RuntimeError" in one_input_only.message
    squeezed = check.neuron_forward(lambda x, w, b: torch.relu(x @ w + b).squeeze())
    assert not squeezed and "case 5" in squeezed.message and "shape" in squeezed.message  # a batch of one
    sigmoid = check.neuron_forward(lambda x, w, b: torch.sigmoid(x @ w + b))
    assert not sigmoid and "case 1" in sigmoid.message
    leaky = check.neuron_forward(lambda x, w, b: torch.nn.functional.leaky_relu(x @ w + b))
    assert not leaky and "case 2" in leaky.message
    placeholder = check.neuron_forward(lambda x, w, b: None)
    assert not placeholder and "returned None" in placeholder.message


@pytest.mark.parametrize(("sizes", "count"), [([784, 512, 512, 10], 669_706), ([2, 2, 1], 9), ([1, 1], 2), ([3, 4, 4, 2], 46)])
def test_parameter_count_agrees_with_torch(sizes, count):
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    assert count == sum(p.numel() for l in layers for p in l.parameters()) and check.parameter_count(count, sizes)
    assert not check.parameter_count(count + 1, sizes)


@pytest.mark.parametrize("sizes", [[784], [3, 0, 2], [2.0, 3], "784-10"])
def test_parameter_count_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="at least two positive int widths"):
        check.parameter_count(9, sizes)


def test_parameter_count_diagnoses_the_usual_miscounts_without_the_numbers():
    sizes = [784, 512, 512, 10]
    assert check.parameter_count(669_706, sizes)
    assert check.parameter_count(669_706.0, sizes) and check.parameter_count(torch.tensor(669_706), sizes)
    for answer, message in [
        (668_672, "not the biases"),
        (670_490, "input layer has no biases"),
        (668_672 + 3, "its own bias, not each layer"),
        (669_710, "too high, by less than 1 %"),
        (600_000, "too low, by 10–50 %"),
        ("669706", "expected a number, got a string (write a number without quotes)"),
        (669_706.5, "expected a whole number"),
        (True, "expected a number, got bool"),
        (..., "placeholder"),
    ]:
        result = check.parameter_count(answer, sizes)
        assert not result and message in result.message, (answer, result.message)
        for secret in ("669,706", "669706", "668,672", "668672", "1,034", "1034", "off by"):
            assert secret not in result.message, (answer, result.message)
    small = check.parameter_count(36, [3, 4, 4, 2])  # the weights only, 3·4 + 4·4 + 4·2
    bare = re.sub(r"\d+–\d+ %", "", str(small))
    assert not small and "not the biases" in small.message and "46" not in bare and "10" not in bare
    assert "n_in·n_out weights and n_out biases" in check.hint("parameter_count").text


def test_network_2_check():
    abs_params = dict(w111=1, w112=-1, b11=0, w121=-1, w122=1, b12=0, w21=1, w22=1, b2=0)
    assert check.network_2(abs_params, lambda a, b: (a - b).abs())
    as_tensors = {k: torch.tensor(float(v)) for k, v in abs_params.items()}
    assert check.network_2(as_tensors, lambda a, b: (a - b).abs())
    half = dict(abs_params, w22=0)
    result = check.network_2(half, lambda a, b: (a - b).abs())
    assert not result and "211 of 445 entries differ" in result.message and "x1 = -2, x2 = -1.8" in result.message
    missing = check.network_2({"w111": 1}, lambda a, b: a)
    assert not missing and "missing: ['w112'" in missing.message
    assert not check.network_2([1, 2, 3], lambda a, b: a)
    placeholder = dict.fromkeys(check.NETWORK_2_PARAMETERS, ...)
    assert "placeholder" in check.network_2(placeholder, lambda a, b: a).message
    assert "placeholder" in check.network_2(..., lambda a, b: a).message
    assert "one finite number" in check.network_2(dict(abs_params, b2="0"), lambda a, b: a).message
    assert "max(0, −a)" in check.hint("network_2").text
    grid = check.neurons._X1, check.neurons._X2
    target_values = (grid[0] - grid[1]).abs()  # the target's own values, not nine parameters
    not_parameters = check.network_2(target_values, lambda a, b: (a - b).abs())
    assert not not_parameters and "expected a dict of exactly the parameters" in not_parameters.message


def test_linear_fold_names_mistakes_without_the_answer():
    assert check.linear_fold([3, 5, 1]) and check.linear_fold(torch.tensor([3.0, 5.0, 1.0]))
    for answer, message in [
        ([3, 5, -2], "b1 was left out"),
        ([5, -1, 1], "W1 was read transposed"),
        ([3, 5, 3], "b2 was left out"),
        ([3, 6, 1], "at index (1,) it is too high, by 10–50 %"),
        ([3, 5], "expected shape (3,), got shape (2,)"),
        ("3, 5, 1", "expected a tensor, got a string"),
        (..., "placeholder"),
    ]:
        result = check.linear_fold(answer)
        assert not result and message in result.message, (answer, result.message)
        assert not re.search(r"\b5\b|\b3\.0|expected 1\b", result.message.replace("50 %", "")), result.message
    assert "product of the two weight matrices" in check.hint("linear_fold").text


def _softmax_by_hand(z):
    e = (z - z.max(dim=-1, keepdim=True).values).exp()
    return e / e.sum(dim=-1, keepdim=True)


def test_stable_softmax_passes_the_shifted_version_and_catches_overflow():
    assert check.stable_softmax(_softmax_by_hand)
    naive = check.stable_softmax(lambda z: z.exp() / z.exp().sum(dim=-1, keepdim=True))
    assert not naive and "case 6" in naive.message and "NaN or infinity" in naive.message
    global_max = check.stable_softmax(lambda z: (z - z.max()).exp() / (z - z.max()).exp().sum(-1, keepdim=True))
    assert not global_max and "case 8" in global_max.message
    wrong_dim = check.stable_softmax(lambda z: _softmax_by_hand(z.T).T if z.ndim == 2 else _softmax_by_hand(z))
    assert not wrong_dim and "case 2" in wrong_dim.message
    assert not check.stable_softmax(lambda z: (z - z.max(dim=-1).values).exp())
    assert "largest logit" in check.hint("stable_softmax").text


@pytest.mark.parametrize(
    "student",
    [
        lambda z: torch.softmax(z, dim=-1),
        lambda z: torch.nn.functional.softmax(z, dim=-1),
        lambda z: z.softmax(dim=-1),
        lambda z: torch.nn.Softmax(dim=-1)(z),
        lambda z: z.log_softmax(dim=-1).exp(),
        lambda z: torch.special.softmax(z, dim=-1),
        lambda z, softmax=torch.nn.functional.softmax: softmax(z, dim=-1),  # captured before the check ran
    ],
)
def test_stable_softmax_forbids_torchs_softmax(student):
    result = check.stable_softmax(student)
    assert not result and "asks you to do without torch." in result.message and "softmax" in result.message
    assert torch.allclose(torch.zeros(2, 3).softmax(dim=-1), torch.full((2, 3), 1 / 3))  # restored


def _softmax_by_attention(z: torch.Tensor) -> torch.Tensor:
    """softmax(z) as the attention of one query of ones over keys z (scale 1) and the identity as values."""
    K = z.shape[-1]
    q, k = torch.ones(*z.shape[:-1], 1, 1), z.unsqueeze(-1)
    return torch.nn.functional.scaled_dot_product_attention(q, k, torch.eye(K).expand(*z.shape[:-1], K, K),
                                                            scale=1.0).squeeze(-2)


def _softmax_by_sparse(z: torch.Tensor) -> torch.Tensor:
    """softmax(z) of a sparse tensor that stores every entry of z, zeros included."""
    dense = z.reshape(-1, z.shape[-1])
    where = torch.ones_like(dense).nonzero().T
    stored = torch.sparse_coo_tensor(where, dense[where[0], where[1]], dense.shape)
    return torch.sparse.softmax(stored, dim=-1).to_dense().reshape(z.shape)


@pytest.mark.parametrize("student", [_softmax_by_attention, _softmax_by_sparse,
                                     lambda z: (z - z.logsumexp(dim=-1, keepdim=True)).exp(),
                                     lambda z: (z - torch.logsumexp(z, dim=-1, keepdim=True)).exp()])
def test_stable_softmax_forbids_softmax_inside_other_operations(student):
    z = torch.randn(3, 4)
    assert torch.allclose(student(z), z.softmax(dim=-1), atol=1e-6)  # each computes the softmax
    result = check.stable_softmax(student)
    assert not result and "asks you to do without" in result.message


def test_value_check():
    assert check.value("x", torch.tensor([3.0, 5.0, 1.0]), [3, 5, 1])
    wrong = check.value("x", [3, 6, 1], [3, 5, 1])
    assert not wrong and "1 of 3 entries differ; at index (1,) it is too high, by 10–50 %" in wrong.message
    assert "5" not in wrong.message.replace("50", "")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (..., "the placeholder `...` is still there"),
        (-2.5, "the sign is wrong."),  # not "(the size is right)": that would give the answer away
        (5.0, "it is too high, by more than 50 %"),  # not "2 times too large"
        (0.25, "it is too low, by more than a factor of 10"),
        (300.0, "it is too high, by more than a factor of 10"),
        (2.6, "it is too high, by 1–10 %"),
        (1.0, "it is too low, by more than 50 %"),
        (0.0, "it is zero, and should not be"),
        ("two and a half", "expected a number, got a string"),
        ("2.5", "expected a number, got a string"),
        (float("nan"), "NaN or infinity"),
        (None, "no answer yet: the answer is None"),
    ],
)
def test_value_says_how_an_answer_is_wrong_but_never_the_answer(answer, message):
    result = check.value("x", answer, 2.5)
    assert not result and message in result.message
    assert "2.5" not in result.message


def test_hint_is_given_on_request_only_and_unknown_names_are_explained():
    check.register_hint("test_only_check", "do it this way")
    assert str(check.hint("test_only_check")) == "💡 test_only_check: do it this way"
    with pytest.raises(ValueError, match="no check named 'nope' has a hint; checks with hints: .*neuron_forward"):
        check.hint("nope")


def test_forbidden_functions_raise_inside_the_student_function_only():
    import torch.nn.functional as F

    def uses_cross_entropy(z, y):
        return F.cross_entropy(z, y)

    def uses_method(z, y):
        return -z.log_softmax(dim=1)[torch.arange(len(y)), y].mean()

    case = [(torch.randn(3, 4), torch.tensor([0, 1, 3]))]
    forbidden = ("torch.nn.functional.cross_entropy", "torch.Tensor.log_softmax")
    for student in (uses_cross_entropy, uses_method):
        result = check.compare("ce", student, F.cross_entropy, case, forbidden=forbidden)
        assert not result and "this exercise asks you to do without" in result.message
    # restored afterwards, also for a method that lives on a base class
    assert "log_softmax" not in vars(torch.Tensor)
    assert torch.isfinite(F.cross_entropy(*case[0])) and torch.randn(2, 3).log_softmax(1).shape == (2, 3)


def test_a_raising_answer_is_reported_with_the_students_own_line():
    def student(x):
        y = x + 1
        return y @ torch.ones(5)  # the shapes do not fit

    result = check.compare("f", student, lambda x: x, [(torch.zeros(3),)])
    assert not result and "raised RuntimeError" in result.message
    assert "(your line" in result.message and "return y @ torch.ones(5)" in result.message


def test_a_function_that_returns_nothing_is_told_so():
    def student(x):
        ...  # your code here

    result = check.compare("f", student, lambda x: x, [(torch.zeros(3),)])
    assert not result and "returned None" in result.message and "placeholder `...`" in result.message
    assert not check.compare("f", ..., lambda x: x, [(1,)])


def test_produce_gives_plain_data_that_judge_reads_back_from_a_file(tmp_path):
    import json

    def forgets_the_relu(x, w, b):
        return x @ w + b

    produced = check.produce("neuron_forward", (forgets_the_relu,), seed=7)
    arrays = {k: v for k, v in produced.items() if isinstance(v, np.ndarray)}
    assert arrays and json.loads(json.dumps({k: v for k, v in produced.items() if k not in arrays}))
    verdict = check.judge("neuron_forward", 7, produced)
    assert not verdict and verdict.message == check.neuron_forward(forgets_the_relu).message
    check.save_produced(tmp_path / "out.npz", produced)
    assert check.judge("neuron_forward", 7, check.load_produced(tmp_path / "out.npz")) == verdict
    with pytest.raises(ValueError, match="not for 'neuron_forward' with this seed"):
        check.judge("neuron_forward", 8, produced)


def test_cases_depend_on_the_seed_only():
    def echo(x, w, b):
        return x @ w + b

    torch.manual_seed(0)
    first = check.produce("neuron_forward", (echo,), seed=3)
    torch.manual_seed(1)
    again, other = check.produce("neuron_forward", (echo,), seed=3), check.produce("neuron_forward", (echo,), seed=4)
    assert all(np.array_equal(first[k], again[k]) for k in first if isinstance(first[k], np.ndarray))
    assert not all(np.array_equal(first[k], other[k]) for k in first if isinstance(first[k], np.ndarray))


def test_produce_records_errors_and_blocked_calls_by_name():
    def crashes(z):
        raise IndexError("boom")

    record = check.produce("stable_softmax", (crashes,), seed=0)["cases"]
    assert len(record) == 1 and record[0]["out"]["type"] == "IndexError" and "your line" in record[0]["out"]["line"]

    def swallows(z, softmax=torch.softmax):  # captured before the check, the error swallowed, twice
        for _ in range(2):
            try:
                softmax(z, dim=-1)
            except RuntimeError:
                pass
        return z

    record = check.produce("stable_softmax", (swallows,), seed=0)["cases"]
    assert record[-1]["blocked"] == ["torch.softmax"]
    assert "do without torch.softmax" in check.judge("stable_softmax", 0, check.produce("stable_softmax", (swallows,), 0)).message


def test_load_produced_rejects_malformed_files(tmp_path):
    good = check.produce("neuron_forward", (lambda x, w, b: x @ w + b,), seed=1)
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError):
        check.load_produced(path)
    for bad in [
        {"__json__": np.array("{not json")},
        {"a0": np.zeros(2)},
        {"__json__": np.array('{"format": "companion.check/1", "check": "neuron_forward", "seed": 1, '
                              '"args": [{"$": "tensor", "key": "a9", "dtype": "float32"}], "cases": null}')},
        {"__json__": np.array('{"format": "other", "check": "neuron_forward"}')},
        {"__json__": np.array('{"format": "companion.check/1", "check": "no_such_check", "args": [], "cases": null}')},
        {"__json__": np.array("{}"), "b0": np.zeros(2)},
        {"__json__": np.array('{"format": "companion.check/1", "check": "neuron_forward", "seed": 1, '
                              '"args": [{"$": "tensor", "key": "a0", "dtype": "nope"}], "cases": null}'),
         "a0": np.zeros(2)},
        {"__json__": np.array('{"format": "companion.check/1", "check": "neuron_forward", "args": {}, "cases": null}')},
        {"__json__": np.array('{"format": "companion.check/1", "check": "neuron_forward", "args": [], '
                              '"cases": [{"out": null, "blocked": "torch.softmax"}]}')},
    ]:
        with open(path, "wb") as file:
            np.savez(file, **bad)
        with pytest.raises(ValueError):
            check.load_produced(path)
    with open(path, "wb") as file:
        np.savez(file, __json__=np.array("{}"), a0=np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        check.load_produced(path)
    check.save_produced(path, good)
    assert check.load_produced(path)["check"] == "neuron_forward"


def test_numpy_answers_and_outputs_travel_as_numbers_and_arrays():
    assert check.value("mean", np.float64(2.5), 2.5)
    assert check.parameter_count(np.int64(13), [2, 3, 1])
    assert check.compare("f", lambda x: x.numpy() * 2, lambda x: x * 2, [(torch.arange(3.0),)])
    assert not check.compare("f", lambda x: x.numpy(), lambda x: x * 2, [(torch.arange(1.0, 4.0),)])
    assert check.explain_difference(1.0, [[1, 2], [3]]) == "expected a number, got list"
    assert check.explain_difference(1.0, ["one"]) == "expected a number, got list"
    with pytest.raises(TypeError, match="must be numeric; got str"):
        check.value("x", 1.0, "one")


def test_a_forbidden_name_this_torch_lacks_blocks_nothing():
    assert check.compare("f", lambda x: x + 1, lambda x: x + 1, [(torch.ones(2),)], forbidden=("torch.no_such_op",))


def test_a_mistake_is_judged_on_the_cases_where_it_runs():
    from companion.check.core import CheckSpec, _self_check

    def shape_bound(ndim):  # a mistake that keeps x as it is, written for one number of dimensions only
        def variant(x):
            if x.ndim != ndim:
                raise ValueError(f"{ndim} dimensions only")
            return x

        return variant

    cases = [("a vector", (torch.ones(3),)), ("a matrix", (torch.ones(2, 2),))]
    spec = CheckSpec("doubling", lambda x: 2 * x, lambda gen: cases,
                     mistakes={"vectors only": shape_bound(1), "matrices only": shape_bound(2)})  # fmt: skip
    result = _self_check(spec, (lambda x: 2 * x if x.ndim == 1 else x,))  # wrong on the matrix only
    assert not result and "It looks like this mistake: matrices only." in result.message


def test_judge_rejects_case_records_that_do_not_fit_the_cases():
    produced = check.produce("neuron_forward", (lambda x, w, b: torch.relu(x @ w + b),), seed=2)
    assert check.judge("neuron_forward", 2, produced)
    for records in ([], produced["cases"] * 2, produced["cases"][:3]):
        with pytest.raises(ValueError, match="case records"):
            check.judge("neuron_forward", 2, {**produced, "cases": records})
