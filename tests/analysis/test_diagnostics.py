"""ArviZ diagnostics: InferenceData of guide draws, summaries, k-hat of the guide, PSIS-LOO and compare."""

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_sparse_bnn as psb
from pyro_sparse_bnn import (
    InputError,
    NotFittedError,
    SparseBNN,
    SpikeSlab,
    SpikeSlabGroupHorseshoe,
    inclusion_summary,
)
from pyro_sparse_bnn.analysis import (
    bnn_variational_khat,
    compare_priors,
    feature_inclusion_probs,
    node_inclusion_probs,
    psis_loo,
    to_inference_data,
    variational_khat,
)
from pyro_sparse_bnn.analysis.diagnostics import VariationalKhat, layer_variables, summarize
from tests.conftest import mlp, randomize_guide


def random_fit(seed, prior=None, widths=(4, 5, 3, 2)):
    torch.manual_seed(seed)
    bnn = SparseBNN(mlp(list(widths)), prior or SpikeSlab(prior_inclusion=0.1), num_data=30)
    return randomize_guide(bnn, seed=seed, logit_scale=2.0)


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(30, 4, generator=generator)
    return x, (x[:, 0] > 0).long()


def test_restarts_become_chains_with_named_dims(data):
    fits = [random_fit(0), random_fit(1), random_fit(2)]
    names = ["a", "b", "c", "d"]
    idata = to_inference_data(fits, *data, num_samples=20, feature_names=names, progress=False)
    post = idata.posterior
    assert post.sizes["chain"] == 3 and post.sizes["draw"] == 20
    assert post.feature_inclusion.dims == ("chain", "draw", "feature")
    assert post.feature.values.tolist() == names
    # one variable per hidden layer, each with its own dim: nothing is padded
    assert post.node_inclusion_net_0.dims == ("chain", "draw", "node_net_0")
    assert post.node_inclusion_net_2.dims == ("chain", "draw", "node_net_2")
    assert post.node_net_0.values.tolist() == [0, 1, 2, 3, 4] and post.node_net_2.values.tolist() == [0, 1, 2]
    assert layer_variables(idata, "node_inclusion") == {"net.0": "node_inclusion_net_0", "net.2": "node_inclusion_net_2"}
    assert "node_inclusion" not in post and "layer" not in post.coords
    for name, var in post.data_vars.items():
        assert np.isfinite(var.values).all(), name
        assert set(np.unique(var.values)) <= {0.0, 1.0}, name
    assert idata.log_likelihood.y.dims == ("chain", "draw", "example")
    assert idata.log_likelihood.y.shape == (3, 20, 30)
    assert np.array_equal(idata.observed_data.y.values, data[1].numpy())


def test_summary_has_a_row_per_unit_without_nan_or_warnings(data):
    """The newcomer's report: ``az.summary`` printed NaN rows for the padding and ArviZ warned
    "Array contains NaN-value". Now the rows are exactly the units, their means are the numpy
    means of the draws, and neither ``az.summary`` nor ``summarize`` warns about NaN."""
    fits = [random_fit(0, widths=(4, 6, 2, 2)), random_fit(1, widths=(4, 6, 2, 2))]
    idata = to_inference_data(fits, num_samples=30, seed=0, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = az.summary(idata, kind="stats", round_to="none")
    assert not [w for w in caught if "NaN" in str(w.message)], [str(w.message) for w in caught]
    assert len(table) == 4 + 6 + 2  # features, nodes of net.0, nodes of net.2: no padding rows
    assert np.isfinite(table["mean"]).all()
    post = idata.posterior
    np.testing.assert_allclose(table.loc["node_inclusion_net_2[1]", "mean"],
                               post.node_inclusion_net_2.values[..., 1].mean())
    np.testing.assert_allclose(table.loc[[f"node_inclusion_net_0[{i}]" for i in range(6)], "mean"],
                               post.node_inclusion_net_0.values.reshape(-1, 6).mean(0))


def test_layer_names_become_valid_identifiers():
    from pyro_sparse_bnn.analysis.diagnostics import layer_key

    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("hidden-1", torch.nn.Linear(3, 4))
    net.add_module("act", torch.nn.ReLU())
    net.add_module("out", torch.nn.Linear(4, 2))
    bnn = randomize_guide(SparseBNN(net, SpikeSlab(prior_inclusion=0.1), num_data=5))
    idata = to_inference_data(bnn, num_samples=4, progress=False)
    assert layer_key("features.0.conv") == "features_0_conv"
    assert idata.posterior.node_inclusion_net_hidden_1.attrs["layer"] == "net.hidden-1"
    assert idata.posterior.node_inclusion_net_hidden_1.dims == ("chain", "draw", "node_net_hidden_1")


def test_round_trip_to_netcdf_keeps_dims_and_coords(tmp_path, data):
    fits = [random_fit(0, SpikeSlabGroupHorseshoe()), random_fit(1, SpikeSlabGroupHorseshoe())]
    idata = to_inference_data(fits, *data, num_samples=5, weights=True,
                              feature_names=["a", "b", "c", "d"], progress=False)
    path = tmp_path / "fits.nc"
    idata.to_netcdf(str(path), engine="h5netcdf")
    back = az.from_netcdf(str(path), engine="h5netcdf")
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        original, loaded = idata[group], back[group]
        assert set(original.data_vars) == set(loaded.data_vars)
        for name, var in original.data_vars.items():
            assert loaded[name].dims == var.dims
            np.testing.assert_array_equal(loaded[name].values, var.values)
        for name, coord in original.coords.items():
            assert loaded[name].values.tolist() == coord.values.tolist()
    assert back.posterior.group_scale_net_0.dims == ("chain", "draw", "group_net_0")
    assert back.posterior.group_scale_net_2.sizes["group_net_2"] == 3  # SS-GHS: a scale per output unit
    assert layer_variables(back, "group_scale") == layer_variables(idata, "group_scale") == {
        "net.0": "group_scale_net_0", "net.2": "group_scale_net_2", "net.4": "group_scale_net_4"}
    assert back.posterior["net.0.weight"].dims == ("chain", "draw", "net.0.out", "net.0.in")
    assert back.posterior.attrs["priors"].startswith("SpikeSlabGroupHorseshoe")


def test_summary_pips_equal_the_guide_and_the_draws_average_to_them():
    fits = [random_fit(0), random_fit(1)]
    summary = inclusion_summary(fits)
    features = summary[summary.layer == "input"]
    guide = torch.stack([feature_inclusion_probs(f) for f in fits])
    np.testing.assert_allclose(features.pip, guide.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(features.pip_lower, np.quantile(guide.numpy(), 0.05, axis=0), rtol=1e-6)
    for name in ("net.0", "net.2"):
        rows = summary[summary.layer == name]
        pips = torch.stack([node_inclusion_probs(f)[name] for f in fits])
        np.testing.assert_allclose(rows.pip, pips.mean(0).numpy(), rtol=1e-6)
        assert (rows.pip_lower <= rows.pip).all() and (rows.pip <= rows.pip_upper).all()
    single = inclusion_summary(fits[0])
    assert np.array_equal(single.pip, single.pip_lower) and np.array_equal(single.pip, single.pip_upper)
    # the 0/1 draws in the posterior are Bernoulli(PIP): their chain means agree within
    # 5 binomial standard errors
    num = 400
    post = to_inference_data(fits, num_samples=num, progress=False).posterior
    mean = post.feature_inclusion.mean("draw").values
    se = np.sqrt(guide.numpy() * (1 - guide.numpy()) / num)
    assert np.all(np.abs(mean - guide.numpy()) <= 5 * se + 1e-9)
    nodes = post.node_inclusion_net_2.mean("draw").values
    node_pips = torch.stack([node_inclusion_probs(f)["net.2"] for f in fits]).numpy()
    assert np.all(np.abs(nodes - node_pips) <= 5 * np.sqrt(node_pips * (1 - node_pips) / num) + 1e-9)


def test_rhat_flags_restarts_that_disagree():
    agree = [random_fit(0), random_fit(0)]
    disagree = [random_fit(0), random_fit(0)]
    with torch.no_grad():  # second restart: every input edge switched off
        disagree[1].layers[0].block.gates.logits.fill_(-30.0)

    def rhat(fits):
        table = summarize(to_inference_data(fits, num_samples=100, seed=0, progress=False),
                          var_names=["feature_inclusion"])
        return table.r_hat.to_numpy()

    stable, unstable = rhat(agree), rhat(disagree)
    assert np.max(stable) < 1.1 and np.all(unstable > 1.5)


def pinned_fits():
    """Two restarts whose first-layer gates are all open: every feature is in every draw of
    both (PIP 1, constant), and node 0 of net.2 (used iff one of its outgoing edges in net.4 is
    on) is dropped in every draw of restart 0 but kept in every draw of restart 1 (each restart
    certain, the two disagree)."""
    fits = [random_fit(0), random_fit(1)]
    with torch.no_grad():
        for i, bnn in enumerate(fits):
            bnn.layers[0].block.gates.logits.fill_(30.0)
            bnn.layers[2].block.gates.logits[:, 0].fill_(30.0 if i else -30.0)
    return fits


def test_summarize_reports_pinned_pips_as_converged_without_warnings():
    idata = to_inference_data(pinned_fits(), num_samples=50, seed=0, progress=False)
    draws = idata.posterior.feature_inclusion.values
    assert (draws == 1).all()  # the setting: constant in every draw of every chain
    # the old behaviour: ArviZ's R-hat is 0/0 = NaN, with numpy's RuntimeWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = az.summary(idata, var_names=["feature_inclusion"])
    assert raw.r_hat.isna().all() and any(issubclass(w.category, RuntimeWarning) for w in caught)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = summarize(idata)
    assert not caught, [str(w.message) for w in caught]
    features = table.loc[[f"feature_inclusion[x{i}]" for i in range(4)]]
    assert (features.r_hat == 1.0).all()
    assert (features.mcse_mean == 0.0).all() and (features.mcse_sd == 0.0).all()
    assert (features.ess_bulk == 2 * 50).all() and (features.ess_tail == 2 * 50).all()
    assert (features["mean"] == 1.0).all() and (features.sd == 0.0).all()
    # node 0 of net.2: restart 0 always drops it, restart 1 always keeps it -> R-hat inf
    node = idata.posterior.node_inclusion_net_2.values[..., 0]
    assert (node[0] == 0).all() and (node[1] == 1).all()
    assert table.loc["node_inclusion_net_2[0]", "r_hat"] == math.inf
    # everything that varies keeps ArviZ's own values, and the means are the draws' means
    varying = [name for name in table.index if name.startswith("node_inclusion_net_0")]
    np.testing.assert_allclose(table.loc[varying, "mean"],
                               idata.posterior.node_inclusion_net_0.values.reshape(-1, 5).mean(0), atol=5e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ArviZ's 0/0 for the constant nodes
        rhat = az.rhat(idata, var_names=["node_inclusion_net_0"]).node_inclusion_net_0.values
    nodes = idata.posterior.node_inclusion_net_0.values
    constant = nodes.min(axis=(0, 1)) == nodes.max(axis=(0, 1))
    assert constant.any() and not constant.all()  # both kinds are checked
    np.testing.assert_allclose(table.loc[varying, "r_hat"][~constant], np.round(rhat[~constant], 2))
    assert (table.loc[varying, "r_hat"][constant] == 1.0).all()


def test_summarize_on_hand_made_draws():
    rng = np.random.default_rng(0)
    idata = az.from_dict(posterior={"pinned": np.zeros((3, 40)), "split": np.repeat([[0.0], [1.0], [0.0]], 40, axis=1),
                                    "coin": (rng.random((3, 40)) < 0.5).astype(float)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = summarize(idata, round_to="none")
    assert not caught
    assert table.loc["pinned", "r_hat"] == 1.0 and table.loc["split", "r_hat"] == math.inf
    assert table.loc["coin", "r_hat"] == pytest.approx(float(az.rhat(idata, var_names=["coin"]).coin))
    assert table.loc["coin", "mean"] == pytest.approx(idata.posterior.coin.values.mean())
    assert "_constant" not in table.columns
    with pytest.raises(InputError, match="fmt"):
        summarize(idata, fmt="long")
    with pytest.raises(InputError, match="InferenceData"):
        summarize({"pinned": np.zeros((3, 40))})


def test_log_likelihood_at_a_point_mass_guide(data):
    x, y = data
    bnn = random_fit(0, psb.SpikeSlabNode())
    with torch.no_grad():
        for layer in bnn.layers:
            layer.block.gates.logits.fill_(30.0)  # every node on
            layer.block.slab.rho.fill_(-40.0)      # slab scale ~ 4e-18
    idata = to_inference_data(bnn, x, y, num_samples=3, progress=False)
    with torch.no_grad():
        expected = torch.log_softmax(psb.analysis.masked_posterior_mean(bnn)(x), -1)[torch.arange(len(y)), y]
    for draw in range(3):
        np.testing.assert_allclose(idata.log_likelihood.y.values[0, draw], expected.numpy(), rtol=1e-5, atol=1e-5)


def test_bad_input_is_named(data):
    with pytest.raises(NotFittedError, match="has not been fitted"):
        to_inference_data(SparseBNN(mlp([4, 3, 2]), SpikeSlab(prior_inclusion=0.1)), progress=False)
    with pytest.raises(InputError, match=r"bnn\[1\] is not a fit of the same model.*architecture"):
        to_inference_data([random_fit(0), random_fit(1, widths=(4, 6, 2))], progress=False)
    with pytest.raises(InputError, match="priors"):
        to_inference_data([random_fit(0), random_fit(1, SpikeSlabGroupHorseshoe())], progress=False)
    with pytest.raises(InputError, match="feature_names has 2 names"):
        to_inference_data(random_fit(0), feature_names=["a", "b"], progress=False)
    with pytest.raises(InputError, match="both x and y"):
        to_inference_data(random_fit(0), data[0], progress=False)
    with pytest.raises(InputError, match="num_samples"):
        to_inference_data(random_fit(0), num_samples=0, progress=False)


def unfitted():
    return SparseBNN(mlp([4, 3, 2]), SpikeSlab(prior_inclusion=0.1), num_data=30)


def test_every_entry_point_that_reads_the_guide_refuses_an_unfitted_network(data):
    x, y = data
    with pytest.raises(NotFittedError, match="^to_inference_data: the network has not been fitted"):
        to_inference_data(unfitted(), progress=False)
    with pytest.raises(NotFittedError, match=r"^to_inference_data \(bnn\[1\]\): the network has not been fitted"):
        to_inference_data([random_fit(0, widths=(4, 3, 2)), unfitted()], progress=False)
    with pytest.raises(NotFittedError, match="^bnn_variational_khat: the network has not been fitted"):
        bnn_variational_khat(unfitted(), x, y, num_samples=10, progress=False)
    with pytest.raises(NotFittedError, match="^psis_loo: the network has not been fitted"):
        psis_loo(unfitted(), x, y, num_samples=10, progress=False)
    with pytest.raises(NotFittedError, match="^psis_loo: the network has not been fitted"):
        psis_loo(unfitted())  # before complaining about the missing data
    # compare_priors names the model, and checks them all before drawing from any
    fitted = random_fit(0, widths=(4, 3, 2))
    with pytest.raises(NotFittedError, match=r"^compare_priors \(fits\['b'\]\): the network has not been fitted"):
        compare_priors({"a": fitted, "b": unfitted()}, x, y, num_samples=10, progress=False)
    with pytest.raises(NotFittedError, match=r"^compare_priors \(fits\['b'\]\[1\]\)"):
        compare_priors({"a": fitted, "b": [fitted, unfitted()]}, x, y, num_samples=10, progress=False)


def test_progress_bars_only_where_someone_watches(data, capfd):
    """``progress=None`` (the default) draws no bar when stderr is not a terminal (as under
    pytest), ``progress=True`` always does."""
    bnn = random_fit(0)
    to_inference_data(bnn, num_samples=3)
    variational_khat(conjugate_model, normal_guide(0.0, 1.0), torch.zeros(3), num_samples=10)
    assert "draw" not in capfd.readouterr().err
    to_inference_data(bnn, num_samples=3, progress=True)
    assert "guide draws" in capfd.readouterr().err
    variational_khat(conjugate_model, normal_guide(0.0, 1.0), torch.zeros(3), num_samples=10, progress=True)
    assert "k-hat draws" in capfd.readouterr().err


# -- k-hat of the variational approximation -----------------------------------------------
PRIOR_SCALE, NOISE = 10.0, 1.0


def conjugate_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(mu, NOISE), obs=y)


def conjugate_posterior(y):
    precision = 1 / PRIOR_SCALE**2 + len(y) / NOISE**2
    return float(y.sum() / NOISE**2 / precision), precision ** -0.5


def normal_guide(loc, scale):
    return lambda y: pyro.sample("mu", dist.Normal(loc, scale))


def test_khat_is_low_for_the_exact_posterior_and_high_for_a_narrow_guide():
    """With q = N(m, (c s)^2) and posterior N(m, s^2) the ratio p / q has a Pareto tail of
    shape k = 1 - c^2 for c < 1 (whatever q's mean) and is bounded for c >= 1 (k <= 0).
    c = 0.2 gives k = 0.96; the guide is also shifted by 2 s because near k = 1 the estimate
    from 1000 draws is biased low (0.65-1.1 over seeds unshifted, 0.7-1.13 shifted); c = 1.5 has bounded ratios (a genuine fit, k < 0.5). Flipping the sign of the log weights (log q - log p) would make the
    narrow guide's ratios bounded and its k-hat low, so this also pins psislw's convention."""
    y = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 1.5
    m, s = conjugate_posterior(y)
    exact = variational_khat(conjugate_model, normal_guide(m, s), y, num_samples=1000, seed=0, progress=False)
    wide = variational_khat(conjugate_model, normal_guide(m, 1.5 * s), y, num_samples=1000, seed=0, progress=False)
    narrow = variational_khat(conjugate_model, normal_guide(m + 2 * s, 0.2 * s), y, num_samples=1000, seed=0, progress=False)
    # the exact guide's weights are constant up to float round-off: no Pareto tail at all
    assert exact.khat == -math.inf and exact.interpretation == "good" and exact.reliable
    assert wide.khat < 0.5
    assert narrow.khat > 0.7 and not narrow.reliable and narrow.interpretation in ("bad", "very bad")
    # the opposite sign convention (log q - log p) would call the narrow guide good
    assert az.psislw(-narrow.log_weights)[1] < 0.5
    # exact guide: every log weight is log p(y), the evidence
    evidence = dist.MultivariateNormal(
        torch.zeros(len(y)), NOISE**2 * torch.eye(len(y)) + PRIOR_SCALE**2 * torch.ones(len(y), len(y))
    ).log_prob(y)
    np.testing.assert_allclose(exact.log_weights, float(evidence), rtol=1e-4)
    assert exact.ess > 0.99 * 1000


def test_khat_interpretation_thresholds():
    from pyro_sparse_bnn.analysis.diagnostics import khat_interpretation

    assert [khat_interpretation(k) for k in (0.2, 0.5, 0.69, 0.7, 0.99, 1.0, math.nan)] == [
        "good", "ok", "ok", "bad", "bad", "very bad", "very bad"]


def test_khat_of_a_sparse_bnn_uses_weight_draws_not_local_reparameterization(data):
    x, y = data
    bnn = random_fit(0)
    plain = bnn_variational_khat(bnn, x, y, num_samples=30, seed=1, progress=False)
    with psb.core.local_reparameterization():
        inside = bnn_variational_khat(bnn, x, y, num_samples=30, seed=1, progress=False)
    np.testing.assert_array_equal(plain.log_weights, inside.log_weights)
    assert np.isfinite(plain.log_weights).all() and np.isfinite(plain.khat)
    # one draw by hand: log p(y, theta) - log q(theta) from the traces
    pyro.set_rng_seed(1)
    guide_trace = pyro.poutine.trace(bnn.guide).get_trace()
    model_trace = pyro.poutine.trace(pyro.poutine.replay(bnn.model, trace=guide_trace)).get_trace(x, y)
    by_hand = float(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
    assert plain.log_weights[0] == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(InputError, match="full training data"):
        bnn_variational_khat(bnn, x[:10], y[:10], num_samples=30, progress=False)
    with pytest.raises(NotFittedError):
        bnn_variational_khat(SparseBNN(mlp([4, 3, 2]), SpikeSlab(prior_inclusion=0.1), num_data=30),
                             x, y, num_samples=30, progress=False)


def khat_result(khat, num_samples=200, ess=None, bnn=True):
    """A VariationalKhat with the given k-hat and (roughly) the given ESS of its weights."""
    weights = np.full(num_samples, 1.0)
    if ess is not None:  # one heavy draw: 1 / sum w^2 ~ ess
        weights[0] = num_samples * (num_samples / ess) ** 0.5
    smoothed = np.log(weights / weights.sum())
    return VariationalKhat(khat=khat, log_weights=np.log(weights), smoothed_log_weights=smoothed, bnn=bnn)


def test_khat_explains_itself_in_each_regime():
    """Yao et al.'s thresholds: below 0.5 nothing to do; 0.5-0.7 usable, prefer importance
    weighting; above 0.7 the guide misses mass and the message says what to do."""
    good, ok, bad, very_bad = (khat_result(0.3), khat_result(0.6), khat_result(0.85, ess=20.0),
                               khat_result(36.0, ess=1.0))
    for result in (good, ok, bad, very_bad):
        assert str(result) == repr(result)
        assert repr(result).splitlines()[0].startswith(f"VariationalKhat(khat={result.khat:.3f} ({result.interpretation})")
    assert "k-hat < 0.5" in str(good) and "can be trusted" in str(good) and good.advice == ""
    assert "What to do" not in str(good)
    assert "0.5 <= k-hat < 0.7" in str(ok) and "importance-weighted" in str(ok) and "overconfident" in str(ok)
    for result in (bad, very_bad):
        text = str(result)
        assert "mean-field guide misses posterior mass" in text
        assert "dominated by a few draws" in text and "predictions and PIPs" in text and "overconfident" in text
        assert f"effective sample size {result.ess:.1f} of 200" in text
        for remedy in ("restarts", "importance-weighted predictions", "wider guide", "init_rho", "longer fits"):
            assert remedy in text, remedy
    assert "no finite mean" in str(very_bad) and "no finite mean" not in str(bad)
    # without a SparseBNN the message speaks of the guide, not of PIPs
    plain = khat_result(0.9, bnn=False)
    assert "misses posterior mass" in str(plain) and "PIPs" not in str(plain) and "What to do" in str(plain)
    exact = khat_result(-math.inf)
    assert "equals the posterior up to a constant" in str(exact)


def test_khat_of_a_narrow_guide_and_of_a_bnn_say_what_to_do(data):
    y = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 1.5
    m, s = conjugate_posterior(y)
    narrow = variational_khat(conjugate_model, normal_guide(m + 2 * s, 0.2 * s), y, num_samples=1000, seed=0,
                              progress=False)
    assert narrow.khat > 0.7 and not narrow.bnn and "misses posterior mass" in repr(narrow)
    result = bnn_variational_khat(random_fit(0), *data, num_samples=30, seed=1, progress=False)
    assert result.bnn and "PIPs" in repr(result) and "What to do" in repr(result)


def test_khat_rejects_a_guide_missing_a_latent_site():
    y = torch.zeros(3)
    with pytest.raises(InputError, match="no site for the model's latent sites"):
        variational_khat(conjugate_model, lambda y: None, y, num_samples=10, progress=False)


# -- PSIS-LOO and compare -----------------------------------------------------------------
def test_compare_ranks_a_well_specified_prior_above_a_misspecified_one():
    """y = 2 x0 + noise(0.3). A slab of scale 0.01 puts the weights that the data need
    (about 2 across two layers) hundreds of prior standard deviations out, so its posterior
    is shrunk to a nearly constant function: its PSIS-LOO ELPD is far below that of a unit slab."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=generator)
    y = 2 * x[:, 0] + 0.3 * torch.randn(40, generator=generator)
    fits = {}
    for name, scale in [("good", 1.0), ("bad", 0.01)]:
        torch.manual_seed(0)
        bnn = SparseBNN(mlp([2, 4, 1]), SpikeSlab(prior_scale=scale, prior_inclusion=0.5, init_rho=-4.0),
                        likelihood=psb.core.GaussianLikelihood(0.3), num_data=40)
        psb.fit(bnn, x, y, epochs=150, batch_size=40, lr=3e-2, seed=0, progress=False)
        fits[name] = bnn
    table = compare_priors(fits, x, y, num_samples=100)
    assert table.index[0] == "good" and table.loc["good", "rank"] == 0
    assert table.loc["bad", "elpd_diff"] > 4 * table.loc["bad", "dse"]
    loo = psb.analysis.psis_loo(fits["good"], x, y, num_samples=100, seed=0)
    assert loo.elpd_loo == pytest.approx(table.loc["good", "elpd_loo"])
    with pytest.raises(InputError, match="at least two"):
        compare_priors({"good": fits["good"]}, x, y)

