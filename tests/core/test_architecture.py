"""Reading nn.Sequential networks with conv layers: shapes, input_shape and clear errors."""

import pytest
import torch
from torch import nn

from pyro_sparse_bnn import (
    HyperparameterError,
    InputError,
    SparseBNN,
    SpikeSlabNode,
    UnsupportedLayerError,
)
from pyro_sparse_bnn.core.architecture import parse_sequential
from tests.conftest import tiny_conv_net


class ResidualBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


def build(net, **kwargs):
    return SparseBNN(net, SpikeSlabNode(), num_data=10, **kwargs)


def conv_first(*middle, linear_in=48):
    """Conv2d(1, 3, 3) on 1 x 6 x 6 images (3 x 4 x 4 outputs), ``middle``, Flatten, Linear."""
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), *middle, nn.Flatten(), nn.Linear(linear_in, 2))


def test_shapes_come_from_a_forward_pass_with_the_conv_hyperparameters():
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2), nn.Tanh(),
        nn.AvgPool2d(2, padding=1), nn.Conv2d(4, 5, (3, 5), padding="same"), nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(20, 3),
    )
    architecture = parse_sequential(net, input_shape=(2, 9, 11))
    x = torch.randn(1, 2, 9, 11)
    expected = []
    for module in net:
        x = module(x)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            expected.append(tuple(x.shape[1:]))
    assert [spec.out_shape for spec in architecture.specs] == expected
    assert [spec.kind for spec in architecture.specs] == ["conv2d", "conv2d", "linear"]
    assert architecture.specs[1].in_shape == (4, 3, 4)
    assert architecture.widths == (2, 4, 5, 3)
    assert architecture.network_info(None).num_inputs == 2 * 9 * 11


def test_a_conv_layer_applies_the_users_module():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=2)
    spec = parse_sequential(nn.Sequential(conv, nn.Flatten(), nn.Linear(12, 2)), (2, 6, 6)).specs[0]
    assert spec.weight_shape == (3, 2, 3, 3) and spec.param_shape == (3, 19)
    x = torch.randn(4, 2, 6, 6)
    params = spec.augment(conv.weight, conv.bias)
    with torch.no_grad():
        assert torch.allclose(spec.apply(x, *spec.split(params)), conv(x))


def test_input_shape_is_inferred_from_a_leading_unflatten_or_linear():
    assert build(tiny_conv_net()).input_shape == (36,)
    assert build(nn.Sequential(nn.Linear(5, 2))).input_shape == (5,)
    image_mlp = build(nn.Sequential(nn.Flatten(), nn.Linear(36, 2)), input_shape=(1, 6, 6))
    assert image_mlp.input_shape == (1, 6, 6) and image_mlp.num_inputs == 36


def test_data_must_have_the_input_shape():
    bnn = build(conv_first(), input_shape=(1, 6, 6))
    assert bnn.model(torch.randn(4, 1, 6, 6)).shape == (4, 2)
    assert bnn.num_inputs == 1  # input channels
    with pytest.raises(InputError, match=r"shape \(4, 36\) but the network expects \(batch, 1, 6, 6\)"):
        bnn.model(torch.randn(4, 36))
    with pytest.raises(InputError, match=r"expects \(batch, 36\)"):
        build(tiny_conv_net()).model(torch.randn(4, 1, 6, 6))


def test_a_conv_first_network_needs_its_input_shape():
    with pytest.raises(HyperparameterError, match=r"net.0 = Conv2d.*pass input_shape=\(channels, height, width\)"):
        build(conv_first())


@pytest.mark.parametrize("input_shape, message", [
    ((1, 7, 7), r"net.3 = Linear.*expects 48 input features but gets 75 = 3 x 5 x 5 from net.2 = nn.Flatten\(\).*input_shape=\(1, 7, 7\)"),
    ((2, 6, 6), r"net.0 = Conv2d.*expects 1 input channels but gets 2"),
    ((36,), r"net.0 = Conv2d.*needs \(batch, channels, height, width\) inputs but gets \(batch, 36\)"),
    ((1, 2, 2), r"net.0 = Conv2d.*cannot take inputs of shape \(batch, 1, 2, 2\)"),
    ((0, 6, 6), "input_shape must be a tuple of positive integers"),
    ("1x6x6", "input_shape must be a tuple of positive integers"),
])
def test_an_input_shape_that_does_not_fit_is_named(input_shape, message):
    with pytest.raises(HyperparameterError, match=message):
        build(conv_first(), input_shape=input_shape)


@pytest.mark.parametrize("net, message", [
    (conv_first(nn.BatchNorm2d(3)), r"net.2 = BatchNorm2d.*batch normalisation is not supported"),
    (conv_first(ResidualBlock()), r"net.2 = ResidualBlock\(...\).*residual block"),
    (nn.Sequential(nn.Sequential(nn.Conv2d(1, 3, 3), nn.Dropout2d()), nn.Flatten(), nn.Linear(48, 2)),
     r"net.0.1 = Dropout2d"),
    (conv_first(nn.Conv2d(3, 3, 3, padding=1, groups=3)), r"net.2 = Conv2d.*groups=3: only groups=1"),
    (conv_first(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")), r"net.2 = Conv2d.*only zero padding"),
    (conv_first(nn.Conv1d(3, 3, 1)), r"net.2 = Conv1d.*supported are nn.Linear, nn.Conv2d"),
    (conv_first(nn.MaxPool2d(2, return_indices=True), linear_in=12), "return_indices"),
    (nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(2), nn.Linear(16, 2)), r"net.1 = Flatten.*start_dim=1"),
    (nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(48, 36), nn.Unflatten(1, (1, 6, 6)),
                   nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(16, 2)), r"net.3 = Unflatten.*only before the first"),
    (nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU()), r"last parametric layer net.0 = Conv2d.*must be an nn.Linear"),
    (nn.Sequential(nn.Conv2d(1, 3, 3), nn.Linear(4, 2)), r"net.1 = Linear.*put nn.Flatten\(\) before it"),
    (nn.Sequential(nn.Conv2d(1, 3, 3), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(8, 2)),
     "net.0 has 3 output channels but net.1 expects 4"),
    (nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(48, 4), nn.MaxPool2d(2), nn.Linear(4, 2)),
     r"net.3 = MaxPool2d.*pooling is supported between conv layers only"),
])
def test_unsupported_networks_are_named(net, message):
    with pytest.raises(UnsupportedLayerError, match=message):
        build(net, input_shape=(1, 6, 6))
