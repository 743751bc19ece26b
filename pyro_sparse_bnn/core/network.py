"""The network wrapper: an ordinary ``nn.Sequential`` plus a prior becomes a Pyro model and guide.

Example::

    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    bnn = SparseBNN(net, SpikeSlab(), likelihood="categorical", num_data=len(x_train))
    svi = pyro.infer.SVI(bnn.model, bnn.guide, pyro.optim.Adam({"lr": 5e-3}), MeanFieldELBO())
    for step in range(1000):
        svi.step(x_batch, y_batch)

``bnn.model(x, y)`` is a true Pyro model: it samples every layer's prior sites, runs the
network, and observes ``y`` inside ``pyro.plate("data", num_data, subsample=...)`` so a
minibatch ELBO is scaled to the full training set. ``bnn.guide(x, y)`` samples the matching
guide sites from parameters owned by the wrapper (``bnn.parameters()``), never from Pyro's
global param store, so several networks can live in one process.
"""

from contextlib import contextmanager, nullcontext
from typing import List, Optional, Sequence, Tuple, Union

import pyro
import torch
from pyro import poutine
from torch import nn

from .architecture import Architecture, parse_sequential
from .errors import HyperparameterError, InputError, NotFittedError
from .likelihoods import CategoricalLikelihood, Likelihood, Prediction, make_likelihood
from .priors.base import Prior, PriorLayer, apply_layer
from .reparameterization import LocalReparameterization
from .validation import (
    as_tensor,
    check_features,
    check_positive,
    check_positive_int,
    check_same_length,
)

__all__ = ["SparseBNN", "AUTO_LOCAL_REPARAMETERIZATION", "check_bnn"]

#: ``local_reparameterization="auto"`` samples one weight tensor per step in a conv layer
#: whose ``batch_size * out_positions`` exceeds this; every other layer samples pre-activations
AUTO_LOCAL_REPARAMETERIZATION = 512


class SparseBNN(nn.Module):
    """Bayesian neural network with a sparsity prior on every parametric layer.

    :param nn.Sequential net: the architecture: ``nn.Linear`` and ``nn.Conv2d`` layers,
        parameter-free elementwise activations, ``nn.MaxPool2d`` / ``nn.AvgPool2d``,
        ``nn.Flatten`` and a leading ``nn.Unflatten`` (nested ``nn.Sequential`` allowed; see
        :mod:`~pyro_sparse_bnn.core.architecture`). Its current weights become the initial
        posterior means.
    :param prior: a :class:`~pyro_sparse_bnn.core.priors.base.Prior` for every layer, or a
        sequence with one prior per parametric (``nn.Linear`` / ``nn.Conv2d``) layer.
    :param likelihood: ``"categorical"`` (integer labels, outputs are logits),
        ``"gaussian"`` (regression, unit noise), or a
        :class:`~pyro_sparse_bnn.core.likelihoods.Likelihood` instance such as
        ``GaussianLikelihood(noise_scale=0.5, learn_noise=True)``.
    :param int num_data: training-set size ``N``; minibatch log-likelihoods are scaled by
        ``N / batch_size``. ``None`` treats every call as the full data set (``fit`` sets it).
    :param float temperature: initial relaxation temperature of the indicators (0.5).
    :param local_reparameterization: how :func:`~pyro_sparse_bnn.core.fit.fit`, :meth:`forward`
        and :meth:`predict` draw the weights. ``True``: every layer samples its
        pre-activations (:mod:`~pyro_sparse_bnn.core.reparameterization`), with independent noise
        for every example; ``False``: every layer samples one weight tensor per step, shared
        by the minibatch (what the model does when run without the handler). Both estimate
        the same ELBO; local reparameterisation has the lower gradient variance, but it
        doubles the layer's matrix products (a mean and a variance pass), so its cost per
        step grows with the batch and, for conv layers, with the output positions.
        ``"auto"`` (the default) decides per layer and per call: linear layers always sample
        pre-activations, conv layers draw one weight tensor where ``batch_size *
        out_positions > AUTO_LOCAL_REPARAMETERIZATION`` (512; ``out_height * out_width``
        output positions), which at any useful batch size means every conv layer (see
        :meth:`local_reparameterization_layers`).
    :param input_shape: shape of one input example without the batch dimension, e.g.
        ``(1, 28, 28)``. Needed for a network that starts with a conv layer; inferred as
        ``(in_features,)`` for one that starts with ``nn.Linear`` and as
        ``(prod(unflattened_size),)`` for one that starts with ``nn.Unflatten``.

    The wrapper lives on the device and in the floating-point dtype of ``net``; move it
    afterwards with ``bnn.to(...)`` like any module.

    Shapes: ``x`` is ``(batch, *input_shape)``, e.g. ``(batch, in_features)``; ``y`` is
    ``(batch,)`` integer labels for classification, ``(batch,)`` or ``(batch, outputs)``
    floats for regression.
    """

    def __init__(
        self,
        net: nn.Sequential,
        prior: Union[Prior, Sequence[Prior]],
        likelihood: Union[str, Likelihood] = "categorical",
        num_data: Optional[int] = None,
        temperature: float = 0.5,
        local_reparameterization: Union[bool, str] = "auto",
        input_shape: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        self.architecture: Architecture = parse_sequential(net, input_shape)
        specs = self.architecture.specs
        self.num_data = self._check_num_data(num_data)
        priors = self._per_layer_priors(prior, len(specs))
        network = self.architecture.network_info(self.num_data)
        self.layers = nn.ModuleList([p.build(spec, network) for p, spec in zip(priors, specs, strict=True)])
        self.priors = tuple(priors)
        self.fixed = nn.ModuleList(
            [stage.module for stage in self.architecture.stages if not stage.is_parametric]
        )
        if not (isinstance(local_reparameterization, bool) or local_reparameterization == "auto"):
            raise HyperparameterError(
                f"local_reparameterization must be True, False or 'auto', got {local_reparameterization!r}"
            )
        #: whether ``fit``, ``forward`` and ``predict`` use the local reparameterisation trick:
        #: ``True``, ``False`` or ``"auto"`` (see :meth:`local_reparameterization_layers`)
        self.local_reparameterization = local_reparameterization
        self.likelihood = make_likelihood(likelihood)
        self.likelihood.check_outputs(self.architecture.num_outputs)
        self._check_output_module(net)
        self.register_buffer("temperature", torch.tensor(check_positive("temperature", temperature)))
        #: number of optimisation steps taken by :func:`~pyro_sparse_bnn.core.fit.fit`
        self.register_buffer("num_steps", torch.tensor(0, dtype=torch.long))
        # follow the user's network: its device and floating-point dtype
        reference = self.architecture.specs[0].module.weight
        self.to(device=reference.device, dtype=reference.dtype)
        self.initial_fingerprint = self._fingerprint()

    # -- construction helpers ------------------------------------------------------------
    def _check_output_module(self, net: nn.Sequential) -> None:
        """A categorical network must end in its last linear/conv layer: the likelihood reads
        the outputs as logits, and an activation after them bounds or bends them (a final ReLU
        makes every negative logit 0, so the network can never make a class less likely than
        the others by more than the largest logit)."""
        last = self.architecture.stages[-1].module
        if isinstance(self.likelihood, CategoricalLikelihood) and not isinstance(last, (nn.Linear, nn.Conv2d, nn.Identity,
                                                                                         nn.Flatten, nn.Unflatten)):
            raise InputError(
                f"the network ends in {type(last).__name__}, but the categorical likelihood reads the outputs of "
                f"the last layer as logits (it applies the softmax itself), and a final {type(last).__name__} "
                f"bounds or distorts them; remove it so the network ends in its output layer"
            )

    @staticmethod
    def _check_num_data(num_data):
        if num_data is None:
            return None
        return check_positive_int("num_data", num_data)

    @staticmethod
    def _per_layer_priors(prior, num_layers):
        if isinstance(prior, Prior):
            return [prior] * num_layers
        if isinstance(prior, (list, tuple)) and all(isinstance(p, Prior) for p in prior):
            if len(prior) != num_layers:
                raise HyperparameterError(
                    f"got {len(prior)} priors for a network with {num_layers} parametric layers"
                )
            return list(prior)
        raise HyperparameterError(
            f"prior must be a Prior or a sequence of Priors (one per layer), got {prior!r}"
        )

    # -- properties ----------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        """Number of input units of the first layer: input features, or input channels of a
        network that starts with a conv layer (the units that feature PIPs and ``compress``
        select)."""
        return self.architecture.num_inputs

    @property
    def input_shape(self):
        """Shape of one input example (no batch dimension), e.g. ``(784,)`` or ``(1, 28, 28)``."""
        return self.architecture.input_shape

    @property
    def num_outputs(self) -> int:
        """Number of network outputs (classes or regression targets)."""
        return self.architecture.num_outputs

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the network's parameters (inputs are converted to it)."""
        return self.temperature.dtype

    @property
    def device(self) -> torch.device:
        """Device of the network's parameters."""
        return self.temperature.device

    def set_temperature(self, temperature: float) -> None:
        """Set the relaxation temperature of the indicators (in place, > 0)."""
        self.temperature.fill_(check_positive("temperature", temperature))

    def indicator_parameters(self) -> List[nn.Parameter]:
        """The indicator logits of every layer, in layer order
        (:meth:`~pyro_sparse_bnn.core.priors.base.PriorLayer.indicator_parameters`); empty
        when no layer's prior has indicators."""
        return [p for layer in self.layers for p in layer.indicator_parameters()]

    def layer(self, name: str) -> PriorLayer:
        """The prior layer called ``name`` (e.g. ``"net.0"``)."""
        for layer in self.layers:
            if layer.spec.name == name:
                return layer
        names = [layer.spec.name for layer in self.layers]
        raise KeyError(f"no layer {name!r}; layers are {names}")

    def _fingerprint(self):
        params = [p.detach().double() for layer in self.layers for p in layer.parameters()]
        return tuple(float(v) for p in params for v in (p.sum(), p.abs().sum()))

    @property
    def is_fitted(self) -> bool:
        """Whether the guide has been trained: by :func:`~pyro_sparse_bnn.core.fit.fit`, or by any
        other optimiser (its parameters have moved from their initial values)."""
        return int(self.num_steps) > 0 or self._fingerprint() != self.initial_fingerprint

    # -- data checks ---------------------------------------------------------------------
    #: whether :meth:`model` may skip :meth:`check_data` (see :meth:`checked_data`)
    _data_checked = False

    @contextmanager
    def checked_data(self):
        """Block in which :meth:`model` trusts its inputs, for callers that validated them
        already: ``fit`` checks the whole training set up front and ``predict`` its input, so
        that a step does not scan every minibatch for NaNs again."""
        previous, self._data_checked = self._data_checked, True
        try:
            yield
        finally:
            self._data_checked = previous

    def check_data(self, x, y=None):
        """Validate ``x`` (and ``y``) against the network; return them ready for the model.

        :raises InputError: on wrong shapes, dtypes, devices, NaN/inf or labels out of range.
        """
        check_features(x, self.input_shape, self.dtype, self.device)
        if y is not None:
            y = self.likelihood.check_targets(y, self.num_outputs)
            if y.is_floating_point():
                y = y.to(self.dtype)
            check_same_length([x, y], ["x", "y"])
            if y.device != x.device:
                raise InputError(f"y is on {y.device} but x is on {x.device}")
        return x, y

    def as_data(self, x, y=None):
        """Convert numpy arrays / sequences to tensors of the network's dtype and device."""
        x = as_tensor(x, "x", self.dtype, self.device)
        if y is not None:
            y = as_tensor(y, "y", self.dtype, self.device)
        return x, y

    # -- Pyro model and guide ------------------------------------------------------------
    #: plate nesting of :meth:`model`: the data plate, at dimension -1 (the guide has none)
    max_plate_nesting = 1

    def network_forward(self, x, draws):
        """Run the network on ``x`` with one :class:`LayerDraw` per parametric layer.

        The draws may carry leading draw dimensions (one set of weights per posterior draw,
        as under ``Predictive(parallel=True)``); the outputs are then
        ``(*draws, batch, outputs)``. Fixed modules (pooling, flatten, ...) see the draws
        and the batch folded into one batch dimension.
        """
        h = x
        for stage in self.architecture.stages:
            if stage.is_parametric:
                h = apply_layer(h, self.layers[stage.layer_index].spec, draws[stage.layer_index])
                continue
            lead = h.dim() - len(stage.in_shape) if stage.in_shape is not None else 1
            if lead <= 1:
                h = stage.module(h)
            else:
                out = stage.module(h.reshape((-1,) + h.shape[lead:]))
                h = out.reshape(h.shape[:lead] + out.shape[1:])
        return h

    def model(self, x, y=None):
        """Pyro model: priors on every layer, then ``obs ~ likelihood(f(x))`` in a data plate.

        :param torch.Tensor x: inputs ``(batch, *input_shape)``.
        :param y: targets (see class docstring) or ``None`` to sample them.
        :returns: network outputs ``(batch, outputs)`` (logits or regression means).

        The model's only plate is the data plate, at dimension ``-1``
        (:attr:`max_plate_nesting` is 1). Under an outer vectorising plate at dimension
        ``-2`` -- ``Predictive(..., parallel=True)``, or an ELBO with
        ``vectorize_particles=True, max_plate_nesting=1`` -- every weight site gets a
        leading dimension of draws, and the outputs and ``obs`` are
        ``(draws, batch, ...)``.
        """
        if not self._data_checked:
            x, y = self.check_data(x, y)
        draws = [layer.model() for layer in self.layers]
        outputs = self.network_forward(x, draws)
        batch = x.shape[0]
        size = self.num_data if self.num_data is not None else batch
        with pyro.plate("data", size=max(size, batch), subsample=torch.arange(batch, device=x.device), dim=-1):
            self.likelihood.sample(outputs, y)
        return outputs

    def guide(self, x=None, y=None):
        """Pyro guide: samples every layer's guide sites (the data are not needed)."""
        for layer in self.layers:
            layer.guide(self.temperature)

    def local_reparameterization_layers(self, batch_size: Optional[int] = None) -> Tuple[str, ...]:
        """Names of the layers that sample pre-activations (local reparameterisation) for a
        minibatch of ``batch_size`` examples; the others sample one weight tensor.

        With ``local_reparameterization=True`` every layer, with ``False`` none, and with
        ``"auto"`` every linear layer and the conv layers with ``batch_size * out_positions
        <=`` :data:`AUTO_LOCAL_REPARAMETERIZATION` (every layer when ``batch_size`` is
        ``None``).

        Why that rule (measured on Fashion-MNIST): local reparameterisation adds a second
        matrix product per layer (``batch_size * out_positions`` multiply-adds per weight)
        and lowers the gradient variance. For LeNet-300-100 at batch 128 one weight draw per
        step did not learn in 10 epochs. For a 784-400-400-10 MLP at batch 1024 weight draws
        were 1.7x cheaper per epoch and reached the same posterior predictive accuracy, but
        their inclusion probabilities separated the units worse: at 10 % of the parameters
        the compressed, fine-tuned network was 3.1 points below the dense one instead of 1.2.
        So linear layers keep local reparameterisation. In the conv layers of LeNet-5-Caffe
        (576 and 64 output positions) the second convolution made an epoch 1.7x longer for no
        better accuracy after the same number of epochs.
        """
        names = tuple(spec.name for spec in self.architecture.specs)
        if self.local_reparameterization is True or (self.local_reparameterization == "auto" and batch_size is None):
            return names
        if self.local_reparameterization is False:
            return ()
        return tuple(spec.name for spec in self.architecture.specs
                     if spec.kind == "linear" or batch_size * spec.out_positions <= AUTO_LOCAL_REPARAMETERIZATION)

    def reparameterization(self, skip_slab_draws: bool = False, batch_size: Optional[int] = None):
        """Context manager for running guide and model: the local reparameterisation handler
        for the layers that use it (:meth:`local_reparameterization_layers` at
        ``batch_size``), or a no-op when none does.

        :param bool skip_slab_draws: let the handler skip the guide's weight-sized slab draws
            of those layers, which nothing reads under local reparameterisation with an
            analytic-KL ELBO (see
            :class:`~pyro_sparse_bnn.core.reparameterization.LocalReparameterization`).
        :param batch_size: number of examples in the minibatch (``None``: as for an unknown
            batch size, see :meth:`local_reparameterization_layers`).
        """
        layers = self.local_reparameterization_layers(batch_size)
        if not layers:
            return nullcontext()
        every = len(layers) == len(self.architecture.specs)
        return LocalReparameterization(skip_slab_draws=skip_slab_draws, layers=None if every else layers)

    # -- prediction ----------------------------------------------------------------------
    def forward(self, x):
        """One posterior draw of the network outputs: sample the guide, run the model on it
        (pre-activations sampled per example in the layers that use local
        reparameterisation at this batch size, see :meth:`local_reparameterization_layers`).

        :param torch.Tensor x: ``(batch, *input_shape)``.
        :returns: outputs ``(batch, outputs)``.
        """
        with self.reparameterization(skip_slab_draws=True, batch_size=x.shape[0]):
            guide_trace = poutine.trace(self.guide).get_trace(x)
            return poutine.replay(self.model, trace=guide_trace)(x)

    @torch.no_grad()
    def predict(self, x, num_samples: int = 100, batch_size: Optional[int] = None,
                seed: Optional[int] = None) -> Prediction:
        """Posterior predictive from ``num_samples`` Monte Carlo draws of the guide.

        :param x: inputs ``(batch, *input_shape)`` (tensor or array).
        :param int num_samples: number of guide draws.
        :param batch_size: split ``x`` into chunks of this size to bound memory.
        :param seed: draw with this seed, so that two calls give identical predictions,
            without touching the global random state (``None``: draw from the global state).
        :returns: :class:`~pyro_sparse_bnn.core.likelihoods.Prediction` (class probabilities, or
            mean and standard deviation for regression), on the CPU whatever the network's
            device (``x`` moves to the network's device; the draws are computed there).
        :raises NotFittedError: if the network has not been fitted (its guide would only
            reproduce the initial weights).
        """
        check_bnn(self, "predict", fitted=True)
        num_samples = check_positive_int("num_samples", num_samples, InputError)
        if seed is not None and (isinstance(seed, bool) or int(seed) != seed):
            raise InputError(f"seed must be an integer or None, got {seed!r}")
        x, _ = self.as_data(x)
        self.check_data(x)
        chunks = [x] if batch_size is None else torch.split(x, int(batch_size))
        with torch.random.fork_rng(devices=[]) if seed is not None else nullcontext(), self.checked_data():
            if seed is not None:
                torch.manual_seed(int(seed))
            draws = torch.cat(
                [torch.stack([self(chunk) for _ in range(int(num_samples))]) for chunk in chunks], dim=1
            )
        return self.likelihood.summarize(draws).cpu()

    def extra_repr(self):
        widths = "-".join(map(str, self.architecture.widths))
        priors = {type(p).__name__ for p in self.priors}
        shape = f", input_shape={self.input_shape}" if len(self.input_shape) > 1 else ""
        return (f"architecture={widths}{shape}, prior={'/'.join(sorted(priors))}, num_data={self.num_data}, "
                f"local_reparameterization={self.local_reparameterization}")


def check_bnn(bnn, what: str, fitted: bool = False):
    """Raise :class:`InputError` unless ``bnn`` is a :class:`~pyro_sparse_bnn.core.network.SparseBNN`
    (and :class:`~pyro_sparse_bnn.core.errors.NotFittedError` if ``fitted`` and it is not fitted).

    :param str what: the calling function, for the message.
    """
    if not isinstance(bnn, SparseBNN):
        raise InputError(f"{what} needs a SparseBNN as bnn, got {type(bnn).__name__}")
    if fitted and not bnn.is_fitted:
        raise NotFittedError(
            f"{what}: the network has not been fitted yet (its guide still has its initial "
            f"parameters); call pyro_sparse_bnn.fit first"
        )
    return bnn
