"""Standard architectures of the sparsity literature, as plain ``nn.Sequential`` networks.

Each function returns an ordinary ``torch.nn.Sequential`` with freshly initialised weights,
ready for :class:`~pyro_sparse_bnn.core.network.SparseBNN` (its weights become the initial
posterior means) or for training as a deterministic network. Every network takes flat
inputs ``(batch, features)``, as the Fashion-MNIST loader gives them.

* :func:`lenet5_caffe` -- LeNet-5-Caffe, the convolutional benchmark of Louizos et al. (2017)
  and Jantre et al. (2023): 431,080 parameters for 28 x 28 single-channel images.
* :func:`lenet_300_100` -- the 784-300-100-10 fully connected LeNet (266,610 parameters).
* :func:`mlp` -- any fully connected network.
"""

from typing import Callable, Sequence

from torch import nn

from .errors import HyperparameterError
from .validation import check_positive_int

__all__ = ["lenet5_caffe", "lenet_300_100", "mlp"]


def mlp(widths: Sequence[int], activation: Callable[[], nn.Module] = nn.ReLU, bias: bool = True) -> nn.Sequential:
    """Fully connected network ``widths[0] -> widths[1] -> ... -> widths[-1]`` with
    ``activation()`` after every hidden layer (none after the output layer).

    :param widths: layer widths, inputs first and outputs last (at least two).
    :param activation: a module class or factory, e.g. ``nn.ReLU`` or ``nn.SiLU``.
    :param bool bias: whether the layers have biases.
    :returns: ``nn.Sequential`` mapping ``(batch, widths[0])`` to ``(batch, widths[-1])``.
    """
    widths = list(widths)
    if len(widths) < 2:
        raise HyperparameterError(f"widths needs at least an input and an output width, got {widths!r}")
    widths = [check_positive_int("every width", w) for w in widths]
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def lenet_300_100(num_inputs: int = 784, num_classes: int = 10,
                  activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """LeNet-300-100: ``num_inputs -> 300 -> 100 -> num_classes`` (266,610 parameters for
    784 inputs and 10 classes).

    :returns: ``nn.Sequential`` mapping ``(batch, num_inputs)`` to ``(batch, num_classes)`` logits.
    """
    return mlp([check_positive_int("num_inputs", num_inputs), 300, 100, check_positive_int("num_classes", num_classes)],
               activation)


def lenet5_caffe(num_classes: int = 10, in_channels: int = 1,
                 activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """LeNet-5-Caffe for 28 x 28 images, taking them flat.

    ``Unflatten(1, (in_channels, 28, 28))`` -> conv 20 5x5 -> act -> max-pool 2 -> conv 50
    5x5 -> act -> max-pool 2 -> flatten (800 = 50 x 4 x 4) -> fc 500 -> act -> fc
    ``num_classes``. With one input channel and 10 classes it has 431,080 weights and biases
    (520 + 25,050 + 400,500 + 5,010). The activations follow Louizos et al.'s code (the
    original Caffe model has only the one after fc 500).

    :param int num_classes: number of outputs (logits).
    :param int in_channels: image channels; the input is ``(batch, in_channels * 784)``,
        channel-major (each channel's 28 x 28 pixels row by row).
    :param activation: a module class or factory, e.g. ``nn.ReLU`` or ``nn.SiLU`` (the SS-GHS
        authors' choice).
    :returns: ``nn.Sequential`` mapping ``(batch, in_channels * 784)`` to ``(batch, num_classes)``.
    """
    in_channels = check_positive_int("in_channels", in_channels)
    num_classes = check_positive_int("num_classes", num_classes)
    return nn.Sequential(
        nn.Unflatten(1, (in_channels, 28, 28)),
        nn.Conv2d(in_channels, 20, 5), activation(), nn.MaxPool2d(2),   # 20 x 12 x 12
        nn.Conv2d(20, 50, 5), activation(), nn.MaxPool2d(2),            # 50 x 4 x 4
        nn.Flatten(),
        nn.Linear(800, 500), activation(),
        nn.Linear(500, num_classes),
    )
