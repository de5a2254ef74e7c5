"""companion.autograd: the scalar engine against torch.autograd (float64), the MLP, the drawings, the errors."""

from __future__ import annotations

import gc
import itertools
import math
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from companion.autograd import MLP, Activation, Layer, Neuron, Value, cycle_collector_paused, draw_graph, to_dot

TOL = 1e-9


def close(ours: float, theirs: float) -> bool:
    return math.isclose(ours, theirs, rel_tol=TOL, abs_tol=TOL)


def torch_leaf(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def torch_grad(t: torch.Tensor) -> float:
    return 0.0 if t.grad is None else t.grad.item()


# ---- random expression graphs ----------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One operation, written once so that it runs on Values and on torch tensors alike."""

    name: str
    arity: int
    apply: Callable[..., Any] = field(repr=False)
    in_domain: Callable[..., bool] = field(repr=False)  # on the operands' float values


def anywhere(*_: float) -> bool:
    return True


OPS = (
    Op("a+b", 2, lambda a, b: a + b, anywhere),
    Op("a-b", 2, lambda a, b: a - b, anywhere),
    Op("a*b", 2, lambda a, b: a * b, lambda x, y: abs(x * y) < 1e3),
    Op("a/b", 2, lambda a, b: a / b, lambda x, y: abs(y) > 0.1 and abs(x / y) < 1e3),
    Op("a**b", 2, lambda a, b: a**b, lambda x, y: 0.1 < x < 10 and abs(y) < 3),
    Op("-a", 1, lambda a: -a, anywhere),
    Op("0.5+a", 1, lambda a: 0.5 + a, anywhere),
    Op("a+2", 1, lambda a: a + 2, anywhere),
    Op("1.5-a", 1, lambda a: 1.5 - a, anywhere),
    Op("a-1.25", 1, lambda a: a - 1.25, anywhere),
    Op("3*a", 1, lambda a: 3 * a, lambda x: abs(x) < 300),
    Op("a*-2", 1, lambda a: a * -2, lambda x: abs(x) < 300),
    Op("2/a", 1, lambda a: 2.0 / a, lambda x: abs(x) > 0.1),
    Op("a/4", 1, lambda a: a / 4, anywhere),
    Op("a**2", 1, lambda a: a**2, lambda x: abs(x) < 30),
    Op("a**3", 1, lambda a: a**3, lambda x: abs(x) < 10),
    Op("a**-1", 1, lambda a: a**-1, lambda x: abs(x) > 0.1),
    Op("a**-2", 1, lambda a: a**-2, lambda x: abs(x) > 0.3),
    Op("a**0.5", 1, lambda a: a**0.5, lambda x: x > 0.05),
    Op("a**1.5", 1, lambda a: a**1.5, lambda x: 0.05 < x < 100),
    Op("2**a", 1, lambda a: 2.0**a, lambda x: x < 10),
    Op("exp", 1, lambda a: a.exp(), lambda x: x < 5),
    Op("log", 1, lambda a: a.log(), lambda x: x > 0.05),
    Op("tanh", 1, lambda a: a.tanh(), anywhere),
    Op("relu", 1, lambda a: a.relu(), anywhere),
    Op("sigmoid", 1, lambda a: a.sigmoid(), anywhere),
)

Program = tuple[list[float], list[tuple[Op, tuple[int, ...]]]]


@st.composite
def programs(draw: st.DrawFn) -> Program:
    """Leaf values and a list of steps ``(op, operand indices)``; an operand may be any earlier node, twice too."""
    leaves = draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=4))
    values = [torch.tensor(x, dtype=torch.float64) for x in leaves]
    steps = []
    for _ in range(draw(st.integers(1, 14))):
        op = draw(st.sampled_from(OPS))
        candidates = [
            ix
            for ix in itertools.product(range(len(values)), repeat=op.arity)
            if op.in_domain(*(values[i].item() for i in ix))
        ]
        if candidates:
            operands = draw(st.sampled_from(candidates))
            values.append(op.apply(*(values[i] for i in operands)))
            steps.append((op, operands))
    return leaves, steps


def run(program: Program, make_leaf: Callable[[float], Any]) -> tuple[list[Any], Any]:
    """All nodes of the program (leaves first) and the root: the sum of the nodes no step used."""
    leaves, steps = program
    nodes = [make_leaf(x) for x in leaves]
    for op, operands in steps:
        nodes.append(op.apply(*(nodes[i] for i in operands)))
    used = {i for _, operands in steps for i in operands}
    outputs = [node for i, node in enumerate(nodes) if i not in used]
    return nodes, sum(outputs[1:], outputs[0])


@settings(max_examples=300, deadline=None)
@given(programs())
def test_random_graphs_match_torch(program: Program) -> None:
    nodes, root = run(program, Value)
    root.backward()
    t_nodes, t_root = run(program, torch_leaf)
    for t in t_nodes:
        if not t.is_leaf:
            t.retain_grad()
    t_root.backward()
    assert close(root.data, t_root.item()), (root.data, t_root.item())
    for i, (node, t) in enumerate(zip(nodes, t_nodes)):
        assert close(node.data, t.item()), (i, node.data, t.item())
        assert close(node.grad, torch_grad(t)), (i, node.grad, torch_grad(t))


@settings(max_examples=100, deadline=None)
@given(programs())
def test_topological_order_lists_each_node_once_after_its_parents(program: Program) -> None:
    nodes, root = run(program, Value)
    order = root.topological_order()
    assert len({id(n) for n in order}) == len(order)
    assert order[-1] is root
    place = {id(n): i for i, n in enumerate(order)}
    assert all(place[id(p)] < place[id(n)] for n in order for p in n.parents)
    assert all(id(n) in place for n in nodes)  # every node of the program reaches the root


# ---- the rules, one by one --------------------------------------------------------------


def test_reused_node_sums_both_paths() -> None:
    a = Value(3.0)
    out = a * a + a  # d/da = 2a + 1
    out.backward()
    assert out.data == 12.0
    assert a.grad == 7.0
    at = torch_leaf(3.0)
    (at * at + at).backward()
    assert close(a.grad, at.grad.item())


def test_numbers_on_either_side() -> None:
    v = Value(2.0)
    assert (2 * v).data == 4.0 and (v * 2).data == 4.0
    assert (1 / v).data == 0.5 and (v / 4).data == 0.5
    assert (3 - v).data == 1.0 and (v - 3).data == -1.0
    assert (1 + v).data == 3.0 and (-v).data == -2.0
    assert (v**3).data == 8.0 and (2**v).data == 4.0 and (v ** Value(3.0)).data == 8.0
    assert (Value(np.float32(1.5)) * np.float64(2.0)).data == 3.0


def test_division_and_powers_gradients() -> None:
    x, y = Value(1.5), Value(-0.7)
    out = x / y + x**3 + y**-2 + x ** y.exp() + 2.0**x
    out.backward()
    xt, yt = torch_leaf(1.5), torch_leaf(-0.7)
    out_t = xt / yt + xt**3 + yt**-2 + xt ** yt.exp() + 2.0**xt
    out_t.backward()
    assert close(out.data, out_t.item())
    assert close(x.grad, xt.grad.item()) and close(y.grad, yt.grad.item())


def test_sigmoid_is_stable_for_large_inputs() -> None:
    for x in (-800.0, -30.0, 0.0, 30.0, 800.0):
        v = Value(x)
        s = v.sigmoid()
        s.backward()
        xt = torch_leaf(x)
        st_ = xt.sigmoid()
        st_.backward()
        assert close(s.data, st_.item()) and close(v.grad, xt.grad.item())


def test_relu_gradient_at_zero_is_zero_as_in_torch() -> None:
    v = Value(0.0)
    v.relu().backward()
    xt = torch_leaf(0.0)
    xt.relu().backward()
    assert v.grad == xt.grad.item() == 0.0


def test_a_new_operation_needs_only_its_local_gradient() -> None:
    x = Value(0.4)
    y = Value(math.sin(x.data), parents=(x,), local_grads=(math.cos(x.data),), op="sin") * x
    y.backward()
    xt = torch_leaf(0.4)
    (xt.sin() * xt).backward()
    assert close(x.grad, xt.grad.item())


# ---- accumulation and zero_grad ---------------------------------------------------------


def test_grads_accumulate_across_backward_calls_until_reset() -> None:
    a, b = Value(0.8), Value(-1.3)
    out = (a * b).tanh() * a + (b / a).exp()  # interior nodes, so a wrong second pass would double-count
    out.backward()
    once = (a.grad, b.grad)
    out.backward()
    assert close(a.grad, 2 * once[0]) and close(b.grad, 2 * once[1])

    at, bt = torch_leaf(0.8), torch_leaf(-1.3)
    out_t = (at * bt).tanh() * at + (bt / at).exp()
    out_t.backward(retain_graph=True)
    out_t.backward()
    assert close(a.grad, at.grad.item()) and close(b.grad, bt.grad.item())

    out.zero_grad()
    assert all(node.grad == 0.0 for node in out.topological_order())
    out.backward()
    assert (a.grad, b.grad) == once


def test_backward_from_a_leaf_accumulates_too() -> None:
    v = Value(3.0)
    v.backward()
    v.backward()
    assert v.grad == 2.0


def test_module_zero_grad_resets_parameters() -> None:
    model = MLP(2, [3, 1], rng=random.Random(1))
    loss = model([0.5, -1.0])[0] ** 2
    loss.backward()
    first = [p.grad for p in model.parameters()]
    assert any(g != 0.0 for g in first)
    loss.backward()
    assert all(close(p.grad, 2 * g) for p, g in zip(model.parameters(), first))
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_deep_chain_has_no_recursion_error() -> None:
    depth = max(5_000, 5 * sys.getrecursionlimit())
    x, xt = Value(0.3), torch_leaf(0.3)
    v, vt = x, xt
    for _ in range(depth):
        v = (v * 0.9 + x * 0.1).tanh()
        vt = (vt * 0.9 + xt * 0.1).tanh()
    v.backward()
    vt.backward()
    assert len(v.topological_order()) > 4 * depth
    assert close(v.data, vt.item()) and close(x.grad, xt.grad.item())


# ---- the MLP --------------------------------------------------------------------------


def torch_twin(model: MLP, activation: str) -> torch.nn.Sequential:
    """The same network as ``model`` in torch, float64, with copies of its weights."""
    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}[activation]
    modules: list[torch.nn.Module] = []
    for i, layer in enumerate(model.layers):
        linear = torch.nn.Linear(len(layer.neurons[0].w), len(layer.neurons), dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64))
            linear.bias.copy_(torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64))
        modules += [linear] if i == len(model.layers) - 1 else [linear, act()]
    return torch.nn.Sequential(*modules)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_mlp_gradients_match_torch(activation: Activation) -> None:
    rng = random.Random(7)
    model = MLP(3, [5, 4, 2], activation, rng=rng)
    xs = [[rng.uniform(-2, 2) for _ in range(3)] for _ in range(6)]
    ys = [[rng.uniform(-1, 1) for _ in range(2)] for _ in range(6)]
    loss = sum((o - y) ** 2 for x, target in zip(xs, ys) for o, y in zip(model(x), target)) / len(xs)
    model.zero_grad()
    loss.backward()

    twin = torch_twin(model, activation)
    X, Y = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)
    loss_t = ((twin(X) - Y) ** 2).sum() / len(xs)
    loss_t.backward()
    linears = [m for m in twin if isinstance(m, torch.nn.Linear)]
    expected = torch.cat([torch.cat([lin.weight.grad, lin.bias.grad[:, None]], dim=1).flatten() for lin in linears])
    assert close(loss.data, loss_t.item())
    assert len(model.parameters()) == len(expected) == 5 * 4 + 4 * 6 + 2 * 5
    assert all(close(p.grad, g) for p, g in zip(model.parameters(), expected.tolist()))


def test_mlp_initialisation_is_bounded_and_reproducible() -> None:
    a, b = MLP(4, [8, 1], rng=random.Random(3)), MLP(4, [8, 1], rng=random.Random(3))
    assert [p.data for p in a.parameters()] == [p.data for p in b.parameters()]
    random.seed(5)
    c = MLP(4, [8, 1])
    random.seed(5)
    d = MLP(4, [8, 1])
    assert [p.data for p in c.parameters()] == [p.data for p in d.parameters()]
    first, second = a.layers
    assert all(abs(p.data) <= 1 / math.sqrt(4) for p in first.parameters())
    assert all(abs(p.data) <= 1 / math.sqrt(8) for p in second.parameters())
    assert [n.activation for n in first.neurons + second.neurons] == ["tanh"] * 8 + ["linear"]
    assert len(Layer(3, 2).parameters()) == 8 and len(Neuron(3).parameters()) == 4


def train_epochs(epochs: int) -> list[float]:
    """A few epochs of gradient descent on an MLP; its weights after them."""
    rng = random.Random(1)
    model = MLP(2, [6, 6, 1], rng=rng)
    points = [[rng.uniform(-1, 1), rng.uniform(-1, 1)] for _ in range(30)]
    labels = [1.0 if x * y > 0 else -1.0 for x, y in points]
    for _ in range(epochs):
        loss = sum((1 + (-y * model(x)[0]).exp()).log() for x, y in zip(points, labels)) / len(points)
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.5 * p.grad
    return [p.data for p in model.parameters()]


def test_cycle_collector_paused_trains_the_same_weights_and_leaves_no_garbage() -> None:
    assert gc.isenabled()
    running = train_epochs(3)
    gc.collect()
    with cycle_collector_paused():
        assert not gc.isenabled()
        paused = train_epochs(3)
        unreachable = gc.collect()  # what reference counting left behind: cycles
    assert gc.isenabled()
    assert paused == running
    assert unreachable == 0


def test_cycle_collector_paused_restores_the_previous_state() -> None:
    with pytest.raises(RuntimeError), cycle_collector_paused():
        raise RuntimeError("a failing cell")
    assert gc.isenabled()
    gc.disable()
    try:
        with cycle_collector_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


# ---- drawings ----------------------------------------------------------------------------


def small_graph() -> Value:
    a, b = Value(2.0, label="a"), Value(-3.0, label="b|<x>")
    out = (a * b + a).tanh() * 2
    out.label = "out"
    out.backward()
    return out


def test_draw_graph_shows_every_node_with_data_and_grad() -> None:
    root = small_graph()
    nodes = root.topological_order()
    interior = [n for n in nodes if n.parents]
    fig = draw_graph(root)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert sum(isinstance(p, FancyBboxPatch) for p in ax.patches) == len(nodes)
    assert sum(isinstance(p, Circle) for p in ax.patches) == len(interior)
    edges = sum(len(n.parents) for n in nodes) + len(interior)
    assert sum(isinstance(p, FancyArrowPatch) for p in ax.patches) == edges
    texts = [t.get_text() for t in ax.texts]
    for node in nodes:
        assert any(f"data {node.data:.4g}" in t and f"grad {node.grad:.4g}" in t for t in texts)
    assert sorted(t for t in texts if "data" not in t) == sorted(n.op for n in interior)
    plt.close(fig)


def test_draw_graph_refuses_large_graphs() -> None:
    v = Value(1.0)
    for _ in range(40):
        v = v + 1
    with pytest.raises(ValueError, match="81 nodes"):
        draw_graph(v)
    with pytest.raises(TypeError, match="expects a Value; got float"):
        draw_graph(1.0)  # type: ignore[arg-type]


def test_to_dot_lists_nodes_and_edges() -> None:
    root = small_graph()
    nodes = root.topological_order()
    dot = to_dot(root)
    assert dot.startswith("digraph {") and dot.endswith("}")
    records = re.findall(r'^  v\d+ \[label="\{(.*)\}"\];$', dot, flags=re.M)
    assert len(records) == len(nodes)
    edges = sum(len(n.parents) for n in nodes) + sum(1 for n in nodes if n.parents)
    assert dot.count(" -> ") == edges
    assert r"b\|\<x\>" in dot and "out | data" in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is optional and not installed")
def test_to_dot_renders_with_graphviz() -> None:
    svg = subprocess.run(["dot", "-Tsvg"], input=to_dot(small_graph()), capture_output=True, text=True, check=True)
    assert "<svg" in svg.stdout and not svg.stderr


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind", "message"),
    [
        (lambda: Value(1) + "a", TypeError, r"Value \+ expects a Value or a real number.*got str"),
        (lambda: Value(1) * [1, 2], TypeError, r"Value \* expects .*got list"),
        (lambda: Value(1) - torch.tensor(1.0), TypeError, r"Value - expects .*got Tensor"),
        (lambda: torch.tensor(1.0) + Value(1), TypeError, r"Value \+ expects .*got Tensor"),
        (lambda: Value(2) ** "3", TypeError, r"Value \*\* expects .*got str"),
        (lambda: Value("1.0"), TypeError, r"Value\(\) expects a real number \(int, float\); got str"),
        (lambda: Value(True), TypeError, r"got bool"),
        (lambda: Value(1.0, parents=(Value(1.0),)), ValueError, "one local gradient per parent; got 1 and 0"),
        (lambda: Value(1.0, parents=(1.0,), local_grads=(1.0,)), TypeError, "parents must be Values; got float"),
        (
            lambda: Value(1.0, (Value(1.0),), (torch.ones(()),)),
            TypeError,
            r"local_grads expects real numbers.*got Tensor",
        ),
        (lambda: Value(1) / 0, ZeroDivisionError, "divisor Value is zero"),
        (lambda: Value(0).log(), ValueError, "log needs a positive input; got 0.0"),
        (lambda: Value(-1).log(), ValueError, "log needs a positive input; got -1.0"),
        (lambda: Value(-8) ** (1 / 3), ValueError, "negative base needs an integer exponent"),
        (lambda: Value(0) ** -1, ValueError, "needs k >= 1"),
        (lambda: Value(-2) ** Value(2), ValueError, "needs x > 0"),
        (lambda: (-2) ** Value(2), ValueError, "needs x > 0"),
        (lambda: Value(1000).exp(), OverflowError, "at most 709.78"),
        (lambda: MLP(2, [3, 1])([1.0, 2.0, 3.0]), ValueError, "takes 2 inputs; got 3"),
        (lambda: MLP(2, []), ValueError, "at least one layer"),
        (lambda: Neuron(0), ValueError, "n_inputs must be a positive int; got 0"),
        (lambda: Layer(2, 2.5), ValueError, "n_outputs must be a positive int; got 2.5"),
        (lambda: MLP(2, [3, 1], activation="gelu"), ValueError, "activation must be one of"),
    ],
)
def test_bad_input_gets_a_clear_error(make: Callable[[], object], kind: type[Exception], message: str) -> None:
    with pytest.raises(kind, match=message):
        make()
