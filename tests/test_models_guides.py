"""Models, guides and the registry that names them (issue 2): the built-in models trace with the
sites and sizes of the post, the hand-written guides carry the right params and constraints, and
every name a config can give resolves to the right NumPyro object or fails naming the valid ones."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.distributions import constraints
from scipy import special

from sviflow import guides, models, names, optim, resolve
from sviflow.errors import ConfigError

COIN_DATA = np.concatenate([np.ones(12), np.zeros(8)]).astype(np.float32)


def trace_of(function, *args, seed=0, **kwargs):
    return handlers.trace(handlers.seed(function, seed)).get_trace(*args, **kwargs)


def sample_sites(trace):
    return {name: site for name, site in trace.items() if site["type"] == "sample"}


def param_sites(trace):
    return {name: site for name, site in trace.items() if site["type"] == "param"}


# --- models ----------------------------------------------------------------------------------


def test_coin_flips_traces_prior_and_observations_at_the_data_size():
    trace = trace_of(models.coin_flips, obs=COIN_DATA)
    sites = sample_sites(trace)
    assert list(sites) == ["latent_fairness", "obs"]
    prior = sites["latent_fairness"]
    assert not prior["is_observed"]
    assert type(prior["fn"]).__name__ == "Uniform"
    assert (float(prior["fn"].low), float(prior["fn"].high)) == (0.0, 1.0)
    obs = sites["obs"]
    assert obs["is_observed"]
    assert type(obs["fn"].base_dist).__name__ == "BernoulliProbs"  # expanded by the plate
    assert obs["fn"].batch_shape == (20,)
    np.testing.assert_array_equal(np.asarray(obs["value"]), COIN_DATA)
    assert trace["N"]["type"] == "plate" and trace["N"]["args"][0] == 20
    # the Bernoulli's probability is the latent fairness itself
    assert float(obs["fn"].base_dist.probs) == pytest.approx(float(prior["value"]))


def test_coin_flips_without_data_simulates_the_posts_ten_flips():
    trace = trace_of(models.coin_flips, obs=None)
    obs = trace["obs"]
    assert not obs["is_observed"]
    assert np.shape(obs["value"]) == (10,)
    assert set(np.unique(np.asarray(obs["value"]))) <= {0.0, 1.0}
    assert trace["N"]["args"][0] == 10
    assert trace_of(models.coin_flips, obs=None, num_flips=7)["obs"]["value"].shape == (7,)


def test_coin_flips_with_a_beta_prior():
    trace = trace_of(models.coin_flips, obs=COIN_DATA, prior_alpha=2.0, prior_beta=3.0)
    prior = trace["latent_fairness"]["fn"]
    assert type(prior).__name__ == "Beta"
    assert (float(prior.concentration1), float(prior.concentration0)) == (2.0, 3.0)


def test_coin_log_joint_is_the_beta_kernel():
    """log p(f, data) = 12 log f + 8 log(1 - f) under the uniform prior."""
    from numpyro.infer.util import log_density

    for f in (0.2, 0.5, 0.77):
        value, _ = log_density(models.coin_flips, (), {"obs": COIN_DATA}, {"latent_fairness": f})
        assert float(value) == pytest.approx(12 * math.log(f) + 8 * math.log(1 - f), rel=1e-5)


def post_log_distribution(x, y, b=5.0, sig1=0.5, sig2=2.0):
    """The post's ``log_distribution``, verbatim (numpy)."""
    sqrt2 = np.sqrt(2)
    f1 = np.exp(-1 / 2 * (((x + y) / sqrt2 - b) / sig1) ** 2)
    f2 = np.exp(-1 / 2 * (((x + y) / sqrt2 + b) / sig1) ** 2)
    log_fac = np.log(f1 + f2)
    log_fac += +np.log(1 / (1 + ((x - y) / sig2 / sqrt2) ** 2 / 2))
    return log_fac


def test_multimodal_log_density_matches_the_posts_formula():
    rng = np.random.default_rng(0)
    # points where the post's exp does not underflow: within ~6 sig1 of a mode along u1
    u1 = rng.choice([-5.0, 5.0], 500) + rng.normal(0, 1.5, 500)
    u2 = rng.normal(0, 6.0, 500)
    x, y = (u1 + u2) / np.sqrt(2), (u1 - u2) / np.sqrt(2)
    ours = np.asarray(models.multimodal_log_density(jnp.asarray(x), jnp.asarray(y)), dtype=np.float64)
    np.testing.assert_allclose(ours, post_log_distribution(x, y), rtol=1e-4, atol=1e-4)
    # other settings, too
    ours = np.asarray(models.multimodal_log_density(jnp.asarray(x), jnp.asarray(y), 4.0, 0.8, 3.0))
    np.testing.assert_allclose(ours, post_log_distribution(x, y, 4.0, 0.8, 3.0), rtol=1e-4, atol=1e-4)
    # and finite far from the modes, where the post's log(f1 + f2) is -inf
    far = float(models.multimodal_log_density(jnp.float32(0.0), jnp.float32(0.0)))
    assert np.isfinite(far) and far == pytest.approx(-0.5 * (5.0 / 0.5) ** 2 + math.log(2), rel=1e-5)


def test_multimodal_2d_traces_a_box_prior_and_the_factor():
    trace = trace_of(models.multimodal_2d)
    sites = sample_sites(trace)
    assert [n for n, s in sites.items() if not s["is_observed"]] == ["x", "y"]
    for name in ("x", "y"):
        fn = sites[name]["fn"]
        assert (float(fn.low), float(fn.high)) == (-20.0, 20.0)
    factor = sites["logfac"]
    assert factor["is_observed"] and type(factor["fn"]).__name__ == "Unit"
    x, y = sites["x"]["value"], sites["y"]["value"]
    assert float(factor["fn"].log_factor) == pytest.approx(
        float(models.multimodal_log_density(x, y)), rel=1e-6
    )


def test_correlated_gaussian_covariance_is_the_posts():
    covariance = models.correlated_gaussian_2d_covariance()
    np.testing.assert_allclose(covariance, [[5.0, 4.0], [4.0, 5.0]], atol=1e-12)
    # the post recovered [[4.918, 4.03], [4.03, 5.177]] from its fit: positive correlation 0.8
    post = np.array([[4.918, 4.03], [4.03, 5.177]])
    assert np.sign(covariance[0, 1]) == np.sign(post[0, 1])
    np.testing.assert_allclose(covariance, post, atol=0.2)
    assert covariance[0, 1] / math.sqrt(covariance[0, 0] * covariance[1, 1]) == pytest.approx(0.8)
    # eigenvalues are sig1^2, sig2^2
    np.testing.assert_allclose(np.linalg.eigvalsh(covariance), [1.0, 9.0], atol=1e-12)


@pytest.mark.parametrize("sig1, sig2, theta_deg", [(1.0, 3.0, 45.0), (0.5, 2.0, -30.0), (2.0, 1.0, 10.0)])
def test_correlated_covariance_is_the_inverse_hessian_of_its_log_density(sig1, sig2, theta_deg):
    def negative_log_density(z):
        return -models.correlated_log_density(z[0], z[1], sig1, sig2, theta_deg)

    hessian = np.asarray(jax.hessian(negative_log_density)(jnp.zeros(2)), dtype=np.float64)
    np.testing.assert_allclose(
        np.linalg.inv(hessian),
        models.correlated_gaussian_2d_covariance(sig1, sig2, theta_deg),
        rtol=1e-4,
        atol=1e-5,
    )


def test_correlated_gaussian_2d_has_improper_flat_latents_and_the_factor():
    from numpyro.infer.initialization import init_to_uniform

    trace = handlers.trace(
        handlers.substitute(handlers.seed(models.correlated_gaussian_2d, 0), substitute_fn=init_to_uniform)
    ).get_trace()
    sites = sample_sites(trace)
    assert type(sites["x"]["fn"]).__name__ == "ImproperUniform"
    assert type(sites["y"]["fn"]).__name__ == "ImproperUniform"
    x, y = sites["x"]["value"], sites["y"]["value"]
    assert float(sites["logfac"]["fn"].log_factor) == pytest.approx(
        float(models.correlated_log_density(x, y)), rel=1e-6
    )


# --- guides ----------------------------------------------------------------------------------


def test_beta_guide_params_constraints_and_site():
    trace = trace_of(guides.beta_guide(alpha_init=10.0, beta_init=7.0))
    params = param_sites(trace)
    assert set(params) == {"alpha_q", "beta_q"}
    assert float(params["alpha_q"]["value"]) == 10.0 and float(params["beta_q"]["value"]) == 7.0
    for site in params.values():
        assert site["kwargs"]["constraint"] is constraints.positive
    sample = trace["latent_fairness"]
    assert type(sample["fn"]).__name__ == "Beta"
    assert (float(sample["fn"].concentration1), float(sample["fn"].concentration0)) == (10.0, 7.0)
    other = trace_of(guides.beta_guide(site="p"))
    assert "p" in other and "latent_fairness" not in other


def test_normal_guide_params_constraints_and_site():
    trace = trace_of(guides.normal_guide(mean_init=0.4, sd_init=0.2))
    params = param_sites(trace)
    assert set(params) == {"mean", "sd"}
    assert params["mean"]["kwargs"]["constraint"] is constraints.unit_interval
    assert params["sd"]["kwargs"]["constraint"] is constraints.positive
    fn = trace["latent_fairness"]["fn"]
    assert type(fn).__name__ == "Normal"
    assert (float(fn.loc), float(fn.scale)) == pytest.approx((0.4, 0.2))
    real = param_sites(trace_of(guides.normal_guide(mean_constraint="real")))
    assert real["mean"]["kwargs"]["constraint"] is constraints.real


def test_mixture_guide_with_fixed_weights():
    trace = trace_of(guides.mixture_2d_guide(b_init=4.0, sig1_init=0.6, sig2_init=2.0, theta_init=0.3))
    params = param_sites(trace)
    assert set(params) == {"sig1_q", "sig2_q", "b", "theta"}
    for name in ("sig1_q", "sig2_q", "b"):
        assert params[name]["kwargs"]["constraint"] is constraints.positive
    theta_support = params["theta"]["kwargs"]["constraint"]
    assert (theta_support.lower_bound, theta_support.upper_bound) == pytest.approx(
        (-math.pi / 2, math.pi / 2)
    )
    mixture = trace["u1"]["fn"]
    assert type(mixture).__name__ == "MixtureGeneral"
    np.testing.assert_allclose(np.asarray(mixture.mixing_distribution.probs), [0.5, 0.5])
    locs = [float(c.loc) for c in mixture.component_distributions]
    assert locs == pytest.approx([4.0, -4.0])
    assert [float(c.scale) for c in mixture.component_distributions] == pytest.approx([0.6, 0.6])
    assert float(trace["u2"]["fn"].scale) == pytest.approx(2.0)
    for aux in ("u1", "u2"):
        assert trace[aux]["infer"].get("is_auxiliary") is True
    # x, y are the rotation of (u1, u2) by theta, as Delta sites
    u1, u2, c, s = (float(trace["u1"]["value"]), float(trace["u2"]["value"]), math.cos(0.3), math.sin(0.3))
    assert type(trace["x"]["fn"]).__name__ == "Delta"
    assert float(trace["x"]["value"]) == pytest.approx(c * u1 - s * u2, rel=1e-5, abs=1e-6)
    assert float(trace["y"]["value"]) == pytest.approx(c * u2 + s * u1, rel=1e-5, abs=1e-6)


def test_mixture_guide_with_a_learnable_weight():
    trace = trace_of(guides.mixture_2d_guide(learn_weight=True, weight_init=0.3))
    params = param_sites(trace)
    assert "weight" in params
    assert params["weight"]["kwargs"]["constraint"] is constraints.unit_interval
    np.testing.assert_allclose(np.asarray(trace["u1"]["fn"].mixing_distribution.probs), [0.3, 0.7], rtol=1e-6)


def test_guides_cover_exactly_their_models_latents_under_svi():
    """SVI initialises each post pairing (it runs the guide and the model on the guide's draws):
    the params are the guide's, and every latent of the model is drawn by the guide."""
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import Adam

    for model, guide, kwargs, expected in (
        (models.coin_flips, guides.beta_guide(), {"obs": COIN_DATA}, {"alpha_q", "beta_q"}),
        (models.coin_flips, guides.normal_guide(), {"obs": COIN_DATA}, {"mean", "sd"}),
        (
            models.multimodal_2d,
            guides.mixture_2d_guide(learn_weight=True),
            {},
            {"sig1_q", "sig2_q", "b", "theta", "weight"},
        ),
    ):
        svi = SVI(model, guide, Adam(1e-3), Trace_ELBO())
        assert set(svi.get_params(svi.init(jax.random.PRNGKey(0), **kwargs))) == expected
        guide_trace = trace_of(guide, **kwargs)
        model_trace = handlers.trace(handlers.replay(model, guide_trace)).get_trace(**kwargs)
        latents = {n for n, s in model_trace.items() if s["type"] == "sample" and not s["is_observed"]}
        drawn = {n for n, s in guide_trace.items() if s["type"] == "sample"}
        assert latents <= drawn


def test_the_exact_posterior_as_beta_guide_has_loss_minus_log_evidence():
    """With q = Beta(13, 9) the log weight log p(x, z) - log q(z) is log Z for every z: the
    Trace_ELBO loss and the Renyi bound are both exactly -log B(13, 9)."""
    from numpyro.infer import RenyiELBO, Trace_ELBO

    guide = guides.beta_guide()

    def loss_function(elbo):
        return jax.jit(
            lambda params: elbo.loss(jax.random.PRNGKey(3), params, models.coin_flips, guide, obs=COIN_DATA)
        )

    exact = {"alpha_q": jnp.float32(13.0), "beta_q": jnp.float32(9.0)}
    log_z = special.betaln(13, 9)
    trace_elbo = loss_function(Trace_ELBO(num_particles=100))
    assert float(trace_elbo(exact)) == pytest.approx(-log_z, abs=2e-4)
    renyi = loss_function(RenyiELBO(alpha=0.5, num_particles=100))
    assert float(renyi(exact)) == pytest.approx(-log_z, abs=2e-4)
    # while the post's initial guess Beta(10, 10) is worse by KL(q || p) of about 0.19 nats
    assert float(trace_elbo({"alpha_q": jnp.float32(10.0), "beta_q": jnp.float32(10.0)})) > -log_z + 0.1


# --- autoguides and init strategies ----------------------------------------------------------


def test_autoguide_names_lists_numpyros_concrete_autoguides():
    names = guides.autoguide_names()
    for expected in (
        "AutoNormal",
        "AutoMultivariateNormal",
        "AutoDelta",
        "AutoLaplaceApproximation",
        "AutoDiagonalNormal",
        "AutoLowRankMultivariateNormal",
        "AutoBNAFNormal",
        "AutoIAFNormal",
    ):
        assert expected in names
    assert "AutoGuide" not in names and "AutoContinuous" not in names
    assert names == sorted(names)


def test_init_strategy_by_name_and_unknown_name():
    strategy = guides.init_strategy("init_to_median", num_samples=7)
    assert strategy.func.__name__ == "init_to_median" and strategy.keywords == {"num_samples": 7}
    with pytest.raises(ValueError, match="init_to_mean.*init_to_median.*init_to_value"):
        guides.init_strategy("init_to_middle")


# --- registry --------------------------------------------------------------------------------


def test_resolve_model_builtin_with_bound_args():
    model = resolve.resolve_model(
        {"function": "correlated_gaussian_2d", "args": {"sig1": 2.0, "sig2": 0.5, "theta_deg": 0.0}}
    )
    from numpyro.infer.util import log_density

    value, _ = log_density(model, (), {}, {"x": 1.0, "y": 1.0})
    assert float(value) == pytest.approx(-0.5 * ((1.0 / 2.0) ** 2 + (1.0 / 0.5) ** 2))
    assert resolve.resolve_model({"function": "coin_flips"}) is models.coin_flips


def test_resolve_model_from_a_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "import numpyro, numpyro.distributions as dist\n"
        "def my_model(scale=1.0):\n"
        "    numpyro.sample('z', dist.Normal(0.0, scale))\n"
        "def helper():\n    pass\n"
    )
    model = resolve.resolve_model({"function": f"{path}:my_model", "args": {"scale": 3.0}})
    assert float(trace_of(model)["z"]["fn"].scale) == 3.0
    with pytest.raises(ConfigError) as error:
        resolve.resolve_model({"function": f"{path}:nothing"}, where="models.m")
    assert "models.m.function" in str(error.value) and "helper, my_model" in str(error.value)
    with pytest.raises(ConfigError, match="not found"):
        resolve.resolve_model({"function": f"{tmp_path}/absent.py:f"})


def test_unknown_model_names_the_builtins():
    with pytest.raises(ConfigError) as error:
        resolve.resolve_model({"function": "coin_flip"}, where="models.coin")
    message = str(error.value)
    assert "models.coin.function" in message and "'coin_flip'" in message
    assert "coin_flips, correlated_gaussian_2d, multimodal_2d" in message


def test_resolve_builtin_guides_with_args():
    guide = resolve.resolve_guide({"name": "beta", "args": {"alpha_init": 3.0}}, models.coin_flips)
    assert float(param_sites(trace_of(guide))["alpha_q"]["value"]) == 3.0
    guide = resolve.resolve_guide(
        {"name": "mixture_2d", "args": {"learn_weight": True}}, models.multimodal_2d
    )
    assert "weight" in param_sites(trace_of(guide))
    with pytest.raises(ConfigError) as error:
        resolve.resolve_guide(
            {"name": "beta", "args": {"alpha": 3.0}}, models.coin_flips, where="fits.beta.guide"
        )
    assert "fits.beta.guide.args" in str(error.value)
    assert "site, alpha_init, beta_init" in str(error.value)


def test_resolve_autoguide_by_name_with_init_loc_fn_by_name():
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoDelta, AutoNormal
    from numpyro.optim import Adam

    guide = resolve.resolve_guide(
        {"name": "AutoNormal", "args": {"init_loc_fn": "init_to_median", "init_scale": 0.05}},
        models.coin_flips,
    )
    assert isinstance(guide, AutoNormal)
    assert guide.init_loc_fn.func.__name__ == "init_to_median" and guide._init_scale == 0.05

    # dict form with the strategy's own arguments: AutoDelta starts exactly at the values
    guide = resolve.resolve_guide(
        {
            "name": "AutoDelta",
            "args": {"init_loc_fn": {"name": "init_to_value", "values": {"x": 1.5, "y": -2.0}}},
        },
        models.correlated_gaussian_2d,
    )
    assert isinstance(guide, AutoDelta)
    svi = SVI(models.correlated_gaussian_2d, guide, Adam(1e-3), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.PRNGKey(0)))
    assert float(params["x_auto_loc"]) == pytest.approx(1.5)
    assert float(params["y_auto_loc"]) == pytest.approx(-2.0)

    guide = resolve.resolve_guide({"name": "AutoMultivariateNormal"}, models.correlated_gaussian_2d)
    svi = SVI(models.correlated_gaussian_2d, guide, Adam(1e-3), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.PRNGKey(0)))
    assert np.shape(params["auto_scale_tril"]) == (2, 2)


def test_unknown_guide_and_init_names_list_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        resolve.resolve_guide({"name": "AutoNormall"}, models.coin_flips, where="fits.f.guide")
    message = str(error.value)
    assert "fits.f.guide.name" in message and "'AutoNormall'" in message
    assert "beta, mixture_2d, normal" in message
    for name in ("AutoNormal", "AutoMultivariateNormal", "AutoDelta", "AutoLaplaceApproximation"):
        assert name in message
    with pytest.raises(ConfigError) as error:
        resolve.resolve_guide(
            {"name": "AutoNormal", "args": {"init_loc_fn": "init_to_middle"}},
            models.coin_flips,
            where="fits.f.guide",
        )
    assert "fits.f.guide.args.init_loc_fn" in str(error.value)
    assert "init_to_median" in str(error.value) and "init_to_value" in str(error.value)
    with pytest.raises(ConfigError, match="fits.f.guide.args"):
        resolve.resolve_guide(
            {"name": "AutoNormal", "args": {"no_such_arg": 1}}, models.coin_flips, where="fits.f.guide"
        )


def quadratic_descent(optimizer, steps=3):
    """Minimise (p - 3)^2 from p = 0 with ``optimizer``; -> the iterates."""
    state = optimizer.init({"p": jnp.float32(0.0)})
    iterates = []
    for _ in range(steps):
        p = optimizer.get_params(state)["p"]
        # value: the loss, which optax-wrapped optimizers take with the gradient
        state = optimizer.update({"p": 2 * (p - 3.0)}, state, value=(p - 3.0) ** 2)
        iterates.append(float(optimizer.get_params(state)["p"]))
    return iterates


@pytest.mark.parametrize("name", names.OPTIMIZERS)
def test_make_optimizer_each_name_descends(name):
    optimizer = optim.make_optimizer({"name": name, "step_size": 0.01})
    iterates = quadratic_descent(optimizer)
    assert 0.0 < iterates[0] and all(b > a for a, b in zip(iterates, iterates[1:]))
    assert iterates[-1] < 3.0


def test_make_optimizer_step_size_and_args_reach_numpyro():
    sgd = optim.make_optimizer({"name": "SGD", "step_size": 0.1})
    assert quadratic_descent(sgd, 1) == pytest.approx([0.6])  # 0 - 0.1 * 2 * (0 - 3)
    adam = optim.make_optimizer({"name": "Adam", "step_size": 0.1, "args": {"b1": 0.5}})
    assert quadratic_descent(adam, 1) == pytest.approx([0.1], rel=1e-4)  # Adam's first step = lr
    with pytest.raises(ConfigError, match="fits.f.optimizer.args"):
        optim.make_optimizer({"name": "Adam", "args": {"beta1": 0.5}}, where="fits.f.optimizer")


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ({"name": "constant"}, [0.1, 0.1, 0.1]),
        ({"name": "exponential_decay", "transition_steps": 1, "decay_rate": 0.5}, [0.1, 0.05, 0.025]),
        ({"name": "cosine_decay", "decay_steps": 2}, [0.1, 0.05, 0.0]),
        (
            {"name": "warmup_cosine_decay", "init_value": 0.0, "warmup_steps": 2, "decay_steps": 4},
            [0.0, 0.05, 0.1],
        ),
    ],
)
def test_make_optimizer_with_schedules(schedule, expected):
    """SGD with a schedule: each step moves p by the scheduled learning rate times the gradient."""
    optimizer = optim.make_optimizer({"name": "SGD", "step_size": 0.1, "schedule": schedule})
    state = optimizer.init({"p": jnp.float32(0.0)})
    rates = []
    for _ in range(3):
        before = float(optimizer.get_params(state)["p"])
        # a constant gradient -1 (the loss -p)
        state = optimizer.update({"p": jnp.float32(-1.0)}, state, value=-before)
        rates.append(float(optimizer.get_params(state)["p"]) - before)
    assert rates == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", names.OPTIMIZERS)
def test_make_optimizer_with_a_schedule_for_each_optax_form(name):
    optimizer = optim.make_optimizer(
        {
            "name": name,
            "step_size": 0.01,
            "schedule": {"name": "exponential_decay", "transition_steps": 10, "decay_rate": 0.9},
        }
    )
    iterates = quadratic_descent(optimizer)
    assert all(b > a for a, b in zip([0.0] + iterates, iterates))


def test_make_optimizer_errors_name_the_valid_choices():
    with pytest.raises(ConfigError) as error:
        optim.make_optimizer({"name": "adam"}, where="fits.f.optimizer")
    assert "fits.f.optimizer.name" in str(error.value)
    assert ", ".join(names.OPTIMIZERS) in str(error.value)
    with pytest.raises(ConfigError) as error:
        optim.make_optimizer({"name": "Adam", "schedule": {"name": "linear"}}, where="o")
    assert "o.schedule.name" in str(error.value) and ", ".join(names.SCHEDULES) in str(error.value)
    with pytest.raises(ConfigError) as error:
        optim.make_optimizer(
            {"name": "Adam", "schedule": {"name": "exponential_decay", "rate": 0.5}}, where="o"
        )
    assert "o.schedule" in str(error.value) and "transition_steps" in str(error.value)


def test_make_elbo():
    from numpyro.infer import RenyiELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

    elbo = optim.make_elbo({})
    assert isinstance(elbo, Trace_ELBO) and elbo.num_particles == 1
    assert optim.make_elbo({"name": "Trace_ELBO", "num_particles": 32}).num_particles == 32
    assert isinstance(optim.make_elbo({"name": "TraceMeanField_ELBO"}), TraceMeanField_ELBO)
    assert isinstance(optim.make_elbo({"name": "TraceGraph_ELBO"}), TraceGraph_ELBO)
    renyi = optim.make_elbo({"name": "RenyiELBO", "num_particles": 8, "args": {"alpha": 0.5}})
    assert isinstance(renyi, RenyiELBO) and renyi.alpha == 0.5 and renyi.num_particles == 8
    with pytest.raises(ConfigError) as error:
        optim.make_elbo({"name": "ELBO"}, where="fits.f.elbo")
    assert "fits.f.elbo.name" in str(error.value) and ", ".join(names.ELBOS) in str(error.value)
    with pytest.raises(ConfigError, match="fits.f.elbo.args"):
        optim.make_elbo({"name": "Trace_ELBO", "args": {"alpha": 0.5}}, where="fits.f.elbo")


def test_renyi_alpha_zero_bound_is_tighter_than_the_elbo():
    """For a guide off the posterior, the Renyi (alpha = 0) bound with K particles lies between
    the ELBO and log Z: the alpha argument really reaches the objective."""
    guide = guides.beta_guide()
    params = {"alpha_q": 10.0, "beta_q": 10.0}
    kwargs = {"obs": COIN_DATA}
    log_z = special.betaln(13, 9)
    renyi = optim.make_elbo({"name": "RenyiELBO", "num_particles": 64, "args": {"alpha": 0.0}})
    trace = optim.make_elbo({"name": "Trace_ELBO", "num_particles": 64})

    def bounds(elbo):
        keys = jax.random.split(jax.random.PRNGKey(0), 40)
        return -np.asarray(
            jax.jit(jax.vmap(lambda k: elbo.loss(k, params, models.coin_flips, guide, **kwargs)))(keys)
        )

    renyi_bounds, elbos = bounds(renyi), bounds(trace)
    se = renyi_bounds.std() / np.sqrt(len(renyi_bounds))
    # KL(Beta(10, 10) || Beta(13, 9)) is about 0.19 nats; the alpha = 0 bound with 64
    # particles is within a few thousandths of log Z
    assert elbos.mean() < log_z - 0.1
    assert renyi_bounds.mean() > elbos.mean() + 0.1
    assert abs(renyi_bounds.mean() - log_z) < 0.01 + 4 * se


# --- a guide's support against the model's ---------------------------------------------------


def _half_normal_model(obs=None):
    import numpyro
    import numpyro.distributions as dist

    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    numpyro.sample("obs", dist.Normal(0.0, scale), obs=obs)


def _normal_guide_on(site):
    import numpyro
    import numpyro.distributions as dist

    def guide(obs=None):
        loc = numpyro.param("loc", 0.3)
        numpyro.sample(site, dist.Normal(loc, 0.2))

    return guide


@pytest.mark.parametrize(
    "case",
    [
        "normal_on_coin",
        "normal_on_half_normal",
        "beta_on_coin",
        "autonormal_on_coin",
        "mixture_on_multimodal",
    ],
)
def test_support_excess_finds_guides_wider_than_the_model(case):
    """Only where the guide samples a distribution whose support is wider than the model's
    prior: the post's Normal guide on (0, 1), a Normal on a HalfNormal's (0, inf). Not a Beta
    guide, not an autoguide or the mixture guide (Delta sites, whose values the transform keeps
    where it must, or says nothing of)."""
    from sviflow.predictive import site_names, support_excess

    coin = resolve.resolve_model({"function": "coin_flips"})
    kwargs = {"obs": COIN_DATA}
    if case == "normal_on_coin":
        model, guide = coin, guides.normal_guide(mean_init=0.3, sd_init=0.2)
        params = {"mean": np.array([0.3, 0.9], np.float32), "sd": np.array([0.2, 0.2], np.float32)}
        expected = {
            "latent_fairness": special.ndtr(-params["mean"] / 0.2) + special.ndtr((params["mean"] - 1) / 0.2)
        }
    elif case == "normal_on_half_normal":
        model, guide, kwargs = _half_normal_model, _normal_guide_on("scale"), {"obs": np.ones(3, np.float32)}
        params = {"loc": np.array([0.3], np.float32)}
        expected = {"scale": special.ndtr(np.array([-0.3 / 0.2]))}
    elif case == "beta_on_coin":
        model, guide, expected = coin, guides.beta_guide(), {}
        params = {"alpha_q": np.array([13.0], np.float32), "beta_q": np.array([9.0], np.float32)}
    elif case == "autonormal_on_coin":
        model, expected = coin, {}
        guide = resolve.resolve_guide({"name": "AutoNormal"}, coin)
        resolve.prepare_guide(coin, guide, kwargs, where="fits.f")
        params = {
            "latent_fairness_auto_loc": np.array([0.3], np.float32),
            "latent_fairness_auto_scale": np.array([0.2], np.float32),
        }
    else:
        model = resolve.resolve_model({"function": "multimodal_2d", "args": {"b": 5.0}})
        guide, kwargs, expected = guides.mixture_2d_guide(), {}, {}
        params = {
            name: np.array([value], np.float32)
            for name, value in (("sig1_q", 0.5), ("sig2_q", 2.0), ("b", 5.0), ("theta", 0.7))
        }
    latent, _ = site_names(model, kwargs)
    found = support_excess(model, guide, params, kwargs, latent)
    assert set(found) == set(expected)
    for site, mass in expected.items():
        np.testing.assert_allclose(found[site]["mass_outside"], mass, rtol=1e-4)
        assert found[site]["guide_support"] == "the real line"
    if case == "normal_on_coin":
        assert found["latent_fairness"]["model_support"] == "(0, 1)"
    if case == "normal_on_half_normal":
        assert found["scale"]["model_support"] == "(0, inf)"
