"""companion.models: shapes, parameter counts, layer structure and bad input."""

import pytest
import torch
from torch import nn

from companion.models import CNN, MLP, count_parameters


def test_mlp_of_chapter_5_has_669706_parameters():
    model = MLP([784, 512, 512, 10])
    by_hand = (784 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
    assert count_parameters(model) == by_hand == 669_706


@pytest.mark.parametrize("shape", [(5, 784), (5, 28, 28), (5, 1, 28, 28), (0, 784)])
def test_mlp_flattens_its_input(shape):
    model = MLP([784, 32, 10])
    x = torch.randn(shape)
    assert model(x).shape == (shape[0], 10)
    if shape[0]:
        torch.testing.assert_close(model(x), model(x.reshape(shape[0], 784)))


def test_mlp_layers_follow_the_options():
    model = MLP([6, 5, 4, 3], activation="tanh", dropout=0.25, batchnorm=True)
    kinds = [type(m) for m in model.net]
    hidden = [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout]
    assert kinds == [nn.Flatten, *hidden, *hidden, nn.Linear]
    assert all(m.p == 0.25 for m in model.net if isinstance(m, nn.Dropout))
    plain = MLP([6, 5, 3])
    assert [type(m) for m in plain.net] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert count_parameters(model) == count_parameters(MLP([6, 5, 4, 3])) + 2 * (5 + 4)  # BN: scale and shift


def test_mlp_computes_relu_layers():
    torch.manual_seed(0)
    model = MLP([3, 4, 2])
    x = torch.randn(7, 3)
    first, last = model.net[1], model.net[3]
    expected = torch.relu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias
    torch.testing.assert_close(model(x), expected)


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = MLP([20, 50, 3], dropout=0.5)
    x = torch.randn(4, 20)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_cnn_shapes_and_parameter_count():
    model = CNN()
    by_hand = (1 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 7 * 7 * 128 + 128) + (128 * 10 + 10)
    assert count_parameters(model) == by_hand
    x = torch.randn(3, 28, 28)
    assert model(x).shape == (3, 10)
    model.eval()
    torch.testing.assert_close(model(x), model(x.unsqueeze(1)))
    small = CNN(channels=(4, 8), hidden=16, num_classes=5, image_size=12)
    assert small(torch.randn(2, 1, 12, 12)).shape == (2, 5)
    assert count_parameters(small) == (9 * 4 + 4) + (4 * 9 * 8 + 8) + (8 * 3 * 3 * 16 + 16) + (16 * 5 + 5)


def test_count_parameters_skips_frozen_ones_unless_asked():
    model = MLP([4, 3, 2])
    model.net[1].weight.requires_grad_(False)
    assert count_parameters(model) == 3 + (3 * 2 + 2)
    assert count_parameters(model, trainable_only=False) == (4 * 3 + 3) + (3 * 2 + 2)
    with pytest.raises(TypeError, match="nn.Module"):
        count_parameters([torch.zeros(3)])


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: MLP([784]), "at least two"),
        (lambda: MLP([784, 0, 10]), "positive int"),
        (lambda: MLP([784, 12.5, 10]), "positive int"),
        (lambda: MLP("784"), "at least two"),
        (lambda: MLP([4, 2], activation="softplus"), "activation must be one of"),
        (lambda: MLP([4, 2], dropout=1.0), r"dropout must be a probability in \[0, 1\)"),
        (lambda: CNN(channels=(8,)), "channels must be two"),
        (lambda: CNN(image_size=30), "divisible by 4"),
        (lambda: CNN(dropout=-0.1), "dropout"),
    ],
)
def test_bad_settings_are_explained(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "model, x, error, message",
    [
        (MLP([784, 10]), torch.zeros(2, 28, 28, dtype=torch.uint8), TypeError, r"x.float\(\) / 255"),
        (MLP([784, 10]), torch.zeros(2, 27, 27), ValueError, "784 numbers per sample"),
        (MLP([784, 10]), torch.zeros(784), ValueError, r"\[N, 784\]"),
        (MLP([784, 10]), [[0.0] * 784], TypeError, "torch tensor"),
        (CNN(), torch.zeros(2, 784), ValueError, r"\[N, 28, 28\] or \[N, 1, 28, 28\]"),
        (CNN(), torch.zeros(2, 3, 28, 28), ValueError, r"\[N, 1, 28, 28\]"),
        (CNN(), torch.zeros(2, 28, 28, dtype=torch.long), TypeError, "floating-point"),
    ],
)
def test_bad_input_is_explained(model, x, error, message):
    with pytest.raises(error, match=message):
        model(x)


def test_select_modules_matches_whole_names_or_their_last_dotted_parts():
    from companion.models.base import replace_module, select_modules

    model = nn.Sequential()
    model.add_module("heads", nn.Linear(2, 2))
    model.add_module("block", nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)))
    model.add_module("head", nn.Linear(2, 1))
    assert list(select_modules(model, "head")) == ["head"]
    assert list(select_modules(model, ["block.*"])) == ["block.0", "block.1", "block.2"]
    assert list(select_modules(model, ["2", "heads"])) == ["heads", "block.2"]
    with pytest.raises(ValueError, match="no module.*'tail'.*'heads'"):
        select_modules(model, "tail")
    with pytest.raises(TypeError, match="patterns"):
        select_modules(model, [])
    new = nn.Linear(3, 2)
    replace_module(model, "block.2", new)
    assert model.block[2] is new
