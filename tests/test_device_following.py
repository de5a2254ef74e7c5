"""Every tensor the package creates follows its inputs' device: checked on the CPU with the ``meta`` device.

A tensor on ``meta`` has a shape and a dtype but no values, and PyTorch refuses to mix it with a CPU
tensor in one operation ("Tensor on device cpu is not on the expected device meta"), just as it refuses
to mix a CPU tensor with a CUDA one. So a model moved to ``meta`` that runs forward and backward on
``meta`` inputs creates no stray CPU tensor on the way (a mask, a position table, a zero state): on a
GPU it would not either. What reads values (``.item()``, sampling) cannot run on ``meta`` and is left
to the GPU run (``bench/gpu_run.sh``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from companion import attention, conv, data, instruct, lora, preference, quantize, recurrent, train
from companion.models import CNN, MLP, CharLSTM, GPTConfig, RNNClassifier, TinyGPT

META = torch.device("meta")
LLAMA_STYLE = GPTConfig(65, context=16, dim=32, heads=4, layers=2, positions="rope", norm="rms", mlp="swiglu",
                        kv_heads=2, bias=False, tie_weights=False)
"""Chapter 11's modern block: rotary positions, RMSNorm, SwiGLU and grouped-query attention."""


def forward_backward_on_meta(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model`` moved to ``meta`` runs forward and backward on ``x`` moved there; the output, on ``meta``."""
    model = model.to(META)
    out = model(x.to(META))
    out = out[0] if isinstance(out, tuple) else out
    assert out.device == META
    out.float().sum().backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.device == META for p in trained)
    return out


def ids(batch: int, length: int, vocab: int) -> torch.Tensor:
    return torch.randint(vocab, (batch, length))


def unchecked(model: TinyGPT) -> TinyGPT:
    """``model`` without its check of the ids' values, which ``meta`` tensors do not have."""
    model._check_ids = lambda ids: None
    return model


@pytest.mark.parametrize(
    "model, x",
    [
        (MLP([784, 32, 10], dropout=0.1, batchnorm=True), torch.randn(4, 784)),
        (CNN(), torch.randn(4, 1, 28, 28)),
        (RNNClassifier(kind="lstm"), torch.randn(4, 28, 28)),
        (RNNClassifier(kind="gru"), torch.randn(4, 28, 28)),
        (RNNClassifier(kind="rnn"), torch.randn(4, 28, 28)),
        (CharLSTM(65, embed_dim=8, hidden=16), ids(4, 12, 65)),
        (TinyGPT(GPTConfig(65, context=16, dim=32, heads=4, layers=2, dropout=0.1)), ids(4, 16, 65)),
        (TinyGPT(GPTConfig(65, context=16, dim=32, heads=4, layers=2, attention="torch")), ids(4, 16, 65)),
        (TinyGPT(GPTConfig(65, context=16, dim=32, heads=4, layers=2, positions="sinusoidal")), ids(4, 9, 65)),
        (TinyGPT(LLAMA_STYLE), ids(4, 16, 65)),
        (TinyGPT(dataclasses.replace(LLAMA_STYLE, attention="torch")), ids(4, 16, 65)),
        (lora.wrap(TinyGPT(GPTConfig(65, context=16, dim=32, heads=4, layers=2)), ["in_proj", "out_proj"], r=2),
         ids(4, 16, 65)),
        (recurrent.LSTM(6, 8, num_layers=2), torch.randn(3, 5, 6)),
        (recurrent.GRU(6, 8), torch.randn(3, 5, 6)),
        (recurrent.RNN(6, 8), torch.randn(3, 5, 6)),
        (attention.MultiHeadAttention(16, 4), torch.randn(2, 5, 16)),
        (attention.LayerNorm(16), torch.randn(2, 5, 16)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, nn.Module) else "",
)
def test_models_run_forward_and_backward_on_their_own_device(model, x, monkeypatch):
    if hasattr(model, "_check_ids"):  # it reads the ids' values (each within the vocabulary): not on meta
        monkeypatch.setattr(model, "_check_ids", lambda ids: None)
    forward_backward_on_meta(model, x)


def test_attention_and_its_masks_follow_the_scores_device():
    q, k, v = (torch.randn(2, 5, 8, device=META) for _ in range(3))
    assert attention.scaled_dot_product_attention(q, k, v, causal=True).device == META
    assert attention.causal_mask(5, device=META).device == META
    assert attention.sinusoidal_positional_encoding(7, 16, device=META).device == META


def test_from_scratch_convolution_and_pooling_follow_the_images_device():
    x, w, b = torch.randn(2, 3, 8, 8, device=META), torch.randn(4, 3, 3, 3, device=META), torch.zeros(4, device=META)
    assert conv.conv2d(x, w, b, padding=1).device == META
    assert conv.max_pool2d(x, 2).device == META and conv.avg_pool2d(x, 2).device == META


def test_batches_stay_on_the_data_s_device_with_a_cpu_generator():
    X, y = torch.randn(10, 3, device=META), torch.zeros(10, dtype=torch.int64, device=META)
    for shuffle in (True, False):
        got = list(data.batches(X, y, 4, shuffle=shuffle, generator=torch.Generator().manual_seed(0)))
        assert [tuple(xb.shape) for xb, _ in got] == [(4, 3), (4, 3), (2, 3)]
        assert all(xb.device == META and yb.device == META for xb, yb in got)


def test_predict_returns_outputs_on_the_model_s_device():
    model = MLP([3, 4, 2]).to(META)
    assert train.predict(model, torch.randn(5, 3), batch_size=2).device == META


def test_a_quantized_model_dequantizes_on_its_own_device():
    model = quantize.quantize_model(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3))).to(META)
    assert model(torch.randn(4, 64, device=META)).device == META


def test_rotary_angles_and_the_kv_cache_are_made_on_the_device_asked_for():
    cos, sin = attention.rotary_angles(7, 8, offset=3, device=META)
    assert cos.device == META and sin.device == META
    cache = attention.KVCache(batch=2, kv_heads=2, head_dim=8, capacity=16, device=META)
    assert cache.keys.device == META and cache.values.device == META


def test_fine_tuning_losses_follow_the_model_s_device_when_the_masks_come_from_the_cpu():
    """The answer masks may come from the CPU while the model and its ids are on the device (chapter 12)."""
    policy = unchecked(TinyGPT(GPTConfig(65, context=16, dim=32, heads=4, layers=2)).to(META))
    reference = unchecked(TinyGPT(GPTConfig(65, context=16, dim=32, heads=4, layers=2)).to(META)).requires_grad_(False)
    token_ids = ids(6, 12, 65).to(META)
    mask = torch.zeros(6, 12, dtype=torch.bool)
    mask[:, 5:] = True
    assert instruct.sft_loss(policy, token_ids, mask).device == META
    chosen, rejected = (preference.sequence_logprobs(policy, token_ids[i::2], mask[i::2]) for i in (0, 1))
    ref_chosen, ref_rejected = (preference.sequence_logprobs(reference, token_ids[i::2], mask[i::2]) for i in (0, 1))
    loss, *rewards = preference.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.1)
    assert loss.device == META and all(r.device == META for r in rewards)
    loss.backward()
    assert all(p.grad is not None and p.grad.device == META for p in policy.parameters())
    assert preference.sequence_kl(policy, reference, token_ids, mask).device == META


@pytest.mark.parametrize("backend", ["scratch", "torch"])
@pytest.mark.parametrize("layout", [GPTConfig(1000, context=32, dim=64, heads=4, layers=2), LLAMA_STYLE])
def test_the_kv_cache_path_stays_on_the_model_s_device(layout, backend):
    """Prefill, a one-token decode step and a chunk after an offset (chapter 11's generation)."""
    model = unchecked(TinyGPT(dataclasses.replace(layout, attention=backend)).to(META).eval())
    cache = model.new_cache(1)
    with torch.no_grad():
        outputs = [model(torch.zeros(1, n, dtype=torch.long, device=META), cache=cache) for n in (5, 1, 3)]
    assert all(out.device == META for out in outputs)
    assert all(layer.keys.device == META and layer.values.device == META for layer in cache)


@pytest.mark.parametrize("settings", [dict(temperature=0), dict(temperature=0, use_cache=False)])
def test_generate_moves_a_cpu_prompt_to_the_model_s_device(settings):
    model = unchecked(TinyGPT(GPTConfig(65, context=16, dim=32, heads=4, layers=2)).to(META))
    assert model.generate(torch.zeros(1, 4, dtype=torch.long), 3, **settings).device == META


def test_adapters_and_a_resized_vocabulary_made_after_the_move_follow_the_model():
    """Chapter 12 wraps and resizes a model that is already on its device."""
    model = unchecked(TinyGPT(GPTConfig(65, context=16, dim=32, heads=4, layers=2)).to(META))
    lora.wrap(model, targets=["in_proj", "out_proj"], r=2)
    instruct.resize_token_embeddings(model, 70)
    assert {p.device for p in model.parameters()} == {META}
    forward_backward_on_meta(model, ids(2, 8, 70))
