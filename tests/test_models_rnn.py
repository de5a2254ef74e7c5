"""companion.models.RNNClassifier and CharLSTM: shapes, what they compute, sampling, training, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from companion import data, train
from companion.models import CharLSTM, RNNClassifier, count_parameters


@pytest.mark.parametrize(("kind", "gates"), [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_classifier_parameter_count(kind, gates):
    model = RNNClassifier(kind, input_size=28, hidden=128, layers=2)
    layer1 = gates * (128 * 28 + 128 * 128 + 2 * 128)  # W_ih, W_hh, b_ih, b_hh
    layer2 = gates * (128 * 128 + 128 * 128 + 2 * 128)
    assert count_parameters(model) == layer1 + layer2 + 128 * 10 + 10


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("shape", [(5, 28, 28), (5, 1, 28, 28), (1, 3, 28)])
def test_classifier_reads_sequences_and_images(kind, shape):
    torch.manual_seed(0)
    model = RNNClassifier(kind, input_size=28, hidden=16, layers=2, num_classes=7)
    x = torch.randn(shape)
    assert model(x).shape == (shape[0], 7)


def test_classifier_uses_the_last_hidden_state_of_the_top_layer():
    torch.manual_seed(0)
    model = RNNClassifier("lstm", input_size=3, hidden=8, layers=2, num_classes=4)
    x = torch.randn(6, 9, 3)
    _, (h, _) = model.rnn(x)
    expected = h[-1] @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(model(x), expected)
    # the answer depends on the first step too: information flows through all 9 steps
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert not torch.allclose(model(x), model(x2))


def test_classifier_learns_a_sequence_task():
    """Is the first element of a short sequence positive? Needs the state to carry it to the end."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    X = torch.randn(512, 6, 1, generator=gen)
    y = (X[:, 0, 0] > 0).long()
    model = RNNClassifier("gru", input_size=1, hidden=16, layers=1, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    train.fit(model, opt, nn.CrossEntropyLoss(), (X, y), epochs=15, batch_size=64, device="cpu", progress=False)
    accuracy = (model(X).argmax(1) == y).float().mean().item()
    assert accuracy > 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "transformer"}, r"kind must be one of \['gru', 'lstm', 'rnn'\]; got 'transformer'"),
        ({"hidden": 0}, "hidden must be a positive int; got 0"),
        ({"layers": 1.5}, "layers must be a positive int; got 1.5"),
        ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\); got 1.0"),
    ],
)
def test_classifier_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RNNClassifier(**kwargs)


def test_classifier_rejects_bad_input():
    model = RNNClassifier("rnn", input_size=28, hidden=8)
    with pytest.raises(ValueError, match=r"expects inputs of shape \[N, T, 28\] \(batch first\); got \(4, 28, 27\)"):
        model(torch.randn(4, 28, 27))
    with pytest.raises(ValueError, match=r"got \(784,\)"):
        model(torch.randn(784))
    with pytest.raises(TypeError, match="floating-point inputs; got dtype torch.uint8"):
        model(torch.zeros(2, 28, 28, dtype=torch.uint8))


# --- CharLSTM ----------------------------------------------------------------------------------


def test_char_lstm_shapes_and_parameter_count():
    model = CharLSTM(vocab_size=65, embed_dim=16, hidden=32, layers=2)
    logits = model(torch.randint(0, 65, (3, 11)))
    assert logits.shape == (3, 11, 65)
    lstm = 4 * (32 * 16 + 32 * 32 + 64) + 4 * (32 * 32 + 32 * 32 + 64)
    assert count_parameters(model) == 65 * 16 + lstm + 32 * 65 + 65


def test_char_lstm_is_causal_and_stateful():
    torch.manual_seed(0)
    model = CharLSTM(vocab_size=10, embed_dim=4, hidden=8, layers=2).eval()
    ids = torch.randint(0, 10, (2, 12))
    full = model(ids)
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 10
    torch.testing.assert_close(model(changed)[:, :8], full[:, :8])  # the past does not see the future
    first, state = model.step(ids[:, :5])
    rest, _ = model.step(ids[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full)  # continuing from the state


def test_generate_shapes_prompt_and_repeatability():
    torch.manual_seed(0)
    model = CharLSTM(vocab_size=12, embed_dim=4, hidden=8, layers=1)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = model.generate(prompt, 20, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 23) and out.dtype == torch.int64
    assert torch.equal(out[:, :3], prompt) and int(out.min()) >= 0 and int(out.max()) < 12
    again = model.generate(prompt, 20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    assert model.generate(torch.tensor([3]), 5).shape == (6,)
    assert torch.equal(model.generate(prompt, 0), prompt)
    assert model.training  # mode restored


def test_generate_greedy_and_top_k():
    torch.manual_seed(0)
    model = CharLSTM(vocab_size=12, embed_dim=4, hidden=8, layers=1).eval()
    prompt = torch.tensor([[1, 2]])
    greedy = model.generate(prompt, 8, temperature=0)
    ids = prompt
    for _ in range(8):  # greedy decoding by hand, re-reading the whole text each time
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, ids)
    top1 = model.generate(prompt, 8, temperature=1.5, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(top1, greedy)  # top-1 sampling is greedy at any temperature


def test_low_temperature_concentrates_samples():
    torch.manual_seed(0)
    model = CharLSTM(vocab_size=8, embed_dim=4, hidden=8, layers=1)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([2.0, 1.0, 0, 0, 0, 0, 0, 0]))
        model.head.weight.zero_()
    prompt = torch.zeros(400, 1, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    cold = model.generate(prompt, 1, temperature=0.25, generator=gen)[:, 1]
    hot = model.generate(prompt, 1, temperature=4.0, generator=gen)[:, 1]
    assert (cold == 0).float().mean() > 0.9 > (hot == 0).float().mean()
    top2 = model.generate(prompt, 1, temperature=4.0, top_k=2, generator=gen)[:, 1]
    assert set(top2.tolist()) <= {0, 1}


def test_char_lstm_learns_a_text_with_fit():
    text = "to be or not to be, that is the question. " * 40
    vocab = data.CharVocab(text)
    X, Y = data.char_windows(vocab.encode(text), 32, stride=7)
    torch.manual_seed(0)
    model = CharLSTM(len(vocab), embed_dim=16, hidden=64, layers=1)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    history = train.fit(
        model, torch.optim.Adam(model.parameters(), lr=0.01), loss_fn, (X, Y), epochs=12, batch_size=32,
        device="cpu", progress=False,
    )  # fmt: skip
    assert history["loss"][-1] < 0.3 < history["loss"][0]
    sample = vocab.decode(model.generate(vocab.encode("to be or "), 30, temperature=0))
    assert sample.startswith("to be or not to be, that is")


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        (torch.tensor([[0, 10]]), ValueError, r"ids must lie in 0 … 9; got 0 … 10"),
        (torch.tensor([[0.0, 1.0]]), TypeError, "integer character ids \\(int64\\); got dtype torch.float32"),
        (torch.zeros(2, 3, 4, dtype=torch.long), ValueError, r"shape \[B, T\] with T >= 1; got \(2, 3, 4\)"),
        ([[0, 1]], TypeError, "tensor of character ids; got list"),
    ],
)
def test_char_lstm_rejects_bad_ids(ids, error, message):
    with pytest.raises(error, match=message):
        CharLSTM(vocab_size=10, embed_dim=4, hidden=8)(ids)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n must be a non-negative int; got -1"),
        ({"n": 3, "temperature": -0.5}, "temperature must be a number >= 0; got -0.5"),
        ({"n": 3, "top_k": 0}, "top_k must be a positive int or None; got 0"),
    ],
)
def test_generate_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CharLSTM(vocab_size=10, embed_dim=4, hidden=8).generate(torch.tensor([[1]]), **kwargs)


def test_float64_sequences_into_a_float32_classifier_get_an_error_naming_both_dtypes():
    with pytest.raises(TypeError, match="RNNClassifier's weights are torch.float32 but the input is torch.float64"):
        RNNClassifier("lstm", input_size=3, hidden=4)(torch.zeros(2, 5, 3, dtype=torch.float64))
