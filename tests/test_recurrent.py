"""companion.recurrent against torch.nn.RNN/LSTM/GRU and their cells: outputs, states and gradients in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion import recurrent

TOL = {"rtol": 1e-10, "atol": 1e-12}
TORCH_CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
OUR_CELLS = {"rnn": recurrent.RNNCell, "lstm": recurrent.LSTMCell, "gru": recurrent.GRUCell}
TORCH_STACKS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
OUR_STACKS = {"rnn": recurrent.RNN, "lstm": recurrent.LSTM, "gru": recurrent.GRU}
sizes = st.integers(1, 6)


def initial_state(kind: str, shape: tuple[int, ...], gen: torch.Generator):
    h = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    if kind != "lstm":
        return h
    return h, torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)


def flat(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def assert_same_grads(ours: nn.Module, theirs: nn.Module, inputs: list[torch.Tensor], outputs) -> None:
    """Backpropagate the same random weighting of the outputs through both; every gradient must agree."""
    ours_out, theirs_out = outputs
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in ours_out]
    loss_ours = sum((w * t).sum() for w, t in zip(weights, ours_out))
    loss_theirs = sum((w * t).sum() for w, t in zip(weights, theirs_out))
    params_ours = dict(ours.named_parameters())
    params_theirs = dict(theirs.named_parameters())
    assert params_ours.keys() == params_theirs.keys()
    names = sorted(params_ours)
    grads_ours = torch.autograd.grad(loss_ours, inputs + [params_ours[n] for n in names])
    grads_theirs = torch.autograd.grad(loss_theirs, inputs + [params_theirs[n] for n in names])
    for label, a, b in zip(["input"] * len(inputs) + names, grads_ours, grads_theirs):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, label=label: f"gradient of {label}: {m}")


# --- cells -------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["rnn", "lstm", "gru"]), n=sizes, f=sizes, h=sizes, bias=st.booleans(), seed=st.integers(0, 999))
def test_cells_equal_torch_cells(kind, n, f, h, bias, seed):
    torch.manual_seed(seed)
    theirs = TORCH_CELLS[kind](f, h, bias=bias).double()
    ours = OUR_CELLS[kind](f, h, bias=bias).double()
    ours.load_state_dict(theirs.state_dict())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=gen, dtype=torch.float64, requires_grad=True)
    state = initial_state(kind, (n, h), gen)
    out_ours, out_theirs = flat(ours(x, state)), flat(theirs(x, state))
    for a, b in zip(out_ours, out_theirs):
        torch.testing.assert_close(a, b, **TOL)
    assert_same_grads(ours, theirs, [x, *flat(state)], (out_ours, out_theirs))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cells_start_from_zeros(kind):
    torch.manual_seed(0)
    theirs = TORCH_CELLS[kind](3, 5).double()
    ours = OUR_CELLS[kind](3, 5).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 3, dtype=torch.float64)
    for a, b in zip(flat(ours(x)), flat(theirs(x))):
        torch.testing.assert_close(a, b, **TOL)


def test_relu_rnn_cell_and_parameter_shapes():
    torch.manual_seed(0)
    theirs = nn.RNNCell(3, 4, nonlinearity="relu").double()
    ours = recurrent.RNNCell(3, 4, nonlinearity="relu").double()
    ours.load_state_dict(theirs.state_dict())
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x, h), theirs(x, h), **TOL)
    assert {k: tuple(v.shape) for k, v in recurrent.LSTMCell(3, 4).state_dict().items()} == {
        "weight_ih": (16, 3), "weight_hh": (16, 4), "bias_ih": (16,), "bias_hh": (16,)
    }  # fmt: skip


def test_functional_cells_written_out():
    """The gate equations of the docstrings, evaluated by hand on one step."""
    gen = torch.Generator().manual_seed(0)
    x, h, c = (torch.randn(2, k, generator=gen, dtype=torch.float64) for k in (3, 4, 4))
    W, U, b = (torch.randn(s, generator=gen, dtype=torch.float64) for s in [(16, 3), (16, 4), (16,)])
    pre = x @ W.T + h @ U.T + b
    i, f, g, o = pre[:, :4].sigmoid(), pre[:, 4:8].sigmoid(), pre[:, 8:12].tanh(), pre[:, 12:].sigmoid()
    h2, c2 = recurrent.lstm_cell(x, (h, c), W, U, b, None)
    torch.testing.assert_close(c2, f * c + i * g, **TOL)
    torch.testing.assert_close(h2, o * (f * c + i * g).tanh(), **TOL)
    torch.testing.assert_close(
        recurrent.rnn_cell(x, h, W[:4], U[:4], b[:4]), torch.tanh(x @ W[:4].T + h @ U[:4].T + b[:4]), **TOL
    )
    Wg, Ug = W[:12], U[:12]
    r = (x @ Wg[:4].T + h @ Ug[:4].T).sigmoid()
    z = (x @ Wg[4:8].T + h @ Ug[4:8].T).sigmoid()
    n = (x @ Wg[8:].T + r * (h @ Ug[8:].T)).tanh()
    torch.testing.assert_close(recurrent.gru_cell(x, h, Wg, Ug), (1 - z) * n + z * h, **TOL)


# --- stacks over a sequence --------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["rnn", "lstm", "gru"]), n=sizes, t=st.integers(1, 7), f=sizes, h=sizes,
    layers=st.integers(1, 3), bias=st.booleans(), batch_first=st.booleans(), given_state=st.booleans(),
    seed=st.integers(0, 999),
)  # fmt: skip
def test_stacks_equal_torch_layers(kind, n, t, f, h, layers, bias, batch_first, given_state, seed):
    torch.manual_seed(seed)
    theirs = TORCH_STACKS[kind](f, h, num_layers=layers, bias=bias, batch_first=batch_first).double()
    ours = OUR_STACKS[kind](f, h, num_layers=layers, bias=bias, batch_first=batch_first).double()
    ours.load_state_dict(theirs.state_dict())
    gen = torch.Generator().manual_seed(seed)
    shape = (n, t, f) if batch_first else (t, n, f)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    state = initial_state(kind, (layers, n, h), gen) if given_state else None
    out_ours, last_ours = ours(x, state)
    out_theirs, last_theirs = theirs(x, state)
    assert out_ours.shape == out_theirs.shape == (*shape[:2], h)
    torch.testing.assert_close(out_ours, out_theirs, **TOL)
    for a, b in zip(flat(last_ours), flat(last_theirs)):
        torch.testing.assert_close(a, b, **TOL)
    inputs = [x, *flat(state)] if given_state else [x]
    assert_same_grads(ours, theirs, inputs, ([out_ours, *flat(last_ours)], [out_theirs, *flat(last_theirs)]))


def test_relu_rnn_stack_and_weights_copy_back():
    torch.manual_seed(0)
    ours = recurrent.RNN(3, 4, num_layers=2, nonlinearity="relu").double()
    theirs = nn.RNN(3, 4, num_layers=2, nonlinearity="relu", batch_first=True).double()
    theirs.load_state_dict(ours.state_dict())  # the other direction works too
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], **TOL)


def test_unroll_runs_a_cell_along_the_sequence():
    torch.manual_seed(0)
    cell = recurrent.LSTMCell(2, 3).double()
    x = torch.randn(4, 6, 2, dtype=torch.float64)
    state = (torch.zeros(4, 3, dtype=torch.float64),) * 2
    outputs, (h, c) = recurrent.unroll(cell, x, state)
    manual = state
    for t in range(6):
        manual = cell(x[:, t], manual)
        torch.testing.assert_close(outputs[:, t], manual[0], **TOL)
    torch.testing.assert_close(h, manual[0], **TOL)
    torch.testing.assert_close(c, manual[1], **TOL)
    time_first, _ = recurrent.unroll(cell, x.transpose(0, 1), state, batch_first=False)
    torch.testing.assert_close(time_first.transpose(0, 1), outputs, **TOL)


def test_gradcheck_of_the_lstm_stack():
    torch.manual_seed(0)
    model = recurrent.LSTM(2, 3, num_layers=2).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: model(x)[0], (x,))


# --- clear errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda W, U: recurrent.rnn_cell(torch.zeros(2, 5), torch.zeros(2, 4), W, U),
         r"x must have shape \[N, F\] with F = 3 to match weight_ih \(4, 3\); got x of shape \(2, 5\)"),
        (lambda W, U: recurrent.rnn_cell(torch.zeros(2, 3), torch.zeros(3, 4), W, U),
         r"state must have shape \[N, H\] = \[2, 4\] for x of shape \(2, 3\) and weight_hh of shape \(4, 4\); "
         r"got \(3, 4\)"),
        (lambda W, U: recurrent.rnn_cell(torch.zeros(2, 3), torch.zeros(2, 4), W[:3], U),
         r"weight_ih must have shape \[1·H, F\] = \[4, F\] to match weight_hh \(4, 4\); got \(3, 3\)"),
        (lambda W, U: recurrent.lstm_cell(torch.zeros(2, 3), (torch.zeros(2, 4),) * 2, W, U),
         r"lstm_cell: weight_hh must have shape \[4·H, H\]; got \(4, 4\)"),
        (lambda W, U: recurrent.rnn_cell(torch.zeros(2, 3), torch.zeros(2, 4), W, U, torch.zeros(5)),
         r"bias_ih must have shape \[4\] to match weight_hh \(4, 4\); got \(5,\)"),
    ],
)  # fmt: skip
def test_cells_name_both_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.zeros(4, 3), torch.zeros(4, 4))


def test_stacks_name_both_shapes():
    with pytest.raises(ValueError, match=r"LSTM expects x of shape \[N, T, F\] with F = input_size = 3; got \(2, 5, 4\)"):
        recurrent.LSTM(3, 4)(torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match=r"GRU: h0 must have shape \[layers, N, H\] = \[2, 2, 4\] for x of shape "
                                         r"\(2, 5, 3\); got \(1, 2, 4\)"):  # fmt: skip
        recurrent.GRU(3, 4, num_layers=2)(torch.zeros(2, 5, 3), torch.zeros(1, 2, 4))
    with pytest.raises(TypeError, match=r"initial state must be a pair \(h0, c0\)"):
        recurrent.LSTM(3, 4)(torch.zeros(2, 5, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="unroll needs at least one time step"):
        recurrent.RNN(3, 4)(torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'; got 'sigmoid'"):
        recurrent.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="num_layers must be a positive int; got 0"):
        recurrent.GRU(3, 4, num_layers=0)


@pytest.mark.parametrize("make, x", [
    (lambda: recurrent.LSTM(3, 4), torch.zeros(2, 5, 3, dtype=torch.float64)),
    (lambda: recurrent.GRU(3, 4, num_layers=2), torch.zeros(2, 5, 3, dtype=torch.float64)),
    (lambda: recurrent.LSTMCell(3, 4), torch.zeros(2, 3, dtype=torch.float64)),
    (lambda: recurrent.RNNCell(3, 4), torch.zeros(2, 3, dtype=torch.float64)),
])  # fmt: skip
def test_float64_inputs_into_float32_weights_get_an_error_naming_both_dtypes(make, x):
    with pytest.raises(TypeError, match="the weights are torch.float32 but x is torch.float64"):
        make()(x)
    assert make().double()(x) is not None


def test_a_state_of_another_dtype_is_named_too():
    cell = recurrent.GRUCell(3, 4)
    with pytest.raises(TypeError, match="gru_cell: the weights are torch.float32 but h is torch.float64"):
        cell(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.float64))
