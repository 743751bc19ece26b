"""The standard architectures of pyro_sparse_bnn.core.nets."""

import pytest
import torch
from torch import nn

from pyro_sparse_bnn import (
    HyperparameterError,
    SparseBNN,
    SpikeSlabNode,
    lenet5_caffe,
    lenet_300_100,
    mlp,
)


def num_params(net):
    return sum(p.numel() for p in net.parameters())


def test_lenet5_caffe_has_431080_parameters_and_takes_flat_images():
    net = lenet5_caffe()
    # conv1 20*1*5*5 + 20, conv2 50*20*5*5 + 50, fc1 800*500 + 500, fc2 500*10 + 10
    assert num_params(net) == 520 + 25_050 + 400_500 + 5_010 == 431_080
    with torch.no_grad():
        assert net(torch.randn(3, 784)).shape == (3, 10)
    assert isinstance(net[0], nn.Unflatten) and net[0].unflattened_size == (1, 28, 28)


def test_lenet5_caffe_as_a_sparse_bnn():
    torch.manual_seed(0)
    bnn = SparseBNN(lenet5_caffe(activation=nn.SiLU), SpikeSlabNode(), num_data=100)
    assert bnn.input_shape == (784,)
    assert bnn.architecture.widths == (1, 20, 50, 500, 10)
    specs = [layer.spec for layer in bnn.layers]
    assert [s.kind for s in specs] == ["conv2d", "conv2d", "linear", "linear"]
    assert [s.out_shape for s in specs] == [(20, 24, 24), (50, 8, 8), (500,), (10,)]
    assert specs[2].in_shape == (800,)  # 50 channels x 4 x 4 after the second pooling
    assert sum(s.num_params for s in specs) == 431_080
    assert sum(isinstance(m, nn.SiLU) for m in bnn.fixed) == 3


def test_lenet5_caffe_options():
    net = lenet5_caffe(num_classes=7, in_channels=3)
    with torch.no_grad():
        assert net(torch.randn(2, 3 * 784)).shape == (2, 7)
    with pytest.raises(HyperparameterError, match="in_channels"):
        lenet5_caffe(in_channels=0)


def test_lenet_300_100_and_mlp():
    net = lenet_300_100()
    assert num_params(net) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [300, 100, 10]
    small = mlp([4, 8, 3], nn.Tanh)
    assert [type(m) for m in small] == [nn.Linear, nn.Tanh, nn.Linear]
    assert mlp([4, 3], bias=False)[0].bias is None
    with pytest.raises(HyperparameterError, match="at least an input and an output"):
        mlp([4])
    with pytest.raises(HyperparameterError, match="positive integer"):
        mlp([4, 0, 2])
