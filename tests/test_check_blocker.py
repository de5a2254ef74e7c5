"""companion.check's blocking of forbidden operations: the ways around it that a student's function might
take, and a decorated helper that must not be mistaken for a forbidden one."""

from __future__ import annotations

import threading
import types

import pytest
import torch
from torch.nn import functional as F

from companion import check, lora, scale
from companion.models import base


def _rms_backward(x, weight, eps, grad_y):
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    x_hat, g = x * r, grad_y * weight
    return r * (g - x_hat * (g * x_hat).mean(-1, keepdim=True)), (grad_y * x_hat).flatten(0, -2).sum(0)


def _by_autograd(x, weight, eps, grad_y):
    leaves = [t.clone().requires_grad_() for t in (x, weight)]
    return torch.autograd.grad(F.rms_norm(leaves[0], x.shape[-1:], leaves[1], eps), leaves, grad_y)


def test_a_right_answer_that_calls_a_decorated_helper_of_its_own_passes():
    @torch.no_grad()
    def scale(alpha, A):
        return alpha / A.shape[0]

    def lora_merge(weight, A, B, alpha, rank_stabilized, transposed):
        update = scale(alpha, A) * (A.shape[0] ** 0.5 if rank_stabilized else 1) * B @ A
        return weight + (update.T if transposed else update)

    assert check.lora_merge(lora_merge)


def test_a_forbidden_function_behind_a_decorator_is_blocked_by_its_own_body():
    def merged(weight, A, B, alpha, rank_stabilized, transposed):
        layer = torch.nn.Linear(A.shape[1], B.shape[0]).double()
        with torch.no_grad():
            layer.weight.copy_(weight.T if transposed else weight)
        adapted = lora.LoRALinear(layer, r=A.shape[0], alpha=alpha)
        with torch.no_grad():
            adapted.lora_A.copy_(A), adapted.lora_B.copy_(B)
        lora.LoRALinear.merge.__wrapped__(adapted)
        return adapted.base.weight

    result = check.lora_merge(merged)
    assert not result and "do without companion.lora.LoRALinear" in result.message


@pytest.mark.parametrize("change", [{}, {"co_name": "mine"}, {"co_firstlineno": 1}])
def test_a_copy_of_a_forbidden_functions_code_is_blocked(change):
    original = base.sampling_probabilities
    copy = types.FunctionType(original.__code__.replace(**change), original.__globals__, "copy", original.__defaults__)

    def nucleus(probs, p):
        return copy(probs.log(), 1.0, None, p).to(probs.dtype)

    result = check.nucleus(nucleus)
    assert not result and "do without" in result.message


def test_the_courses_own_sampling_probabilities_is_forbidden_in_the_nucleus_exercise():
    result = check.nucleus(lambda probs, p: base.sampling_probabilities(probs.log(), 1.0, None, p).to(probs.dtype))
    assert not result and "do without companion.models.base.sampling_probabilities" in result.message


def test_a_thread_cannot_run_what_the_exercise_forbids():
    def in_a_thread(x, weight, eps, grad_y):
        out = {}
        worker = threading.Thread(target=lambda: out.update(grads=_by_autograd(x, weight, eps, grad_y)))
        worker.start()
        worker.join()
        return out["grads"]

    result = check.rms_norm_backward(in_a_thread)
    assert not result and "do without threading.Thread.start" in result.message


def test_switching_the_profile_hook_off_is_blocked():
    import sys

    from companion import tokenize

    def unhooked(ids, merges):
        sys.setprofile(None)
        return tokenize.BPETokenizer(merges, special_tokens=()).encode_ordinary(bytes(ids).decode())

    result = check.bpe_encode(unhooked)
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

    def lazy_encode(ids, merges):
        from companion import tokenize

        tokenizer = tokenize.BPETokenizer(merges, special_tokens=())
        return Lazy(lambda: tokenizer.encode_ordinary(bytes(ids).decode()))

    assert not check.bpe_encode(lazy_encode)


def test_another_norms_backward_kernel_on_a_mirrored_input_cannot_stand_in_for_rms_norms():
    def mirrored(overload):  # [x, -x] has mean 0, so layer norm divides it by x's root mean square
        def student(x, weight, eps, grad_y):
            d, both = x.shape[-1], torch.cat([x, -x], dim=-1)
            out, mean, rstd = torch.ops.aten.native_layer_norm(both, [2 * d], None, None, eps)
            grad_both = torch.cat([grad_y * weight, torch.zeros_like(grad_y)], dim=-1)
            grads = overload(grad_both, both, [2 * d], mean, rstd, None, None, [True, False, False])
            grad_x = grads[0][..., :d] - grads[0][..., d:]
            return grad_x, (grad_y * out[..., :d]).flatten(0, -2).sum(0)

        return student

    backward = torch.ops.aten.native_layer_norm_backward
    for overload in (backward, backward.default):
        result = check.rms_norm_backward(mirrored(overload))
        assert not result and "do without torch.ops.aten.native_layer_norm_backward" in result.message
    assert check.rms_norm_backward(_rms_backward)


def test_the_lora_layers_own_update_is_forbidden_in_the_lora_exercise():
    def through_delta_weight(weight, A, B, alpha, rank_stabilized, transposed):
        layer = torch.nn.Linear(A.shape[1], B.shape[0]).double()
        adapted = lora.LoRALinear(layer, r=A.shape[0], alpha=alpha)
        with torch.no_grad():
            adapted.lora_A.copy_(A), adapted.lora_B.copy_(B)
        update = adapted.delta_weight()
        return weight + (update.T if transposed else update)

    result = check.lora_merge(through_delta_weight)
    assert not result and "do without companion.lora.LoRALinear.delta_weight" in result.message


def test_a_tiktoken_encoding_cannot_do_the_encoding():
    import tiktoken

    def with_tiktoken(ids, merges):
        vocab = {i: bytes([i]) for i in range(256)}
        for i, (a, b) in enumerate(merges):
            vocab[256 + i] = vocab[a] + vocab[b]
        ranks = {token: i for i, token in vocab.items()}
        encoding = tiktoken.Encoding("merges", pat_str=r"[\s\S]+", mergeable_ranks=ranks, special_tokens={})
        return encoding._encode_single_piece(bytes(ids))

    result = check.bpe_encode(with_tiktoken)
    assert not result and "do without tiktoken.core.Encoding.__init__" in result.message


A = torch.ops.aten
ROUTES_AROUND_THE_PYTHON_API = {
    "conv2d_forward": [
        lambda x, w, b: A.convolution(x, w, b, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
        lambda x, w, b: A.convolution.default(x, w, b, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
        lambda x, w, b: A.conv2d(x, w, b),
        lambda x, w, b: torch._C._nn.thnn_conv2d(x, w, w.shape[-2:], b),
    ],
    "max_pool2d": [
        lambda x, k: A.max_pool2d(x, [k, k], [k, k]),
        lambda x, k: A.max_pool2d_with_indices(x, [k, k], [k, k])[0],
        lambda x, k: torch._C._nn.max_pool2d_with_indices(x, k, k)[0],
    ],
    "stable_softmax": [
        lambda z: A._softmax(z, -1, False),
        lambda z: A.softmax.int(z, -1),
        lambda z: torch._softmax(z, -1, False),
        lambda z: torch._log_softmax(z, -1, False).exp(),
    ],
    "attention_weights": [
        lambda q, k: A._scaled_dot_product_attention_math(q, k, k)[1],
    ],
    "gru_step": [
        lambda x, h, W_ih, W_hh, b_ih, b_hh: torch.gru_cell(x, h, W_ih, W_hh, b_ih, b_hh),
        lambda x, h, *weights: torch.gru(x[None], h[None], list(weights), True, 1, 0.0, False, False, False)[1][0],
    ],
}
ROUTES_AROUND_THE_PYTHON_API["conv2d_forward"] += [
    lambda x, w, b: torch._convolution_mode(x, w, b, [1, 1], "valid", [1, 1], 1),
    lambda x, w, b: torch._C._nn.slow_conv_dilated2d(x, w, w.shape[-2:], b, 1, 0, 1),
]
ROUTES_AROUND_THE_PYTHON_API["max_pool2d"] += [
    lambda x, k: torch.max_pool3d(x.unsqueeze(2), (1, k, k)).squeeze(2),
    lambda x, k: torch._C._nn.max_pool3d_with_indices(x.unsqueeze(2), (1, k, k), (1, k, k))[0].squeeze(2),
    lambda x, k: F.max_pool1d(F.max_pool1d(x.flatten(0, 2), k).unflatten(0, x.shape[:3]).transpose(-1, -2)
                              .flatten(0, 2), k).unflatten(0, (*x.shape[:2], x.shape[-1] // k)).transpose(-1, -2),
]
ROUTES_AROUND_THE_PYTHON_API["stable_softmax"] += [
    lambda z: torch._safe_softmax(z, -1),
    lambda z: torch._masked_softmax(z, torch.zeros_like(z, dtype=torch.bool), -1),
]
ROUTES_AROUND_THE_PYTHON_API["attention_weights"] += [lambda q, k: torch._scaled_dot_product_attention_math(q, k, k)[1]]
ROUTES_AROUND_THE_PYTHON_API["cross_entropy"] = [
    lambda z, t: torch._C._nn.nll_loss2d((z - z.logsumexp(-1, keepdim=True))[:, :, None, None], t[:, None, None]),
]
ROUTES_AROUND_THE_PYTHON_API["binary_cross_entropy"] = [lambda z, y: (F.softplus(z) - y * z).mean()]


@pytest.mark.parametrize(
    "name, student",
    [(name, route) for name, routes in ROUTES_AROUND_THE_PYTHON_API.items() for route in routes],
)
def test_pytorchs_internal_operators_cannot_stand_in_for_what_an_exercise_forbids(name, student):
    result = getattr(check, name)(student)
    assert not result and "do without" in result.message, result.message


def _functional_adam(theta, grad, m, v, t, lr, beta1, beta2, eps):
    from torch.optim import adam

    theta, m, v = theta.clone(), m.clone(), v.clone()
    adam.adam([theta], [grad], [m], [v], [], [torch.tensor(float(t - 1))], foreach=False, amsgrad=False,
              beta1=beta1, beta2=beta2, lr=lr, weight_decay=0.0, eps=eps, maximize=False)  # fmt: skip
    return theta, m, v


def _clipped_by_torch(grads, max_norm):
    from torch.nn.utils import clip_grads_with_norm_, get_total_norm

    params = [torch.nn.Parameter(g.clone()) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total = get_total_norm([p.grad for p in params])
    clip_grads_with_norm_(params, max_norm, total)
    return [p.grad for p in params], total


def _softplus_by_logsigmoid(v):
    from companion.autograd import Value

    x = torch.tensor(v.data, dtype=torch.float64)
    return Value((-F.logsigmoid(-x)).item(), (v,), (F.logsigmoid(x).exp().item(),))


@pytest.mark.parametrize(
    "name, student",
    [("adam_step", _functional_adam), ("clip_grad_norm", _clipped_by_torch), ("softplus", _softplus_by_logsigmoid),
     ("gpt_parameter_count",
      lambda V, T, d, L, b, t: V * d + T * d + 2 * d + sum(scale._block_counts(d, L, 4, b).values()))],
)  # fmt: skip
def test_pytorchs_and_the_courses_lower_level_functions_are_forbidden_with_the_public_ones(name, student):
    result = getattr(check, name)(student)
    assert not result and "do without" in result.message, result.message


def _backward_by_calling_the_graphs_nodes(root, grad, leaves):
    """Reverse-mode differentiation without autograd's engine: each node of the graph (grad_fn) called by hand."""
    order, seen = [], set()

    def visit(node):
        if node is not None and node not in seen:
            seen.add(node)
            for following, _ in node.next_functions:
                visit(following)
            order.append(node)

    visit(root.grad_fn)
    pending, grads = {root.grad_fn: grad}, {}
    for node in reversed(order):
        g = pending.pop(node, None)
        if g is None:
            continue
        if hasattr(node, "variable"):
            grads[node.variable] = grads.get(node.variable, 0) + g.sum_to_size(node.variable.shape)
            continue
        outs = node(g.sum_to_size(node._input_metadata[0].shape))
        for (following, _), out in zip(node.next_functions, outs if isinstance(outs, tuple) else (outs,)):
            if following is not None and out is not None:
                pending[following] = pending[following] + out if following in pending else out
    return [grads.get(leaf, torch.zeros_like(leaf)) for leaf in leaves]


def test_autograds_graph_walked_by_hand_cannot_compute_a_hand_written_gradient():
    def linear_backward(x, W, b, grad_y):
        leaves = [t.clone().requires_grad_() for t in (x, W, b)]
        return tuple(_backward_by_calling_the_graphs_nodes(leaves[0] @ leaves[1].T + leaves[2], grad_y, leaves))

    assert not check.linear_backward(linear_backward)  # with no graph recorded, there is nothing to walk

    def switched_on(x, W, b, grad_y):
        with torch.enable_grad():
            return linear_backward(x, W, b, grad_y)

    result = check.linear_backward(switched_on)
    assert not result and "do without autograd (recording gradients" in result.message, result.message
    assert torch.is_grad_enabled()


def test_forward_mode_autograd_cannot_compute_a_hand_written_gradient():
    import torch.autograd.forward_ad as fwAD

    def by_forward_mode(x, W, b, grad_y):
        def tangents(t):  # one directional derivative of the loss (grad_y · y) per entry of t
            out = []
            for e in torch.eye(t.numel(), dtype=t.dtype):
                with fwAD.dual_level():
                    dual = torch._make_dual(t, e.reshape(t.shape), level=0)
                    inputs = {id(x): (dual, W, b), id(W): (x, dual, b), id(b): (x, W, dual)}[id(t)]
                    y = inputs[0] @ inputs[1].T + inputs[2]
                    tangent = torch._unpack_dual((grad_y * y).sum(), level=0)[1]
                out.append(torch.zeros((), dtype=t.dtype) if tangent is None else tangent)
            return torch.stack(out).reshape(t.shape)

        return tangents(x), tangents(W), tangents(b)

    assert not check.linear_backward(by_forward_mode)


def test_recording_switched_on_inside_a_torch_function_override_is_blocked():
    class Recording(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            with torch.enable_grad():
                return super().__torch_function__(func, types, args, kwargs or {})

    def by_the_graph(x, W, b, grad_y):
        leaves = [t.clone().as_subclass(Recording).requires_grad_() for t in (x, W, b)]
        grads = _backward_by_calling_the_graphs_nodes(leaves[0] @ leaves[1].T + leaves[2], grad_y, leaves)
        return tuple(g.as_subclass(torch.Tensor) for g in grads)

    result = check.linear_backward(by_the_graph)
    assert not result and "do without autograd (recording gradients" in result.message, result.message


def test_a_forbidden_method_reached_inside_an_allowed_torch_function_is_blocked():
    result = check.stable_softmax(lambda z: F.softmin(-z, dim=-1))  # softmin calls Tensor.softmax
    assert not result and "do without torch.Tensor.softmax" in result.message, result.message


def test_a_forbidden_method_is_blocked_with_torch_functions_disabled():
    def softmax(z):
        with torch._C.DisableTorchFunction():
            return z.softmax(-1)

    result = check.stable_softmax(softmax)
    assert not result and "do without torch.Tensor.softmax" in result.message, result.message


def test_switching_the_blocks_off_through_ctypes_is_caught():
    import ctypes

    def conv(x, w, b):
        ctypes.pythonapi.PyEval_SetProfile(None, None)  # the profile hook, switched off unseen
        mode = ctypes.pythonapi.PyObject_CallObject  # the torch function mode, popped through a C pointer
        mode.restype, mode.argtypes = ctypes.py_object, [ctypes.py_object, ctypes.py_object]
        blocker = mode(torch._C._pop_torch_function_stack, ())
        try:
            return F.conv2d(x, w, b)
        finally:
            torch._C._push_on_torch_function_stack(blocker)

    result = check.conv2d_forward(conv)
    assert not result and "do without" in result.message, result.message


def test_another_process_cannot_compute_what_the_exercise_forbids():
    import subprocess
    import sys

    def conv(x, w, b):
        code = "import sys, torch; print(torch.ones(1).sum().item())"
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60)
        return x[:, :1, 1:-1, 1:-1].repeat(1, w.shape[0], 1, 1)

    result = check.conv2d_forward(conv)
    assert not result and "do without subprocess" in result.message, result.message


@pytest.mark.parametrize("route", ["engine", "private engine call", "forward mode"])
def test_autograds_lower_entry_points_cannot_compute_a_hand_written_gradient(route):
    def gradient(a, b, c, x, y):  # ∂/∂(a, b, c) of mean((y - (a x² + b x + c))²)
        def loss(p):
            return ((y - (p[0] * x**2 + p[1] * x + p[2])) ** 2).mean()

        p = torch.tensor((a, b, c), dtype=torch.float64, requires_grad=True)
        if route == "forward mode":
            import torch.autograd.forward_ad as fwAD

            with fwAD.dual_level():
                return tuple(fwAD.unpack_dual(loss(fwAD.make_dual(p.detach(), e))).tangent
                             for e in torch.eye(3, dtype=torch.float64))  # fmt: skip
        run = (torch.autograd.variable.Variable._execution_engine.run_backward if route == "engine"
               else torch.autograd.graph._engine_run_backward)  # fmt: skip
        (grad,) = run((loss(p),), (torch.ones((), dtype=torch.float64),), False, False, (p,), False, False)
        return tuple(grad)

    result = check.quadratic_gradients(gradient)
    assert not result and "do without" in result.message, result.message


def test_scipys_correlation_cannot_do_the_convolution_exercise():
    signal = pytest.importorskip("scipy.signal")

    def conv(x, w, b):
        out = [[sum(signal.correlate(x[n, c].numpy(), w[o, c].numpy(), mode="valid") for c in range(x.shape[1]))
                + b[o].item() for o in range(w.shape[0])] for n in range(x.shape[0])]  # fmt: skip
        return torch.tensor(out, dtype=x.dtype)

    result = check.conv2d_forward(conv)
    assert not result and "do without scipy.signal" in result.message, result.message


def test_each_of_pytorchs_pooling_wrappers_is_named_as_itself():
    """F.max_pool1d, 2d and 3d share one wrapper's code (``boolean_dispatch``): each is told by its own name."""
    result = check.max_pool2d(lambda x, k: F.max_pool3d(x.unsqueeze(2), (1, k, k)).squeeze(2))
    assert not result and "do without torch.nn.functional.max_pool3d," in result.message, result.message
