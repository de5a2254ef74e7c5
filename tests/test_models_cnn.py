"""companion.models.CNN: the articles' two architectures as instances, layer layout, shapes and bad settings."""

import copy

import pytest
import torch
from torch import nn

from companion.conv import output_size
from companion.models import CNN, count_parameters


def conv_params(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * k * k * c_out + c_out


def dense_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_default_is_the_same_padding_conv32_pool_conv64_pool_dense128():
    model = CNN()
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 2
    assert all(m.padding == "same" and m.kernel_size == (3, 3) for m in model.features if isinstance(m, nn.Conv2d))
    assert model.feature_shape == (64, 7, 7)
    expected = conv_params(1, 32) + conv_params(32, 64) + dense_params(64 * 7 * 7, 128) + dense_params(128, 10)
    assert count_parameters(model) == expected == 421_642


def test_first_article_cnn_as_keras_builds_it():
    """Conv32-Pool-Conv64-Pool-Dense128-10 with Keras' default 'valid' padding: 28 → 26 → 13 → 11 → 5."""
    model = CNN(padding="valid")
    side = output_size(output_size(28, 3) // 2, 3) // 2
    assert model.feature_shape == (64, side, side) == (64, 5, 5)
    expected = conv_params(1, 32) + conv_params(32, 64) + dense_params(64 * 5 * 5, 128) + dense_params(128, 10)
    assert count_parameters(model) == expected == 225_034
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_second_article_cnn_conv32_pool_conv64_pool_conv64_dense64():
    model = CNN(channels=(32, 64, 64), hidden=64, padding="valid", pools=2)
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 2 + [nn.Conv2d, nn.ReLU]
    assert model.feature_shape == (64, 3, 3)
    expected = (
        conv_params(1, 32) + conv_params(32, 64) + conv_params(64, 64) + dense_params(64 * 3 * 3, 64) + dense_params(64, 10)
    )
    assert count_parameters(model) == expected == 93_322
    assert model(torch.randn(3, 28, 28)).shape == (3, 10)


def test_chapter_6_small_cnn_is_unchanged():
    model = CNN(channels=(16, 32), hidden=64)
    assert count_parameters(model) == conv_params(1, 16) + conv_params(16, 32) + dense_params(32 * 49, 64) + dense_params(64, 10)
    assert [name for name, _ in model.named_parameters()] == [
        "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
        "classifier.1.weight", "classifier.1.bias", "classifier.4.weight", "classifier.4.bias",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "settings, feature_shape",
    [
        (dict(channels=(4, 8, 16), image_size=32), (16, 4, 4)),
        (dict(channels=(4, 8, 16), image_size=28, pools=2), (16, 7, 7)),
        (dict(channels=(4, 8), kernel_size=5, padding="valid", image_size=28), (8, 4, 4)),
        (dict(channels=(4, 8), pools=0, image_size=10), (8, 10, 10)),
        (dict(channels=(4, 8), kernel_size=5, image_size=12), (8, 3, 3)),
    ],
)
def test_feature_shape_matches_what_the_layers_produce(settings, feature_shape):
    model = CNN(hidden=8, num_classes=3, **settings)
    assert model.feature_shape == feature_shape
    s = settings["image_size"]
    assert model.features(torch.zeros(1, 1, s, s)).shape[1:] == feature_shape
    assert model(torch.zeros(2, s, s)).shape == (2, 3)


def test_dropout_sits_before_the_read_out():
    model = CNN(dropout=0.3)
    assert [type(m) for m in model.classifier] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert model.classifier[3].p == 0.3


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: CNN(channels=(8,)), "channels must be two or more positive ints"),
        (lambda: CNN(channels=(8, 0)), "channels must be two or more"),
        (lambda: CNN(channels="32"), "channels must be two or more"),
        (lambda: CNN(hidden=0), "hidden and num_classes must be positive ints"),
        (lambda: CNN(padding="full"), "padding must be 'same' or 'valid'"),
        (lambda: CNN(kernel_size=4), "odd with 'same' padding"),
        (lambda: CNN(pools=3), r"pools must be an int from 0 to len\(channels\) = 2"),
        (lambda: CNN(image_size=30), "divisible by 4"),
        (lambda: CNN(channels=(8, 8, 8), image_size=28), "divisible by 8"),
        (lambda: CNN(padding="valid", image_size=8), "too small.*convolution 2 leaves 1×1"),
        (lambda: CNN(padding="valid", image_size=0), "image_size must be a positive int"),
    ],
)
def test_bad_settings_are_explained(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_float64_images_into_a_float32_cnn_get_an_error_naming_both_dtypes():
    with pytest.raises(TypeError, match="CNN's weights are torch.float32 but the input is torch.float64"):
        CNN()(torch.zeros(2, 28, 28, dtype=torch.float64))
    assert CNN().double()(torch.zeros(2, 28, 28, dtype=torch.float64)).dtype == torch.float64


def test_channels_last_weights_compute_the_same_function_as_contiguous_ones():
    torch.manual_seed(0)
    cnn = CNN(padding="valid").double()
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in cnn.features[::3])
    plain = copy.deepcopy(cnn)
    for conv in plain.features[::3]:
        conv.weight.data = conv.weight.data.clone(memory_format=torch.contiguous_format)
        assert conv.weight.stride() == torch.empty(conv.weight.shape).stride()  # NCHW, even where C is 1
    x = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(cnn(x), plain(x), rtol=1e-12, atol=1e-12)
    cnn(x).square().sum().backward()
    plain(x).square().sum().backward()
    for a, b in zip(cnn.parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
