"""A scalar reverse-mode automatic differentiation engine, and a small MLP built on it.

A :class:`Value` holds one Python float and remembers which Values it was computed
from and the local derivative with respect to each of them, so every expression
builds a graph. ``root.backward()`` visits that graph once, from ``root`` back to
its inputs in reverse topological order, and applies the chain rule at each node:

    ∂root/∂parent  +=  ∂root/∂node · ∂node/∂parent

Each operation below states its local derivatives ∂node/∂parent right where it
computes its value. ``torch.autograd`` does the same for tensors.

Gradients accumulate, as in PyTorch. ``backward()`` *adds* ∂root/∂leaf to the
``grad`` of every leaf (a Value you made yourself rather than an operation), so a
second ``backward()``, or a parameter used by two losses, sums up. Reset before the
next pass: ``root.zero_grad()`` zeroes every node of one graph, ``model.zero_grad()``
the parameters of a :class:`Module`. The ``grad`` of an interior node is rewritten
by each ``backward()``: it holds ∂root/∂node of the latest pass.

:func:`draw_graph` (matplotlib) and :func:`to_dot` (Graphviz's DOT language) picture a
graph with every node's data and grad. :class:`Neuron`, :class:`Layer` and :class:`MLP`
make a small neural network of Values whose parameters are leaves. Training one builds graphs of
hundreds of thousands of Values; :func:`cycle_collector_paused` keeps Python's cycle collector from
walking them again and again.
"""

from __future__ import annotations

import gc
import math
import numbers
import random
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_MAX_EXP = math.log(sys.float_info.max)  # ≈ 709.78: e^x overflows a float beyond this


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _type_error(what: str, got: object, expected: str = "a Value or a real number (int, float)") -> TypeError:
    shown = repr(got)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return TypeError(f"{what} expects {expected}; got {type(got).__name__}: {shown}")


def _as_value(x: Value | float, op: str) -> Value:
    """``x`` itself if it is a Value, else ``x`` as a constant leaf."""
    if isinstance(x, Value):
        return x
    if _is_real(x):
        return Value(x)
    raise _type_error(f"Value {op}", x)


def _node(data: float, parents: tuple[Value, ...], local_grads: tuple[float, ...], op: str) -> Value:
    """The Value an operation below makes: ``Value(data, parents, local_grads, op)`` without the checks.

    The operations pass floats and Values only, so the checks of ``Value()`` (which
    guard what a user passes) would only cost time: a network of Values makes one
    node per multiplication and addition, hundreds of thousands per training epoch.
    """
    node = object.__new__(Value)
    node.data, node.grad, node.parents, node.local_grads, node.op, node.label = data, 0.0, parents, local_grads, op, ""
    return node


class Value:
    """One scalar of an expression graph: its value, its gradient, and where it came from.

    ``Value(2.0, label="a")`` is a leaf. Operations make new Values: ``+ - * / **`` with
    another Value or an int/float on either side, unary ``-``, and the methods
    :meth:`exp`, :meth:`log`, :meth:`tanh`, :meth:`relu`, :meth:`sigmoid`.

    A new operation needs only its value and local derivatives, e.g. sin:
    ``Value(math.sin(x.data), parents=(x,), local_grads=(math.cos(x.data),), op="sin")``.

    Attributes:
        data: the value, a Python float (float64).
        grad: ∂root/∂self after ``root.backward()``, a float; 0.0 until then.
        parents: the Values this one was computed from; ``()`` for a leaf.
        local_grads: ∂self/∂parent for each parent, floats, in the same order.
        op: the operation that made this Value (``""`` for a leaf), e.g. ``"*"``, ``"**2"``.
        label: an optional name shown by :func:`draw_graph` and :func:`to_dot`.
    """

    __slots__ = ("data", "grad", "label", "local_grads", "op", "parents")

    def __init__(
        self,
        data: float,
        parents: tuple[Value, ...] = (),
        local_grads: tuple[float, ...] = (),
        op: str = "",
        label: str = "",
    ) -> None:
        if type(data) is not float and not _is_real(data):  # the float test first: it is the fast path
            raise _type_error("Value()", data, "a real number (int, float)")
        if len(parents) != len(local_grads):
            raise ValueError(f"Value() needs one local gradient per parent; got {len(parents)} and {len(local_grads)}")
        for parent in parents:
            if not isinstance(parent, Value):
                raise TypeError(f"Value() parents must be Values; got {type(parent).__name__}: {parent!r}")
        for local in local_grads:
            if type(local) is not float and not _is_real(local):
                raise _type_error("Value() local_grads", local, "real numbers (int, float)")
        self.data = float(data)
        self.grad = 0.0
        self.parents = tuple(parents)
        self.local_grads = tuple(local_grads)
        self.op = op
        self.label = label

    def __repr__(self) -> str:
        name = f"{self.label}: " if self.label else ""
        return f"Value({name}data={self.data:.6g}, grad={self.grad:.6g})"

    # ---- operations, each with its local derivatives ---------------------------------

    def __add__(self, other: Value | float) -> Value:
        """self + other;  ∂/∂self = 1, ∂/∂other = 1."""
        if type(other) is not Value:
            other = _as_value(other, "+")
        return _node(self.data + other.data, (self, other), (1.0, 1.0), "+")

    def __sub__(self, other: Value | float) -> Value:
        """self − other;  ∂/∂self = 1, ∂/∂other = −1."""
        other = _as_value(other, "-")
        return _node(self.data - other.data, (self, other), (1.0, -1.0), "-")

    def __mul__(self, other: Value | float) -> Value:
        """self · other;  ∂/∂self = other, ∂/∂other = self."""
        if type(other) is not Value:
            other = _as_value(other, "*")
        return _node(self.data * other.data, (self, other), (other.data, self.data), "*")

    def __truediv__(self, other: Value | float) -> Value:
        """self / other;  ∂/∂self = 1/other, ∂/∂other = −self/other²."""
        other = _as_value(other, "/")
        if other.data == 0:
            raise ZeroDivisionError(f"Value division: {self.data} / 0 (the divisor Value is zero)")
        return _node(self.data / other.data, (self, other), (1 / other.data, -self.data / other.data**2), "/")

    def __pow__(self, other: Value | float) -> Value:
        """self ** k for a number k: ∂/∂self = k·self^(k−1).

        self ** y for a Value y (self > 0): ∂/∂self = y·self^(y−1), ∂/∂y = self^y·ln(self).
        """
        x = self.data
        if isinstance(other, Value):
            if x <= 0:
                raise ValueError(f"x ** y with a Value exponent needs x > 0 (∂/∂y = x^y·ln x); got x = {x}")
            out = x**other.data
            return _node(out, (self, other), (other.data * x ** (other.data - 1), out * math.log(x)), "**")
        if not _is_real(other):
            raise _type_error("Value **", other)
        k = float(other)
        if x < 0 and not k.is_integer():
            raise ValueError(f"({x}) ** {k}: a negative base needs an integer exponent (the result would be complex)")
        if x == 0 and k < 1:
            raise ValueError(f"0 ** {k}: at x = 0 the power rule k·x^(k−1) needs k >= 1")
        return _node(x**k, (self,), (k * x ** (k - 1),), f"**{k:g}")

    def __neg__(self) -> Value:
        """−self;  ∂/∂self = −1."""
        return _node(-self.data, (self,), (-1.0,), "neg")

    def __radd__(self, other: float) -> Value:
        """other + self, for a number on the left."""
        return self + other

    def __rsub__(self, other: float) -> Value:
        """other − self, for a number on the left."""
        return _as_value(other, "-") - self

    def __rmul__(self, other: float) -> Value:
        """other · self, for a number on the left."""
        return self * other

    def __rtruediv__(self, other: float) -> Value:
        """other / self, for a number on the left."""
        return _as_value(other, "/") / self

    def __rpow__(self, other: float) -> Value:
        """other ** self, for a positive number on the left."""
        return _as_value(other, "**") ** self

    def exp(self) -> Value:
        """e^x;  d/dx = e^x."""
        if self.data > _MAX_EXP:
            raise OverflowError(f"exp({self.data}) overflows a float: the input must be at most {_MAX_EXP:.2f}")
        out = math.exp(self.data)
        return _node(out, (self,), (out,), "exp")

    def log(self) -> Value:
        """ln x for x > 0;  d/dx = 1/x."""
        if self.data <= 0:
            raise ValueError(f"log needs a positive input; got {self.data}")
        return _node(math.log(self.data), (self,), (1 / self.data,), "log")

    def tanh(self) -> Value:
        """tanh x;  d/dx = 1 − tanh² x."""
        t = math.tanh(self.data)
        return _node(t, (self,), (1 - t * t,), "tanh")

    def relu(self) -> Value:
        """max(0, x);  d/dx = 1 for x > 0, else 0 (0 at x = 0, as in PyTorch)."""
        active = self.data > 0
        return _node(self.data if active else 0.0, (self,), (1.0 if active else 0.0,), "relu")

    def sigmoid(self) -> Value:
        """σ(x) = 1 / (1 + e^−x), computed without overflow;  dσ/dx = σ(1 − σ)."""
        e = math.exp(-abs(self.data))
        s = 1 / (1 + e) if self.data >= 0 else e / (1 + e)
        return _node(s, (self,), (s * (1 - s),), "sigmoid")

    # ---- the backward pass ------------------------------------------------------------

    def topological_order(self) -> list[Value]:
        """Every node of the graph that ends at ``self``, each after all of its parents.

        An iterative depth-first search, so graphs deeper than Python's recursion limit work.
        """
        order: list[Value] = []
        seen: set[Value] = set()  # a Value hashes by identity
        stack: list[tuple[Value, bool]] = [(self, False)]
        push, pop = stack.append, stack.pop
        while stack:
            node, parents_done = pop()
            if parents_done:
                order.append(node)
            elif node not in seen:
                seen.add(node)
                push((node, True))
                for parent in reversed(node.parents):
                    if parent not in seen:
                        push((parent, False))
        return order

    def backward(self) -> None:
        """Add ∂self/∂leaf to ``leaf.grad`` for every leaf of the graph (the chain rule, once per edge).

        Interior nodes get ∂self/∂node of this pass. Leaves accumulate across calls:
        call :meth:`zero_grad` (or ``Module.zero_grad``) to start from zero.
        """
        order = self.topological_order()
        for node in order:
            if node.parents:
                node.grad = 0.0
        self.grad += 1.0
        for node in reversed(order):
            for parent, local in zip(node.parents, node.local_grads):
                parent.grad += local * node.grad

    def zero_grad(self) -> None:
        """Set ``grad`` to 0.0 on every node of the graph that ends at ``self``, leaves included."""
        for node in self.topological_order():
            node.grad = 0.0


@contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector inside the ``with`` block; its previous state comes back on exit.

    Python frees an object as soon as nothing refers to it (reference counting); the
    cycle collector exists only for groups of objects that refer to each other. It
    runs after every 700 or so new objects, and every so often it walks *every*
    object in memory — with torch and matplotlib loaded, hundreds of thousands. One
    training epoch of an :class:`MLP` on a few hundred points makes well over
    100,000 Values (and a tuple or two each), so the collector walks everything many
    times per epoch and finds nothing: a graph of Values has no cycles (a node refers
    only to its parents), and reference counting frees it when the last reference to
    its root goes. Pausing the collector around a training loop makes the same
    computation several times faster (``bench/autograd_moons.py`` measures it); the
    results are the same to the last bit. ``timeit`` pauses it for the same reason.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---- drawing a graph ------------------------------------------------------------------

_COLUMN = 3.4  # data units between the centres of two columns of boxes
_BOX_W, _BOX_H = 2.0, 0.72
_OP_R, _OP_GAP = 0.3, 0.55  # op circle radius, and its centre's distance left of the box
_INCH = 0.75  # inches per data unit


def _layout(root: Value) -> tuple[dict[Value, tuple[float, float]], int, int]:
    """Positions ``(x, y)`` of every node, inputs left, ``root`` rightmost; and the grid's columns and rows."""
    order = root.topological_order()
    column: dict[Value, int] = {}
    for node in order:  # one column right of its latest input
        column[node] = 1 + max((column[p] for p in node.parents), default=-1)
    first_use: dict[Value, int] = {}
    for node in order:
        for parent in node.parents:
            first_use[parent] = min(first_use.get(parent, column[node]), column[node])
    for leaf in (node for node in order if not node.parents and node is not root):
        column[leaf] = first_use[leaf] - 1  # just left of its first use
    columns: list[list[Value]] = [[] for _ in range(column[root] + 1)]
    for node in order:
        columns[column[node]].append(node)
    y: dict[Value, float] = {}
    for nodes in columns:  # sort each column by its parents' mean height, which limits crossings
        nodes.sort(key=lambda n: -sum(y[p] for p in n.parents) / len(n.parents) if n.parents else 0.0)
        for i, node in enumerate(nodes):
            y[node] = (len(nodes) - 1) / 2 - i
    position = {node: (column[node] * _COLUMN, y[node]) for node in order}
    return position, len(columns), max(len(nodes) for nodes in columns)


def draw_graph(root: Value, max_nodes: int = 60) -> Figure:
    """Draw the expression graph that ends at ``root`` with matplotlib; inputs on the left.

    Each Value is a box with its label, ``data`` and ``grad`` (call ``root.backward()``
    first to see gradients); the circle in front of a box names the operation that
    made it, and arrows run into that circle from the operation's inputs. Leaves
    are blue, the root orange.

    Returns:
        a new pyplot ``matplotlib.figure.Figure``: end a notebook cell with ``plt.show()``
        as for any plot; a script can call ``fig.savefig(path)``.

    Raises:
        ValueError: the graph has more than ``max_nodes`` nodes (too many to read).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    if not isinstance(root, Value):
        raise TypeError(f"draw_graph expects a Value; got {type(root).__name__}")
    n_nodes = len(root.topological_order())
    if n_nodes > max_nodes:
        raise ValueError(f"draw_graph draws small expressions: this graph has {n_nodes} nodes (max_nodes={max_nodes})")
    position, n_columns, n_rows = _layout(root)
    left, right = -_BOX_W / 2 - 0.2, (n_columns - 1) * _COLUMN + _BOX_W / 2 + 0.2
    bottom, top = -n_rows / 2, n_rows / 2
    fig = plt.figure(figsize=((right - left) * _INCH, (top - bottom) * _INCH))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", mutation_scale=10, shrinkA=0, shrinkB=0, color="0.35", lw=1)
    for node, (x, y) in position.items():
        colour = "#fdd9a0" if node is root else "#cfe3f7" if not node.parents else "#eeeeee"
        ax.add_patch(FancyBboxPatch((x - _BOX_W / 2, y - _BOX_H / 2), _BOX_W, _BOX_H,
                                    boxstyle="round,pad=0.03", fc=colour, ec="0.3"))  # fmt: skip
        lines = [node.label] if node.label else []
        ax.text(x, y, "\n".join([*lines, f"data {node.data:.4g}", f"grad {node.grad:.4g}"]),
                ha="center", va="center", fontsize=8, family="monospace")  # fmt: skip
        if node.parents:
            ox = x - _BOX_W / 2 - _OP_GAP
            ax.add_patch(Circle((ox, y), _OP_R, fc="white", ec="0.3"))
            ax.text(ox, y, node.op, ha="center", va="center", fontsize=8)
            ax.add_patch(FancyArrowPatch((ox + _OP_R, y), (x - _BOX_W / 2, y), **arrow))
            for parent in node.parents:
                px, py = position[parent]
                dx, dy = ox - px - _BOX_W / 2, y - py
                end = (ox - _OP_R * dx / math.hypot(dx, dy), y - _OP_R * dy / math.hypot(dx, dy))
                ax.add_patch(FancyArrowPatch((px + _BOX_W / 2, py), end, **arrow))
    return fig


def _dot_escape(text: str) -> str:
    return re.sub(r'([{}|<>"\\])', r"\\\1", text)


def to_dot(root: Value) -> str:
    """The graph that ends at ``root`` in Graphviz's DOT language, inputs on the left.

    Nothing here needs Graphviz; where it is installed, ``dot -Tsvg graph.dot`` draws
    the text, or in a notebook ``graphviz.Source(to_dot(root))``. Each Value is a record
    ``label | data | grad``, each operation a circle between its inputs and its result.
    """
    names = {node: f"v{i}" for i, node in enumerate(root.topological_order())}
    lines = ["digraph {", "  rankdir=LR;", "  node [shape=record, fontsize=10];"]
    for node, name in names.items():
        fields = [_dot_escape(node.label)] if node.label else []
        fields += [f"data {node.data:.4g}", f"grad {node.grad:.4g}"]
        lines.append(f'  {name} [label="{{{" | ".join(fields)}}}"];')
        if node.parents:
            lines.append(f'  {name}_op [label="{_dot_escape(node.op)}", shape=circle];')
            lines.append(f"  {name}_op -> {name};")
            lines += [f"  {names[parent]} -> {name}_op;" for parent in node.parents]
    lines.append("}")
    return "\n".join(lines)


# ---- a small neural network of Values -------------------------------------------------

Activation = Literal["tanh", "relu", "sigmoid", "linear"]
ACTIVATIONS: dict[str, Callable[[Value], Value]] = {
    "tanh": Value.tanh,
    "relu": Value.relu,
    "sigmoid": Value.sigmoid,
    "linear": lambda z: z,
}
"""The activations a :class:`Neuron` accepts, by name, each a function of one :class:`Value`."""


def _check_size(n: object, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int; got {n!r}")


def _check_activation(activation: object) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")


class Module:
    """Anything with trainable Values: lists them and resets their gradients."""

    def parameters(self) -> list[Value]:
        """The trainable leaves, in a fixed order."""
        raise NotImplementedError(f"{type(self).__name__} must define parameters()")

    def zero_grad(self) -> None:
        """Set every parameter's ``grad`` to 0.0; call it before each ``backward()``, since grads accumulate."""
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    """One neuron: x ↦ activation(w · x + b) for ``n_inputs`` numbers x.

    Weights and bias start uniform in [−1/√n_inputs, 1/√n_inputs], as in ``torch.nn.Linear``,
    drawn from ``rng`` (default: Python's ``random``, seeded by ``config.seed_everything``).
    """

    def __init__(self, n_inputs: int, activation: Activation = "tanh", rng: random.Random | None = None) -> None:
        _check_size(n_inputs, "n_inputs")
        _check_activation(activation)
        uniform = random.uniform if rng is None else rng.uniform
        bound = 1 / math.sqrt(n_inputs)
        self.w = [Value(uniform(-bound, bound)) for _ in range(n_inputs)]
        self.b = Value(uniform(-bound, bound))
        self.activation = activation

    def __call__(self, x: Sequence[Value | float]) -> Value:
        """The neuron's output, a Value, for ``len(x) == n_inputs`` inputs."""
        if len(x) != len(self.w):
            raise ValueError(f"this neuron takes {len(self.w)} inputs; got {len(x)}")
        z = sum((w * xi for w, xi in zip(self.w, x)), self.b)
        return ACTIVATIONS[self.activation](z)

    def parameters(self) -> list[Value]:
        """``[w_1, …, w_n, b]``."""
        return [*self.w, self.b]


class Layer(Module):
    """``n_outputs`` neurons reading the same ``n_inputs`` numbers: x ↦ [neuron(x) for each neuron]."""

    def __init__(
        self, n_inputs: int, n_outputs: int, activation: Activation = "tanh", rng: random.Random | None = None
    ) -> None:
        _check_size(n_outputs, "n_outputs")
        self.neurons = [Neuron(n_inputs, activation, rng) for _ in range(n_outputs)]

    def __call__(self, x: Sequence[Value | float]) -> list[Value]:
        """``n_outputs`` Values."""
        return [neuron(x) for neuron in self.neurons]

    def parameters(self) -> list[Value]:
        """Each neuron's parameters in turn: ``n_outputs · (n_inputs + 1)`` Values."""
        return [p for neuron in self.neurons for p in neuron.parameters()]


class MLP(Module):
    """A multi-layer perceptron of Values: hidden layers with ``activation``, then a linear layer.

    ``MLP(2, [16, 16, 1])`` maps 2 numbers through two hidden layers of 16 tanh neurons
    to 1 output; ``sizes[-1]`` is the number of outputs.
    """

    def __init__(
        self, n_inputs: int, sizes: Sequence[int], activation: Activation = "tanh", rng: random.Random | None = None
    ) -> None:
        if len(sizes) == 0:
            raise ValueError("sizes must list at least one layer size, e.g. [16, 1]")
        widths = [n_inputs, *sizes]
        last = len(sizes) - 1
        self.layers = [
            Layer(widths[i], widths[i + 1], activation if i < last else "linear", rng) for i in range(len(sizes))
        ]

    def __call__(self, x: Sequence[Value | float]) -> list[Value]:
        """``sizes[-1]`` output Values for ``n_inputs`` inputs."""
        outputs = self.layers[0](x)
        for layer in self.layers[1:]:
            outputs = layer(outputs)
        return outputs

    def parameters(self) -> list[Value]:
        """Every layer's parameters in turn."""
        return [p for layer in self.layers for p in layer.parameters()]
