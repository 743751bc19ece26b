"""Observation models: categorical (classification) and Gaussian (regression).

A likelihood turns the network's outputs into the ``obs`` sample site of the model (inside
the data plate the network opens) and summarises Monte Carlo draws of the outputs into a
posterior predictive :class:`Prediction`.
"""

import dataclasses
from dataclasses import dataclass
from typing import Optional, Union

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .errors import HyperparameterError, InputError
from .priors.base import emit_param
from .validation import check_finite, check_positive

__all__ = [
    "Likelihood",
    "CategoricalLikelihood",
    "GaussianLikelihood",
    "Prediction",
    "make_likelihood",
]


@dataclass
class Prediction:
    """Posterior predictive summary of ``num_samples`` guide draws.

    Classification: ``mean`` holds the predictive class probabilities ``(batch, classes)``
    (also available as ``probs``) and ``std`` their standard deviation across draws.
    Regression: ``mean`` is the predictive mean ``(batch,)`` or ``(batch, outputs)``,
    ``std`` the total predictive standard deviation (draw-to-draw spread and observation
    noise) and ``epistemic_std`` the draw-to-draw part alone.
    ``draws`` holds the raw network outputs ``(num_samples, batch, outputs)``.
    """

    mean: torch.Tensor
    std: torch.Tensor
    draws: torch.Tensor
    epistemic_std: Optional[torch.Tensor] = None

    @property
    def probs(self) -> torch.Tensor:
        """Alias of ``mean`` (class probabilities) for classification."""
        return self.mean

    def cpu(self) -> "Prediction":
        """The same prediction with every tensor on the CPU (itself if they are already)."""
        fields = {name: None if value is None else value.cpu() for name, value in vars(self).items()}
        return dataclasses.replace(self, **fields)


class Likelihood(nn.Module):
    """Base class: validates targets, emits the ``obs`` site and summarises predictions."""

    #: whether targets are class labels
    is_classification: bool = False

    def check_targets(self, y: torch.Tensor, num_outputs: int) -> torch.Tensor:
        """Return ``y`` in the shape the ``obs`` site expects or raise :class:`InputError`."""
        raise NotImplementedError

    def check_outputs(self, num_outputs: int) -> None:
        """Raise :class:`~pyro_sparse_bnn.core.errors.UnsupportedLayerError`-like errors if the
        network's output size cannot be used with this likelihood."""

    def sample(self, outputs: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        """Emit the ``obs`` site given the network outputs ``(batch, num_outputs)``."""
        raise NotImplementedError

    def summarize(self, draws: torch.Tensor) -> Prediction:
        """Summarise output draws ``(num_samples, batch, num_outputs)``."""
        raise NotImplementedError


class CategoricalLikelihood(Likelihood):
    """``y ~ Categorical(logits=f(x))`` for integer labels in ``[0, num_outputs)``."""

    is_classification = True

    def check_outputs(self, num_outputs):
        if num_outputs < 2:
            raise HyperparameterError(
                f"a categorical likelihood needs at least 2 outputs, the network has {num_outputs}"
            )

    def check_targets(self, y, num_outputs):
        if not isinstance(y, torch.Tensor):
            raise InputError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            raise InputError(
                f"class labels y must be an integer tensor (torch.long), got dtype {y.dtype}"
            )
        if y.dim() == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.dim() != 1:
            raise InputError(f"class labels y must have shape (batch,), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_outputs):
            raise InputError(
                f"class labels y must lie in [0, {num_outputs}) for a network with "
                f"{num_outputs} outputs, got values in [{int(y.min())}, {int(y.max())}]"
            )
        return y

    def sample(self, outputs, y):
        return pyro.sample("obs", dist.Categorical(logits=outputs), obs=y)

    def summarize(self, draws):
        probs = F.softmax(draws, dim=-1)
        return Prediction(mean=probs.mean(0), std=probs.std(0, unbiased=False), draws=draws)


class GaussianLikelihood(Likelihood):
    """``y ~ Normal(f(x), noise_scale^2)`` with fixed or learned observation noise.

    :param float noise_scale: observation standard deviation (initial value if learned).
    :param bool learn_noise: fit the noise scale as a point estimate (type-II maximum
        likelihood) together with the guide.
    """

    def __init__(self, noise_scale: float = 1.0, learn_noise: bool = False):
        super().__init__()
        noise_scale = check_positive("noise_scale", noise_scale)
        self.learn_noise = bool(learn_noise)
        # softplus^{-1}(s) = s + log(-expm1(-s)), stable for small and large s
        raw = torch.tensor(noise_scale)
        raw = raw + torch.log(-torch.expm1(-raw))
        if self.learn_noise:
            self.noise_rho = nn.Parameter(raw)
        else:
            self.register_buffer("noise_rho", raw)

    @property
    def noise_scale(self) -> torch.Tensor:
        """Current observation standard deviation (no gradient)."""
        return F.softplus(self.noise_rho.detach())

    def check_targets(self, y, num_outputs):
        if not isinstance(y, torch.Tensor):
            raise InputError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if not y.is_floating_point():
            raise InputError(f"regression targets y must be floating point, got dtype {y.dtype}")
        expected = "(batch,)" if num_outputs == 1 else f"(batch, {num_outputs})"
        if num_outputs == 1 and y.dim() == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if (num_outputs == 1 and y.dim() != 1) or (
            num_outputs > 1 and (y.dim() != 2 or y.shape[1] != num_outputs)
        ):
            raise InputError(f"regression targets y must have shape {expected}, got {tuple(y.shape)}")
        check_finite("y", y)
        return y

    def _scale(self):
        rho = emit_param("likelihood.noise_rho", self.noise_rho) if self.learn_noise else self.noise_rho
        return F.softplus(rho)

    def sample(self, outputs, y):
        scale = self._scale()
        if outputs.shape[-1] == 1:
            return pyro.sample("obs", dist.Normal(outputs[..., 0], scale), obs=y)
        return pyro.sample("obs", dist.Normal(outputs, scale).to_event(1), obs=y)

    def summarize(self, draws):
        if draws.shape[-1] == 1:
            draws = draws[..., 0]
        mean = draws.mean(0)
        epistemic_var = draws.var(0, unbiased=False)
        std = (epistemic_var + self.noise_scale**2).sqrt()
        return Prediction(mean=mean, std=std, draws=draws, epistemic_std=epistemic_var.sqrt())


def make_likelihood(likelihood: Union[str, Likelihood]) -> Likelihood:
    """Resolve ``"categorical"`` / ``"gaussian"`` (or a :class:`Likelihood`) to a likelihood."""
    if isinstance(likelihood, Likelihood):
        return likelihood
    names = {
        "categorical": CategoricalLikelihood,
        "classification": CategoricalLikelihood,
        "gaussian": GaussianLikelihood,
        "regression": GaussianLikelihood,
    }
    if isinstance(likelihood, str) and likelihood.lower() in names:
        return names[likelihood.lower()]()
    raise HyperparameterError(
        f"likelihood must be one of {sorted(names)} or a Likelihood instance, got {likelihood!r}"
    )
