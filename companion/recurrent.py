"""Recurrent layers from scratch: the RNN, LSTM and GRU cells with their gates written out, and stacks over time.

A recurrent cell updates a state from one input at a time, and the same weights
are used at every step; :func:`unroll` runs a cell along a sequence. The weight
layout is PyTorch's, so weights copy across in either direction with
``load_state_dict``:

* a cell has ``weight_ih [G·H, F]``, ``weight_hh [G·H, H]``, ``bias_ih [G·H]``,
  ``bias_hh [G·H]`` with G = 1 (RNN), 4 (LSTM: gates i, f, g, o) or
  3 (GRU: gates r, z, n), as ``nn.RNNCell``/``nn.LSTMCell``/``nn.GRUCell``;
* a stack :class:`RNN`/:class:`LSTM`/:class:`GRU` has the same per layer ``l``
  under the names ``weight_ih_l{l}`` …, as ``nn.RNN``/``nn.LSTM``/``nn.GRU``.

Shapes: ``N`` samples, ``T`` steps, ``F`` input features, ``H`` hidden units.
The stacks are batch first by default (``[N, T, F]``), unlike torch's
(``batch_first=False``); pass ``batch_first=False`` for ``[T, N, F]``.

These are the lessons' versions, written for reading; the chapters train with
torch's fused layers, which compute the same numbers faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell", "gru_cell", "lstm_cell", "rnn_cell", "unroll"]

Tensor = torch.Tensor
LSTMState = tuple[Tensor, Tensor]
State = Tensor | LSTMState


def _shape(t: object) -> object:
    return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__


def _check_cell(
    name: str, x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None,
    bias_hh: Tensor | None, gates: int,
) -> None:  # fmt: skip
    """Clear errors for the shapes of one cell step: x [N, F], h [N, H], weight_ih [G·H, F], weight_hh [G·H, H]."""
    for label, t in [("x", x), ("h", h), ("weight_ih", weight_ih), ("weight_hh", weight_hh)]:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {label} must be a torch tensor; got {type(t).__name__}")
    if weight_hh.ndim != 2 or weight_hh.shape[0] != gates * weight_hh.shape[1]:
        raise ValueError(
            f"{name}: weight_hh must have shape [{gates}·H, H]; got {_shape(weight_hh)}"
        )
    H = weight_hh.shape[1]
    if weight_ih.ndim != 2 or weight_ih.shape[0] != gates * H:
        raise ValueError(
            f"{name}: weight_ih must have shape [{gates}·H, F] = [{gates * H}, F] to match weight_hh "
            f"{_shape(weight_hh)}; got {_shape(weight_ih)}"
        )
    if x.ndim != 2 or x.shape[1] != weight_ih.shape[1]:
        raise ValueError(
            f"{name}: x must have shape [N, F] with F = {weight_ih.shape[1]} to match weight_ih "
            f"{_shape(weight_ih)}; got x of shape {_shape(x)}"
        )
    if h.shape != (x.shape[0], H):
        raise ValueError(
            f"{name}: the state must have shape [N, H] = [{x.shape[0]}, {H}] for x of shape {_shape(x)} "
            f"and weight_hh of shape {_shape(weight_hh)}; got {_shape(h)}"
        )
    _check_dtypes(name, weight_ih.dtype, x=x, h=h)
    for label, b in [("bias_ih", bias_ih), ("bias_hh", bias_hh)]:
        if b is not None and (not isinstance(b, Tensor) or b.shape != (gates * H,)):
            raise ValueError(f"{name}: {label} must have shape [{gates * H}] to match weight_hh {_shape(weight_hh)}; "
                             f"got {_shape(b)}")  # fmt: skip


def _check_dtypes(name: str, dtype: torch.dtype, **tensors: Tensor) -> None:
    """Each tensor has the weights' ``dtype``; else a ``TypeError`` naming both."""
    for label, t in tensors.items():
        if t.dtype != dtype:
            raise TypeError(
                f"{name}: the weights are {dtype} but {label} is {t.dtype}: convert {label} (.to({dtype})) "
                f"or the weights (module.to({t.dtype}))"
            )


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x Wᵀ + b`` for ``x [N, F]``, ``W [K, F]``, ``b [K]``."""
    out = x @ weight.T
    return out + bias if bias is not None else out


def rnn_cell(
    x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None, nonlinearity: str = "tanh",
) -> Tensor:  # fmt: skip
    """One step of a plain (Elman) RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``.

    Args:
        x: the input at this step ``[N, F]``.
        h: the previous state ``[N, H]``.
        weight_ih: ``[H, F]``; weight_hh: ``[H, H]``; biases ``[H]`` or None.
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
        the new state ``[N, H]``.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
    _check_cell("rnn_cell", x, h, weight_ih, weight_hh, bias_ih, bias_hh, gates=1)
    pre = _affine(x, weight_ih, bias_ih) + _affine(h, weight_hh, bias_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_cell(
    x: Tensor, state: LSTMState, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> LSTMState:  # fmt: skip
    """One step of an LSTM: four gates from ``x`` and ``h``, then the cell and hidden states.

    .. math::
        i = σ(W_i [x; h] + b_i),\\ f = σ(W_f [x; h] + b_f),\\ g = \\tanh(W_g [x; h] + b_g),\\
        o = σ(W_o [x; h] + b_o),\\quad c' = f ⊙ c + i ⊙ g,\\quad h' = o ⊙ \\tanh(c')

    The input gate ``i`` admits the candidate ``g``, the forget gate ``f``
    keeps the old cell ``c``, the output gate ``o`` exposes the cell as ``h'``.
    Rows of the weights are the gates in torch's order ``i, f, g, o``.

    Args:
        x: ``[N, F]``; state: ``(h [N, H], c [N, H])``.
        weight_ih: ``[4H, F]``; weight_hh: ``[4H, H]``; biases ``[4H]`` or None.

    Returns:
        ``(h', c')``, each ``[N, H]``.
    """
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"lstm_cell: state must be a pair (h, c) of tensors; got {type(state).__name__}")
    h, c = state
    _check_cell("lstm_cell", x, h, weight_ih, weight_hh, bias_ih, bias_hh, gates=4)
    if not isinstance(c, Tensor) or c.shape != h.shape:
        raise ValueError(f"lstm_cell: c must have the shape of h {_shape(h)}; got {_shape(c)}")
    pre = _affine(x, weight_ih, bias_ih) + _affine(h, weight_hh, bias_hh)
    i, f, g, o = pre.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


def gru_cell(
    x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """One step of a GRU: a reset gate, an update gate and a candidate state.

    .. math::
        r = σ(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}),\\ z = σ(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}),\\
        n = \\tanh(W_{in} x + b_{in} + r ⊙ (W_{hn} h + b_{hn})),\\quad h' = (1 - z) ⊙ n + z ⊙ h

    Rows of the weights are the gates in torch's order ``r, z, n``; note that
    ``r`` multiplies ``W_hn h + b_hn``, after the matrix product (as in torch
    and cuDNN; Cho et al. 2014 apply it to ``h`` before).

    Args:
        x: ``[N, F]``; h: ``[N, H]``.
        weight_ih: ``[3H, F]``; weight_hh: ``[3H, H]``; biases ``[3H]`` or None.

    Returns:
        the new state ``[N, H]``.
    """
    _check_cell("gru_cell", x, h, weight_ih, weight_hh, bias_ih, bias_hh, gates=3)
    xr, xz, xn = _affine(x, weight_ih, bias_ih).chunk(3, dim=1)
    hr, hz, hn = _affine(h, weight_hh, bias_hh).chunk(3, dim=1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def unroll(
    cell: Callable[[Tensor, State], State], x: Tensor, state: State, batch_first: bool = True
) -> tuple[Tensor, State]:
    """Run ``cell`` along a sequence: ``state = cell(x_t, state)`` for t = 1 … T, with the same weights each step.

    Args:
        cell: ``cell(x_t [N, F], state) -> state``; a state is ``h [N, H]`` or, for an LSTM, ``(h, c)``.
        x: the sequence ``[N, T, F]`` (``[T, N, F]`` with ``batch_first=False``).
        state: the initial state.

    Returns:
        ``(outputs, final_state)``: the hidden state ``h_t`` of every step,
        ``[N, T, H]`` (``[T, N, H]``), and the last state.
    """
    if not isinstance(x, Tensor) or x.ndim != 3:
        raise ValueError(f"unroll takes a sequence [N, T, F] (batch first) or [T, N, F]; got {_shape(x)}")
    steps = x.unbind(1 if batch_first else 0)
    outputs = []
    for x_t in steps:
        state = cell(x_t, state)
        outputs.append(state[0] if isinstance(state, tuple) else state)
    if not outputs:
        raise ValueError(f"unroll needs at least one time step; got x of shape {_shape(x)}")
    return torch.stack(outputs, dim=1 if batch_first else 0), state


# --- modules -----------------------------------------------------------------------------------


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


class _Cell(nn.Module):
    """Parameters of one recurrent cell in torch's layout, initialised as torch does: U(-1/√H, 1/√H)."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size = _positive("input_size", input_size)
        self.hidden_size = _positive("hidden_size", hidden_size)
        G, H = self.gates, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G * H, H))
        self.bias_ih = nn.Parameter(torch.empty(G * H)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(G * H)) if bias else None
        bound = 1 / math.sqrt(H)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _zeros(self, x: Tensor) -> Tensor:
        n = x.shape[0] if isinstance(x, Tensor) and x.ndim >= 1 else 1
        return self.weight_hh.new_zeros(n, self.hidden_size)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class RNNCell(_Cell):
    """:func:`rnn_cell` with its own weights; ``forward(x [N, F], h [N, H] = zeros) -> h' [N, H]``.

    Same parameters as ``nn.RNNCell`` (``weight_ih [H, F]``, ``weight_hh [H, H]``,
    ``bias_ih [H]``, ``bias_hh [H]``).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        h = self._zeros(x) if h is None else h
        return rnn_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)


class LSTMCell(_Cell):
    """:func:`lstm_cell` with its own weights; ``forward(x [N, F], (h, c) = zeros) -> (h', c')``.

    Same parameters as ``nn.LSTMCell``: ``weight_ih [4H, F]``, ``weight_hh [4H, H]``,
    biases ``[4H]``, rows in gate order i, f, g, o.
    """

    gates = 4

    def forward(self, x: Tensor, state: LSTMState | None = None) -> LSTMState:
        if state is None:
            state = (self._zeros(x), self._zeros(x))
        return lstm_cell(x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(_Cell):
    """:func:`gru_cell` with its own weights; ``forward(x [N, F], h [N, H] = zeros) -> h' [N, H]``.

    Same parameters as ``nn.GRUCell``: ``weight_ih [3H, F]``, ``weight_hh [3H, H]``,
    biases ``[3H]``, rows in gate order r, z, n.
    """

    gates = 3

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        h = self._zeros(x) if h is None else h
        return gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class _Stack(nn.Module):
    """Stacked recurrent layers over a sequence, with ``nn.RNN``'s parameter names (``weight_ih_l0`` …)."""

    gates = 1
    lstm = False

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = True
    ) -> None:
        super().__init__()
        self.input_size = _positive("input_size", input_size)
        self.hidden_size = _positive("hidden_size", hidden_size)
        self.num_layers = _positive("num_layers", num_layers)
        self.bias, self.batch_first = bias, batch_first
        G, H = self.gates, hidden_size
        bound = 1 / math.sqrt(H)
        for layer in range(num_layers):
            shapes = {"weight_ih": (G * H, input_size if layer == 0 else H), "weight_hh": (G * H, H)}
            if bias:
                shapes |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
            for name, shape in shapes.items():
                self.register_parameter(f"{name}_l{layer}", nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of layer ``layer`` (biases None without bias)."""
        get = lambda name: getattr(self, f"{name}_l{layer}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _step(self, layer: int) -> Callable[[Tensor, State], State]:
        raise NotImplementedError

    def _initial(self, x: Tensor, state: State | None) -> list[State]:
        N = x.shape[0 if self.batch_first else 1]
        expected = (self.num_layers, N, self.hidden_size)
        if state is None:
            zeros = x.new_zeros(expected)
            return [(zeros[k], zeros[k]) if self.lstm else zeros[k] for k in range(self.num_layers)]
        parts = state if self.lstm else (state,)
        if self.lstm and (not isinstance(state, (tuple, list)) or len(state) != 2):
            raise TypeError(f"{type(self).__name__}: the initial state must be a pair (h0, c0); got {_shape(state)}")
        for label, t in zip(("h0", "c0"), parts):
            if not isinstance(t, Tensor) or t.shape != expected:
                raise ValueError(
                    f"{type(self).__name__}: {label} must have shape [layers, N, H] = {list(expected)} "
                    f"for x of shape {_shape(x)}; got {_shape(t)}"
                )
        if self.lstm:
            return [(state[0][k], state[1][k]) for k in range(self.num_layers)]
        return list(state.unbind(0))

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run the stack over ``x [N, T, F]`` (``[T, N, F]`` if not batch first).

        Returns:
            ``(outputs, h_n)`` — or ``(outputs, (h_n, c_n))`` for an LSTM — as torch's
            layers do: ``outputs [N, T, H]`` are the top layer's states at every
            step, ``h_n``/``c_n`` ``[layers, N, H]`` every layer's last state.
        """
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[2] != self.input_size:
            layout = "[N, T, F]" if self.batch_first else "[T, N, F]"
            raise ValueError(
                f"{type(self).__name__} expects x of shape {layout} with F = input_size = {self.input_size}; "
                f"got {_shape(x)}"
            )
        _check_dtypes(type(self).__name__, self.weight_ih_l0.dtype, x=x)
        states = self._initial(x, state)
        finals = []
        out = x
        for layer in range(self.num_layers):
            out, last = unroll(self._step(layer), out, states[layer], self.batch_first)
            finals.append(last)
        if self.lstm:
            return out, (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))
        return out, torch.stack(finals)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bias={self.bias}, batch_first={self.batch_first}"
        )


class RNN(_Stack):
    """A stack of plain RNN layers over a sequence: ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    ``RNN(F, H, num_layers=L)`` has the parameters of ``nn.RNN(F, H, L)``, so
    ``ours.load_state_dict(theirs.state_dict())`` copies weights across;
    layer ``l > 0`` reads the states of layer ``l - 1``. Batch first by default.

    Shapes: ``forward(x [N, T, F], h0 [L, N, H] = zeros) -> (outputs [N, T, H], h_n [L, N, H])``.
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
        bias: bool = True, batch_first: bool = True,
    ) -> None:  # fmt: skip
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first)
        self.nonlinearity = nonlinearity

    def _step(self, layer: int) -> Callable[[Tensor, State], State]:
        weights = self.layer_weights(layer)
        return lambda x_t, h: rnn_cell(x_t, h, *weights, nonlinearity=self.nonlinearity)


class LSTM(_Stack):
    """A stack of LSTM layers (:func:`lstm_cell`) with ``nn.LSTM``'s parameters; batch first by default.

    Shapes: ``forward(x [N, T, F], (h0, c0) [L, N, H] each = zeros) -> (outputs [N, T, H], (h_n, c_n))``.
    """

    gates = 4
    lstm = True

    def _step(self, layer: int) -> Callable[[Tensor, State], State]:
        weights = self.layer_weights(layer)
        return lambda x_t, state: lstm_cell(x_t, state, *weights)


class GRU(_Stack):
    """A stack of GRU layers (:func:`gru_cell`) with ``nn.GRU``'s parameters; batch first by default.

    Shapes: ``forward(x [N, T, F], h0 [L, N, H] = zeros) -> (outputs [N, T, H], h_n [L, N, H])``.
    """

    gates = 3

    def _step(self, layer: int) -> Callable[[Tensor, State], State]:
        weights = self.layer_weights(layer)
        return lambda x_t, h: gru_cell(x_t, h, *weights)
