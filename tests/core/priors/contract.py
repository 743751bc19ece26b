"""The contract every prior passes: subclass :class:`PriorContract` and define ``make_prior``.

A new prior gets the whole battery (site structure, a finite and decreasing ELBO, closed-form
KLs against Monte Carlo, PIPs that are probabilities, compress exactness, prior predictive,
and the same on small conv nets) by adding a test class of three lines.
"""

import math
from contextlib import nullcontext

import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive
from torch import nn
from torch.distributions import kl_divergence

from pyro_sparse_bnn import SparseBNN, compress, fit
from pyro_sparse_bnn.analysis import (
    edge_inclusion_probs,
    feature_inclusion_probs,
    masked_posterior_mean,
    node_inclusion_probs,
    weight_moments,
)
from pyro_sparse_bnn.core import MeanFieldELBO, local_reparameterization
from tests.conftest import conv_net, mlp, randomize_guide, tiny_conv_net


def traces(bnn, x, y):
    """``(guide trace, model trace replayed on it)`` of one draw."""
    guide = poutine.trace(bnn.guide).get_trace(x, y)
    return guide, poutine.trace(poutine.replay(bnn.model, trace=guide)).get_trace(x, y)


def latent(trace):
    """Names of the latent sample sites of ``trace``, in order."""
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"] and n != "data"]


def switch_log_odds(bnn):
    """``logit`` of every switch's inclusion probability (``inclusion_groups``), clamped to
    ``(1e-6, 1 - 1e-6)`` so that a probability that rounds to 1 stays finite."""
    pips = torch.cat([layer.inclusion_groups().detach().double().flatten() for layer in bnn.layers])
    return torch.logit(pips.clamp(1e-6, 1 - 1e-6))


def assert_fit_learns_to_prune(bnn, x, y, **fit_arguments):
    """A short fit (60 epochs) whose ELBO is finite and falls (the last 5 epochs below 0.8x the
    first 5) and that moves at least one switch towards off: its inclusion odds fall by a
    factor e or more. A prior that cannot prune (frozen indicators, a dropout rate that never
    grows) fails the second part even though its loss falls."""
    before = switch_log_odds(bnn)
    history = fit(bnn, x, y, epochs=60, batch_size=40, lr=1e-2, seed=0, progress=False, **fit_arguments)
    assert all(math.isfinite(v) for v in history.loss)
    first, last = sum(history.loss[:5]) / 5, sum(history.loss[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    drop = float((before - switch_log_odds(bnn)).max())
    assert drop >= 1.0, f"no switch moved towards off: the largest fall of a switch's log-odds is {drop:.3g}"


class PriorContract:
    """Shared tests; subclasses implement :meth:`make_prior`."""

    widths = (4, 6, 3)
    num_data = 120

    def make_prior(self):
        raise NotImplementedError

    def kl_offset(self, name, site):
        """``(offset, tolerance)`` expected between the Monte Carlo ``log q - log p`` and the
        registered KL of site ``name``: zero except for improper priors, whose KL is defined up
        to a constant (and may be an approximation with a known accuracy)."""
        return 0.0, 0.0

    def randomize(self, bnn, seed=0):
        """Set the guide to an arbitrary 'fitted' state (override for unusual parameters)."""
        return randomize_guide(bnn, seed=seed)

    def build(self, widths=None, activation=torch.nn.ReLU):
        torch.manual_seed(0)
        return SparseBNN(mlp(widths or self.widths, activation), self.make_prior(), num_data=self.num_data)

    def data(self):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(self.num_data, self.widths[0], generator=generator)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        return x, y

    # -- structure -------------------------------------------------------------------------
    def test_model_and_guide_share_sites_in_the_same_order(self):
        bnn = self.build()
        x, y = self.data()
        guide, model = traces(bnn, x, y)
        assert latent(model) == latent(guide)
        assert "obs" in model.nodes and model.nodes["obs"]["is_observed"]

    def test_site_values_have_their_distributions_shapes(self):
        bnn = self.build()
        x, y = self.data()
        guide = poutine.trace(bnn.guide).get_trace(x, y)
        model = poutine.trace(poutine.replay(bnn.model, trace=guide)).get_trace(x, y)
        for name, site in guide.nodes.items():
            if site["type"] == "sample":
                assert site["value"].shape == site["fn"].shape(), name
                assert model.nodes[name]["fn"].shape() == site["fn"].shape(), name

    # -- objective -------------------------------------------------------------------------
    def test_elbo_is_finite_and_decreases_and_the_switches_move_towards_pruning(self):
        bnn = self.build()
        x, y = self.data()
        assert_fit_learns_to_prune(bnn, x, y)

    @pytest.mark.slow  # about 10 s each: many guide draws
    def test_closed_form_kls_match_monte_carlo(self):
        """Per latent site: mean of log q(v) - log p(v) over guide draws = mean closed-form KL."""
        bnn = self.randomize(self.build(), seed=3)
        x, y = self.data()
        num_draws = 1000
        differences, offsets = {}, {}
        for _ in range(num_draws):
            guide = poutine.trace(bnn.guide).get_trace(x, y)
            model = poutine.trace(poutine.replay(bnn.model, trace=guide)).get_trace(x, y)
            for name, site in guide.nodes.items():
                if site["type"] != "sample":
                    continue
                p = model.nodes[name]["fn"]
                value = site["value"].detach()
                log_ratio = site["fn"].log_prob(value) - p.log_prob(value)
                closed = kl_divergence(site["fn"], p)
                differences.setdefault(name, []).append(float((log_ratio - closed).sum().detach()))
                offsets[name] = self.kl_offset(name, site)
        for name, diffs in differences.items():
            d = torch.tensor(diffs, dtype=torch.float64)
            offset, tolerance = offsets[name]
            error = abs(float(d.mean()) - offset)
            assert error < 5 * float(d.std()) / math.sqrt(num_draws) + tolerance + 1e-6, name

    # -- local reparameterisation -----------------------------------------------------------
    def slab_dominated(self):
        """The initial guide (indicators on, group scales nearly deterministic) with wide slabs
        (``sigma = softplus(-1) = 0.31``, or the prior's bound on it), so that the slab is the
        main source of noise."""
        bnn = self.build()
        with torch.no_grad():
            for name, p in bnn.named_parameters():
                if name.endswith("slab.rho"):
                    p.fill_(-1.0)
                elif name.endswith("slab.log_var"):  # the same sigma, log-variance parameterisation
                    p.fill_(2 * math.log(math.log1p(math.exp(-1.0))))
        return bnn

    def losses_and_gradients(self, bnn, x, y, num_draws, local):
        elbo, first = MeanFieldELBO(), bnn.layers[0]
        slab_loc = next(p for name, p in first.named_parameters() if name.endswith("slab.loc"))
        losses, grads = [], []
        for _ in range(num_draws):
            with local_reparameterization() if local else nullcontext():
                loss = elbo.differentiable_loss(bnn.model, bnn.guide, x, y)
            (grad,) = torch.autograd.grad(loss, [slab_loc])
            losses.append(float(loss.detach()))
            grads.append(grad.flatten())
        return torch.tensor(losses, dtype=torch.float64), torch.stack(grads).double()

    def test_local_reparameterization_keeps_the_expected_loss(self):
        """Same per-example output distribution, hence the same expected ELBO: the means of the
        two estimators agree within 4 standard errors of their difference."""
        bnn = self.randomize(self.build(), seed=5)
        x, y = self.data()
        plain, _ = self.losses_and_gradients(bnn, x, y, 200, local=False)
        local, _ = self.losses_and_gradients(bnn, x, y, 200, local=True)
        standard_error = math.sqrt(plain.var() / len(plain) + local.var() / len(local))
        assert abs(float(plain.mean() - local.mean())) < 4 * standard_error

    def test_local_reparameterization_lowers_the_gradient_variance(self):
        """With one shared weight draw the slab noise of the 120 examples moves together; with
        independent per-example noise it averages out. The gradient of the first layer's slab
        means must lose at least half its total variance (the ideal reduction is of the order
        of the batch size)."""
        bnn = self.slab_dominated()
        x, y = self.data()
        _, plain = self.losses_and_gradients(bnn, x, y, 100, local=False)
        _, local = self.losses_and_gradients(bnn, x, y, 100, local=True)
        assert float(local.var(0).sum()) < 0.5 * float(plain.var(0).sum())

    def test_local_reparameterization_keeps_every_sample_site(self):
        bnn = self.build()
        x, y = self.data()
        with local_reparameterization():
            guide = poutine.trace(bnn.guide).get_trace(x, y)
            model = poutine.trace(poutine.replay(bnn.model, trace=guide)).get_trace(x, y)
        latent = [n for n, s in guide.nodes.items() if s["type"] == "sample"]
        assert latent and all(name in model.nodes for name in latent)
        assert model.nodes["obs"]["is_observed"]

    # -- readouts --------------------------------------------------------------------------
    def compose(self, layer, draws):
        """The augmented parameter matrices ``(n, out_units, fan_in + 1)`` from ``n`` joint draws
        of the layer's guide sites (``draws``: ``{site suffix: (n, *site shape)}``), written out
        from the prior's model in docs/methods.md (tests only; every prior defines it)."""
        raise NotImplementedError

    def dropout_rate(self, layer, draws, params):
        """For priors whose inclusion probabilities are the convention ``1 / (1 + alpha)``: the
        Monte Carlo ``alpha`` of every group from the draws (as the prior defines it), or
        ``None`` for a layer whose inclusion is fixed at 1; priors with Bernoulli switches
        return ``None`` (their switches are checked as probabilities)."""
        return None

    def guide_draws(self, bnn, num_draws):
        """``{layer: (draws, params)}``: ``num_draws`` draws of every guide site of every layer,
        sampled from the distributions of one guide trace (hard indicators are exactly 0/1),
        and the augmented parameter matrices they give."""
        result = {}
        for layer in bnn.layers:
            trace = poutine.trace(layer.guide).get_trace(torch.tensor(0.01))
            draws = {name.rsplit(".", 1)[1]: site["fn"].sample((num_draws,)).detach().double()
                     for name, site in trace.nodes.items() if site["type"] == "sample"}
            result[layer.spec.name] = draws, self.compose(layer, draws)
        return result

    def test_readouts_match_monte_carlo_draws_of_the_guide(self):
        """Posterior means, weight moments (given that the weight is kept, i.e. non-zero), edge,
        node and feature inclusion probabilities and dropout rates, as the layers report them,
        against 20000 joint draws of the guide's sites (5 standard errors)."""
        bnn = self.randomize(self.build(), seed=2)
        torch.manual_seed(0)
        n, batches = 20000, 20
        draws = self.guide_draws(bnn, n)
        kept = {name: params != 0 for name, (_, params) in draws.items()}
        has_switches = any(k.endswith("indicator") for d, _ in draws.values() for k in d)
        for layer in bnn.layers:
            site_draws, params = draws[layer.spec.name]
            on = kept[layer.spec.name]
            count = on.sum(0)
            mean = (params * on).sum(0) / count.clamp(min=1)
            centred = (params - mean) * on
            var = centred.square().sum(0) / (count - 1).clamp(min=1)
            m4 = centred.pow(4).sum(0) / count.clamp(min=1)
            enough = count >= 200
            reported_mean, reported_var = (t.double() for t in layer.weight_moments())
            mean_error = 5 * (var / count.clamp(min=1)).sqrt() + 1e-6
            var_error = 5 * ((m4 - var.square()).clamp(min=0) / count.clamp(min=1)).sqrt() + 1e-6
            name = layer.spec.name
            assert torch.all(((reported_mean - mean).abs() < mean_error)[enough]), f"{name}: weight means"
            assert torch.all(((reported_var - var).abs() < var_error)[enough]), f"{name}: weight variances"
            weight, bias = layer.posterior_mean()
            posterior_mean = layer.spec.augment(weight.double(), None if bias is None else bias.double())
            assert torch.all(((posterior_mean - mean).abs() < mean_error)[enough]), f"{name}: posterior_mean"
            if has_switches:
                frequency = on.double().mean(0)
                edge = layer.spec.augment(layer.edge_inclusion_probs().double(),
                                          torch.zeros(layer.spec.out_units) if layer.spec.has_bias else None)
                weights = slice(0, layer.spec.fan_in)
                tolerance = 5 * (frequency * (1 - frequency) / n).sqrt() + 2e-3
                assert torch.all((edge - frequency).abs()[:, weights] < tolerance[:, weights]), f"{name}: edge PIPs"
                continue
            alpha = self.dropout_rate(layer, site_draws, params)
            pips = layer.inclusion_groups().flatten().double()
            if alpha is None:
                assert torch.all(pips == 1), f"{name}: a layer without groups keeps every unit"
                continue
            per_batch = torch.stack([
                torch.log(self.dropout_rate(layer, {k: v[i::batches] for k, v in site_draws.items()},
                                            params[i::batches]))
                for i in range(batches)])
            error = 5 * per_batch.std(0) / math.sqrt(batches) + 1e-3
            reported = torch.log(1 / pips - 1)  # PIP = 1 / (1 + alpha)
            assert torch.all((reported - torch.log(alpha)).abs() < error), f"{name}: dropout rates (PIPs)"
            if hasattr(layer, "log_alpha"):
                assert torch.all((layer.log_alpha().double() - torch.log(alpha)).abs() < error), f"{name}: log_alpha"
        if has_switches:
            layers = bnn.layers
            nodes = node_inclusion_probs(bnn)
            for layer, following in zip(layers[:-1], layers[1:], strict=True):
                # a unit is used iff one of its outgoing weights is kept (and, for a node-level
                # prior, its own group is on: its row is not all zero)
                outgoing = kept[following.spec.name][:, :, : following.spec.fan_in]
                used = outgoing.any(1)
                if layer.output_inclusion_probs() is not None:
                    used = used & kept[layer.spec.name].flatten(2).any(-1)
                frequency = used.double().mean(0)
                tolerance = 5 * (frequency * (1 - frequency) / n).sqrt() + 2e-3
                assert torch.all((nodes[layer.spec.name].double() - frequency).abs() < tolerance), "node PIPs"
            first = kept[layers[0].spec.name][:, :, : layers[0].spec.fan_in].any(1).double().mean(0)
            tolerance = 5 * (first * (1 - first) / n).sqrt() + 2e-3
            assert torch.all((feature_inclusion_probs(bnn).double() - first).abs() < tolerance), "feature PIPs"

    def test_inclusion_probabilities_are_probabilities_with_the_right_shapes(self):
        bnn = self.randomize(self.build())
        for layer, probs in zip(bnn.layers, edge_inclusion_probs(bnn).values(), strict=True):
            assert probs.shape == layer.spec.weight_shape
            assert torch.all((probs >= 0) & (probs <= 1))
        for layer, probs in zip(bnn.layers, node_inclusion_probs(bnn).values(), strict=False):
            assert probs.shape == (layer.spec.out_units,)
            assert torch.all((probs >= 0) & (probs <= 1))
        features = feature_inclusion_probs(bnn)
        assert features.shape == (self.widths[0],) and torch.all((features >= 0) & (features <= 1))

    @pytest.mark.parametrize("activation", [torch.nn.ReLU, torch.nn.Tanh, torch.nn.Sigmoid])
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_compress_equals_the_masked_posterior_mean_network(self, activation, seed):
        bnn = self.randomize(self.build((6, 8, 7, 3), activation), seed=seed)
        x = torch.randn(32, 6)
        module, report = compress(bnn)
        with torch.no_grad():
            expected = masked_posterior_mean(bnn)(x)
            assert torch.allclose(module(x), expected, atol=1e-5, rtol=1e-5)
        assert report.params_after <= report.params_before + sum(layer.spec.out_units for layer in bnn.layers)
        assert not any(type(m).__module__.split(".")[0] == "pyro" for m in module.modules())

    #: whether the prior is proper (an improper prior has no prior predictive)
    proper = True

    def test_prior_predictive_runs_without_a_guide(self):
        if not self.proper:
            with pytest.raises(NotImplementedError, match="improper"):
                Predictive(self.build().model, num_samples=3)(self.data()[0])
            return
        bnn = self.build()
        x, _ = self.data()
        samples = Predictive(bnn.model, num_samples=3, return_sites=["obs", "_RETURN"])(x)
        assert samples["_RETURN"].shape == (3, len(x), self.widths[-1])
        assert torch.isfinite(samples["_RETURN"]).all()

    # -- convolutional layers --------------------------------------------------------------
    def build_conv(self, net=None):
        torch.manual_seed(0)
        return SparseBNN(net if net is not None else tiny_conv_net(), self.make_prior(),
                         num_data=self.num_data)

    def conv_data(self):
        """120 flat 6 x 6 images; the label says which quadrants are bright."""
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(self.num_data, 36, generator=generator)
        images = x.view(-1, 6, 6)
        y = (images[:, :3, :3].mean((1, 2)) > 0).long() + (images[:, 3:, 3:].mean((1, 2)) > 0.2).long()
        return x, y

    def test_conv_sites_have_one_value_per_channel_or_augmented_row(self):
        """On Unflatten -> Conv2d(1, 3, 3) -> ReLU -> MaxPool2d(2) -> Flatten -> Linear(12, 3):
        model and guide share their sites in order; every conv-layer site is a scalar, one
        value per output channel (3,) or the augmented matrix (3, 1 * 3 * 3 + 1)."""
        bnn = self.build_conv()
        x, y = self.conv_data()
        guide, model = traces(bnn, x, y)
        assert latent(model) == latent(guide)
        assert model.nodes["_RETURN"]["value"].shape == (self.num_data, 3)
        conv_sites = [n for n in latent(guide) if n.startswith("net.1.")]
        assert "net.1.slab" in conv_sites
        for name in latent(guide):
            site = guide.nodes[name]
            assert site["value"].shape == site["fn"].shape() == model.nodes[name]["fn"].shape(), name
        for name in conv_sites:
            assert guide.nodes[name]["value"].shape in {(), (3,), (3, 10)}, name
        assert guide.nodes["net.1.slab"]["value"].shape == (3, 10)
        assert guide.nodes["net.5.slab"]["value"].shape == (3, 13)

    def test_conv_readouts_have_the_documented_shapes(self):
        bnn = self.randomize(self.build_conv(), seed=1)
        conv, linear = bnn.layers
        assert edge_inclusion_probs(bnn)["net.1"].shape == (3, 1, 3, 3)
        nodes = node_inclusion_probs(bnn)
        assert list(nodes) == ["net.1"] and nodes["net.1"].shape == (3,)
        features = feature_inclusion_probs(bnn)
        assert features.shape == (1,)  # one input channel
        for probs in [*edge_inclusion_probs(bnn).values(), nodes["net.1"], features]:
            assert torch.all((probs >= 0) & (probs <= 1))
        weight_mask, bias_mask = conv.keep_masks()
        assert weight_mask.shape == (3, 1, 3, 3) and (bias_mask is None or bias_mask.shape == (3,))
        weight, bias = conv.posterior_mean()
        assert weight.shape == (3, 1, 3, 3) and bias.shape == (3,)
        moments = weight_moments(bnn)
        assert moments["net.1"][0].shape == moments["net.1"][1].shape == (3, 1, 3, 3)
        assert torch.all(moments["net.1"][1] >= 0)

    @pytest.mark.parametrize("activation", [nn.ReLU, nn.Sigmoid])
    @pytest.mark.parametrize("kind", ["max-pool", "padding", "avg-pool"])
    @pytest.mark.parametrize("seed", [0, 1])
    def test_conv_compress_equals_the_masked_posterior_mean_network(self, kind, activation, seed):
        """Random guides on conv nets with pooling, padding, stride and a padded average
        pooling (where a constant channel may not fold): the compressed module, built from
        physically smaller Conv2d / Linear modules, computes the masked posterior mean."""
        bnn = self.randomize(self.build_conv(conv_net(kind, activation)), seed=seed)
        x = torch.randn(16, 72)
        module, report = compress(bnn)
        with torch.no_grad():
            expected = masked_posterior_mean(bnn)(x)
            scale = float(expected.abs().max())
            assert torch.allclose(module(x), expected, rtol=1e-5, atol=1e-5 * max(scale, 1.0))
        parametric = [m for m in module if isinstance(m, (nn.Conv2d, nn.Linear))]
        if parametric:  # (a network that depends on no input is a ConstantOutput)
            first = parametric[0]
            widths = (first.in_channels,) + tuple(
                m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in parametric)
            assert widths == report.architecture_after
        assert report.flops_after <= report.flops_before
        assert not any(type(m).__module__.split(".")[0] == "pyro" for m in module.modules())

    def test_conv_fit_gives_a_finite_elbo(self):
        bnn = self.build_conv()
        x, y = self.conv_data()
        history = fit(bnn, x, y, epochs=3, batch_size=40, lr=1e-2, seed=0, progress=False)
        assert len(history.loss) == 3 and all(math.isfinite(v) for v in history.loss)
        assert bnn.predict(x[:5], num_samples=2).probs.shape == (5, 3)
