"""SparseBNN: a real Pyro model and guide around an ordinary nn.Sequential."""

import pyro
import pyro.optim
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, TraceMeanField_ELBO
from torch import nn

import pyro_sparse_bnn as psb
from pyro_sparse_bnn import InputError, SparseBNN, SpikeSlab
from pyro_sparse_bnn.core import GaussianLikelihood, MeanFieldELBO
from tests.conftest import conv_net, mlp, randomize_guide


def test_model_returns_logits_and_observes_labels(small_bnn, classification_data):
    x, y = classification_data
    trace = poutine.trace(small_bnn.model).get_trace(x, y)
    assert trace.nodes["_RETURN"]["value"].shape == (60, 3)
    assert torch.equal(trace.nodes["obs"]["value"], y)
    assert trace.nodes["obs"]["scale"] == pytest.approx(1.0)


def test_data_plate_scales_the_minibatch_to_num_data(small_bnn, classification_data):
    x, y = classification_data
    trace = poutine.trace(small_bnn.model).get_trace(x[:15], y[:15])
    assert trace.nodes["obs"]["scale"] == pytest.approx(60 / 15)


def test_pyro_svi_fits_the_module_parameters_without_the_global_param_store(classification_data):
    x, y = classification_data
    torch.manual_seed(0)
    first = SparseBNN(mlp([5, 4, 3]), SpikeSlab(prior_inclusion=0.1), num_data=60)
    second = SparseBNN(mlp([5, 4, 3]), SpikeSlab(prior_inclusion=0.1), num_data=60)
    before = [p.detach().clone() for p in first.parameters()]
    untouched = [p.detach().clone() for p in second.parameters()]
    svi = SVI(first.model, first.guide, pyro.optim.Adam({"lr": 0.01}), TraceMeanField_ELBO())
    for _ in range(3):
        svi.step(x, y)
    assert all(not torch.equal(a, b) for a, b in zip(before, first.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(untouched, second.parameters(), strict=True))
    assert len(pyro.get_param_store()) == 0


def test_predictive_and_forward(small_bnn, classification_data):
    x, _ = classification_data
    samples = Predictive(small_bnn.model, guide=small_bnn.guide, num_samples=4,
                         return_sites=["obs", "_RETURN"])(x)
    assert samples["obs"].shape == (4, 60) and samples["_RETURN"].shape == (4, 60, 3)
    assert not torch.equal(small_bnn(x), small_bnn(x)), "each forward pass is a fresh posterior draw"


def test_forward_is_the_network_when_the_guide_is_certain(classification_data):
    x, _ = classification_data
    torch.manual_seed(0)
    net = mlp([5, 4, 3])
    bnn = SparseBNN(net, SpikeSlab(prior_inclusion=0.1), num_data=60)
    with torch.no_grad():
        for layer in bnn.layers:
            layer.block.gates.logits.fill_(40.0)
            layer.block.slab.rho.fill_(-40.0)
    with torch.no_grad():
        assert torch.allclose(bnn(x), net(x), atol=1e-6)


def test_predict_summarises_draws(small_bnn, classification_data):
    x, _ = classification_data
    randomize_guide(small_bnn)
    prediction = small_bnn.predict(x, num_samples=20, batch_size=25)
    assert prediction.probs.shape == (60, 3) and prediction.draws.shape == (20, 60, 3)
    assert torch.allclose(prediction.probs.sum(-1), torch.ones(60))
    assert torch.all(prediction.std >= 0)


def test_predict_with_a_seed_is_reproducible_and_leaves_the_global_state_alone(small_bnn, classification_data):
    x, _ = classification_data
    state = torch.get_rng_state()
    randomize_guide(small_bnn)
    first = small_bnn.predict(x, num_samples=5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(small_bnn.predict(x, num_samples=5, seed=3).draws, first.draws)
    assert not torch.equal(small_bnn.predict(x, num_samples=5, seed=4).draws, first.draws)
    with pytest.raises(InputError, match="seed"):
        small_bnn.predict(x, seed=1.5)


@pytest.mark.parametrize("y_shape", [(30,), (30, 1)])
def test_regression_accepts_vector_or_column_targets(y_shape):
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([2, 3, 1]), SpikeSlab(prior_inclusion=0.1), likelihood="gaussian", num_data=30)
    x, y = torch.randn(30, 2), torch.randn(*y_shape)
    trace = poutine.trace(bnn.model).get_trace(x, y)
    assert trace.nodes["obs"]["value"].shape == (30,)
    randomize_guide(bnn)
    prediction = bnn.predict(x, num_samples=10)
    assert prediction.mean.shape == (30,)
    assert torch.all(prediction.std >= bnn.likelihood.noise_scale - 1e-6)


def test_multi_output_regression():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([2, 3, 2]), SpikeSlab(prior_inclusion=0.1), likelihood="gaussian", num_data=30)
    trace = poutine.trace(bnn.model).get_trace(torch.randn(30, 2), torch.randn(30, 2))
    assert trace.nodes["obs"]["fn"].event_shape == (2,)


def test_learned_noise_scale_is_fitted():
    torch.manual_seed(0)
    likelihood = GaussianLikelihood(noise_scale=3.0, learn_noise=True)
    bnn = SparseBNN(mlp([2, 3, 1]), SpikeSlab(prior_inclusion=0.1), likelihood=likelihood, num_data=30)
    assert float(bnn.likelihood.noise_scale) == pytest.approx(3.0, rel=1e-5)
    x = torch.randn(30, 2)
    y = 0.1 * torch.randn(30)
    svi = SVI(bnn.model, bnn.guide, pyro.optim.Adam({"lr": 0.05}), MeanFieldELBO())
    for _ in range(50):
        svi.step(x, y)
    assert float(bnn.likelihood.noise_scale) < 2.5


def test_nested_sequential_is_flattened_and_named_by_path():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), nn.Linear(4, 2))
    bnn = SparseBNN(net, SpikeSlab(prior_inclusion=0.1), num_data=10)
    assert [layer.spec.name for layer in bnn.layers] == ["net.0.0", "net.1"]
    assert bnn.layer("net.1") is bnn.layers[1]
    with pytest.raises(KeyError, match="net.0.0"):
        bnn.layer("net.7")


def test_is_fitted_tracks_parameter_changes(small_bnn):
    assert not small_bnn.is_fitted
    with torch.no_grad():
        small_bnn.layers[0].block.slab.loc.add_(0.1)
    assert small_bnn.is_fitted


def test_repr_shows_architecture_and_prior(small_bnn):
    assert "architecture=5-4-3" in repr(small_bnn) and "SpikeSlab" in repr(small_bnn)


def test_wrapper_follows_the_dtype_of_the_network():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2]).double(), SpikeSlab(prior_inclusion=0.1), num_data=8)
    assert all(p.dtype == torch.float64 for p in bnn.parameters())
    assert bnn.temperature.dtype == torch.float64
    x = torch.randn(8, 3, dtype=torch.float64)
    assert bnn(x).dtype == torch.float64
    randomize_guide(bnn)
    assert bnn.predict(x, num_samples=3).probs.dtype == torch.float64


@pytest.mark.parametrize("batch_size, conv_layers_sampling_preactivations", [
    (8, [0, 1]),      # 8 x 36 = 288 and 8 x 9 = 72 output positions: both within 512
    (16, [1]),        # 16 x 36 = 576 > 512 for the first conv layer
    (64, []),         # 64 x 9 = 576 > 512 for the second as well
])
def test_auto_samples_preactivations_in_every_linear_layer_and_in_small_conv_layers(
        batch_size, conv_layers_sampling_preactivations):
    """The first conv layer has 6 x 6 output positions (3x3, padding 1), the second 3 x 3
    (stride 2); the linear layer has one and samples pre-activations at any batch size."""
    torch.manual_seed(0)
    bnn = SparseBNN(conv_net("padding"), psb.SpikeSlabNode())
    conv, linear = bnn.architecture.specs[:2], bnn.architecture.specs[2]
    expected = tuple(conv[i].name for i in conv_layers_sampling_preactivations) + (linear.name,)
    assert bnn.local_reparameterization_layers(batch_size) == expected
    mlp_bnn = SparseBNN(mlp([5, 8, 3]), psb.SpikeSlabNode())
    names = tuple(spec.name for spec in mlp_bnn.architecture.specs)
    assert mlp_bnn.local_reparameterization_layers(100_000) == names
    assert bnn.local_reparameterization_layers(None) == tuple(spec.name for spec in bnn.architecture.specs)
    forced = SparseBNN(conv_net("padding"), psb.SpikeSlabNode(), local_reparameterization=False)
    assert forced.local_reparameterization_layers(batch_size) == ()


def test_a_regression_network_may_end_in_an_activation():
    """Only the categorical likelihood reads the outputs as logits; a Gaussian network ending
    in Softplus (positive targets) is built, and its outputs are positive."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1), torch.nn.Softplus())
    bnn = SparseBNN(net, SpikeSlab(), likelihood="gaussian")
    assert bool((bnn(torch.randn(5, 3)) > 0).all())
