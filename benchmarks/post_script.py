"""The post "Stochastic Variational Inference Part 1" as one plain script: the baseline.

Its five experiments (Beta guide, Normal guide, Beta guide with 32 particles, the two-mode
mixture guide, AutoMultivariateNormal) and every figure, run the way the post runs them: one
``svi.run`` per fit, the same models, guides, optimizers, seeds, step counts and sample sizes,
with ``progress_bar=False`` (the post's default progress bar costs minutes in numpyro 0.22, see
benchmarks/README.md). Two changes only: figures are written as PNG files (matplotlib's Agg
backend) instead of shown, and scipy stands in for chainconsumer, which the post imports but
this code does not need.

    python benchmarks/post_script.py OUTPUT_DIR [--scale 10] [--progress-bar]

``--scale N`` divides every step count and sample size by N (a smoke test, not the baseline).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

T0 = time.perf_counter()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import jax  # noqa: E402,F401
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax import random  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402
from numpyro.infer import SVI, Predictive, Trace_ELBO  # noqa: E402
from scipy.stats import beta, norm  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("out", help="directory for the figures")
parser.add_argument(
    "--scale", type=int, default=1, help="divide every step count and sample size by this (smoke tests only)"
)
parser.add_argument(
    "--progress-bar",
    action="store_true",
    help="svi.run(..., progress_bar=True) as the post's notebook (slow in numpyro 0.22)",
)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
PROGRESS = args.progress_bar


def n(count: int) -> int:
    return max(1, count // args.scale)


def save(name: str) -> None:
    plt.savefig(os.path.join(args.out, f"{name}.png"))
    plt.close("all")


print(f"imports: {time.perf_counter() - T0:.2f} s", flush=True)

# ---------------------------------------------------------------------------------------------
# Heads or Tails: data and model

A_true, B_true = 12, 8
data_headstails = jnp.concatenate([jnp.ones(A_true), jnp.zeros(B_true)])
mean_true, var_true = (
    A_true / (A_true + B_true),
    (A_true * B_true / (A_true + B_true) ** 2 / (A_true + B_true + 1)) ** 0.5,
)


def model_headstails(data):
    f = numpyro.sample("latent_fairness", dist.Uniform(0, 1))
    with numpyro.plate("N", data.shape[0] if data is not None else 10):
        numpyro.sample("obs", dist.Bernoulli(f), obs=data)


# ---------------------------------------------------------------------------------------------
# 1. Fitting a Beta distribution


def guide_beta(data):
    alpha_q = numpyro.param("alpha_q", 20.0 / 2.0, constraint=constraints.positive)
    beta_q = numpyro.param("beta_q", 20.0 / 2.0, constraint=constraints.positive)
    numpyro.sample("latent_fairness", dist.Beta(alpha_q, beta_q))


optimizer = numpyro.optim.Adam(step_size=0.0005)
svi_beta = SVI(model_headstails, guide_beta, optimizer, loss=Trace_ELBO())
t = time.perf_counter()
svi_beta_result = svi_beta.run(
    random.PRNGKey(1), num_steps=n(10000), data=data_headstails, progress_bar=PROGRESS
)
print(f"fit beta: {time.perf_counter() - t:.2f} s", flush=True)

params_beta = svi_beta_result.params
A_beta, B_beta = params_beta["alpha_q"], params_beta["beta_q"]
inferred_mean = A_beta / (A_beta + B_beta)
inferred_var = (A_beta * B_beta / (A_beta + B_beta) ** 2 / (A_beta + B_beta + 1)) ** 0.5

print("-" * 76)
print("\t Truth \t SVI")
print("A \t %0.1f \t %0.1f" % (A_true, params_beta["alpha_q"]))
print("B \t %0.1f \t %0.1f" % (B_true, params_beta["beta_q"]))
print("Mean \t %0.2f \t %0.2f" % (mean_true, inferred_mean))
print("Var \t %0.2f \t %0.2f" % (var_true, inferred_var))
print("-" * 76)

Xplot = np.linspace(0, 1, 128)
plt.figure(figsize=(8, 3))
plt.plot(Xplot, beta(A_true, B_true).pdf(Xplot), label="True Distribution")
plt.plot(Xplot, beta(params_beta["alpha_q"], params_beta["beta_q"]).pdf(Xplot), label="SVI Result")
plt.xlim(0, 1)
plt.gca().yaxis.set_ticklabels([])
plt.xlabel("Latent Fairness, $f$")
plt.grid()
plt.legend()
save("beta_pdf")

# ---------------------------------------------------------------------------------------------
# 2. Fitting an approximate (Normal) model


def guide_normal(data):
    mean = numpyro.param("mean", 0.5, constraint=constraints.unit_interval)
    var = numpyro.param("var", 0.1, constraint=constraints.positive)
    numpyro.sample("latent_fairness", dist.Normal(mean, var))


svi_norm = SVI(model_headstails, guide_normal, optimizer, loss=Trace_ELBO())
t = time.perf_counter()
svi_result_norm = svi_norm.run(random.PRNGKey(2), n(50000), data_headstails, progress_bar=PROGRESS)
print(f"fit normal: {time.perf_counter() - t:.2f} s", flush=True)
params_norm = svi_result_norm.params

print("-" * 76)
print("\t Truth \t SVI")
print("Mean \t %0.2f \t %0.2f" % (mean_true, params_norm["mean"]))
print("B \t %0.2f \t %0.2f" % (var_true, params_norm["var"]))
print("-" * 76)

plt.figure(figsize=(8, 3))
plt.plot(Xplot, beta(A_true, B_true).pdf(Xplot), label="True Distribution")
plt.plot(Xplot, norm(params_norm["mean"], params_norm["var"]).pdf(Xplot), label="SVI Normal Approx")
plt.xlim(0, 1)
plt.gca().yaxis.set_ticklabels([])
plt.xlabel("Latent Fairness, $f$")
plt.grid()
plt.legend()
save("normal_pdf")

# ---------------------------------------------------------------------------------------------
# Predictive paths: posterior samples, mock observations from the guide and from the samples

t = time.perf_counter()
predictive_MCMClike = Predictive(guide_beta, params=svi_beta_result.params, num_samples=n(10000))
posterior_samples = predictive_MCMClike(random.PRNGKey(1), data=None)

plt.figure(figsize=(8, 3))
plt.hist(
    posterior_samples["latent_fairness"],
    bins=64,
    histtype="step",
    density=True,
    label="Predictive Samples",
    lw=1.2,
    zorder=10,
)
plt.plot(Xplot, beta(A_true, B_true).pdf(Xplot), label="True Distribution", zorder=-1, alpha=0.5)
plt.plot(Xplot, beta(A_beta, B_beta).pdf(Xplot), label="SVI Beta", zorder=-1, alpha=0.5)
plt.gca().yaxis.set_ticklabels([])
plt.legend()
plt.grid()
save("posterior_samples")

predictive_fromguide = Predictive(
    model_headstails, guide=guide_beta, params=svi_beta_result.params, num_samples=n(1000)
)
samples_fromguide = predictive_fromguide(random.PRNGKey(1), data=None)
plt.figure(figsize=(4, 1.5))
plt.hist(samples_fromguide["obs"].reshape(n(1000) * 10), bins=2, rwidth=0.75, density=True)
plt.gca().set_xticklabels([])
save("mock_from_guide")

predictive_fromsamples = Predictive(model_headstails, posterior_samples, params=svi_beta_result.params)
samples_fromsamples = predictive_fromsamples(random.PRNGKey(1), data=None)
plt.figure(figsize=(4, 1.5))
plt.hist(samples_fromsamples["obs"].reshape(n(10000) * 10), bins=2, rwidth=0.75, density=True)
plt.gca().set_xticklabels([])
save("mock_from_samples")
print(f"predictive: {time.perf_counter() - t:.2f} s", flush=True)

# ---------------------------------------------------------------------------------------------
# Ensuring convergence: the loss, then 32 particles

LOSSES = svi_beta_result.losses
plt.figure(figsize=(8, 3))
plt.plot(LOSSES, lw=0.5)
plt.axhline(np.median(svi_beta_result.losses[::-100]), c="k", ls="--", zorder=-1)
plt.xlabel("Optimization Step"), plt.ylabel("Loss (ELBO)")
plt.grid()
save("beta_loss")

# 3. the Beta guide with 32 particles
svi_beta = SVI(model_headstails, guide_beta, optimizer, loss=Trace_ELBO(num_particles=32))
t = time.perf_counter()
svi_beta_result = svi_beta.run(
    random.PRNGKey(1), num_steps=n(10000), data=data_headstails, progress_bar=PROGRESS
)
print(f"fit beta_32_particles: {time.perf_counter() - t:.2f} s", flush=True)

plt.figure(figsize=(8, 3))
plt.plot(LOSSES, lw=0.5, label="num_particles = 1")
plt.plot(svi_beta_result.losses, lw=0.5, label="num_particles = 32")
plt.legend()
plt.axhline(np.median(svi_beta_result.losses[::-100]), c="k", ls="--", zorder=-1)
plt.xlabel("Optimization Step"), plt.ylabel("Loss (ELBO)")
plt.grid()
save("loss_1_vs_32_particles")

# ---------------------------------------------------------------------------------------------
# 4. A multimodal posterior and a mixture guide

sig1, sig2, b = 0.5, 2.0, 5.0


def log_distribution(x, y):
    sqrt2 = 2**0.5
    f1 = jnp.exp(-1 / 2 * (((x + y) / sqrt2 - b) / sig1) ** 2)
    f2 = jnp.exp(-1 / 2 * (((x + y) / sqrt2 + b) / sig1) ** 2)
    log_fac = jnp.log(f1 + f2)
    log_fac += +jnp.log(1 / (1 + ((x - y) / sig2 / sqrt2) ** 2 / 2))
    return log_fac


def model_multimodal():
    x = numpyro.sample("x", numpyro.distributions.Uniform(-20, 20))
    y = numpyro.sample("y", numpyro.distributions.Uniform(-20, 20))
    log_fac = log_distribution(x, y)
    numpyro.factor("logfac", log_fac)


plt.figure(figsize=(4, 4))
X, Y = np.meshgrid(np.linspace(-20, 20, 128), np.linspace(-20, 20, 128))
Z = np.exp(log_distribution(X, Y))
plt.imshow(Z[::-1], extent=[-20, 20, -20, 20])
plt.axis("square")
plt.title("True Distribution")
save("multimodal_true")


def guide_multimodal():
    sig1_q = numpyro.param("sig1_q", 1.0, constraint=constraints.positive)
    sig2_q = numpyro.param("sig2_q", 1.0, constraint=constraints.positive)
    b = numpyro.param("b", 1.0, constraint=constraints.positive)
    theta = numpyro.param("theta", 0.0, constraint=constraints.interval(-np.pi / 2, np.pi / 2))
    weighting = jnp.array([0.5, 0.5])
    gauss_mix = numpyro.distributions.MixtureGeneral(
        dist.Categorical(weighting),
        [dist.Normal(loc=b, scale=sig1_q), dist.Normal(loc=-b, scale=sig1_q)],
    )
    u1 = numpyro.sample("u1", gauss_mix, infer={"is_auxiliary": True})
    u2 = numpyro.sample("u2", dist.Normal(0, sig2_q), infer={"is_auxiliary": True})
    c, s = jnp.cos(theta), jnp.sin(theta)
    numpyro.sample("x", dist.Delta(c * u1 - s * u2))
    numpyro.sample("y", dist.Delta(c * u2 + s * u1))


optimizer = numpyro.optim.Adam(step_size=0.0005)
svi_multimodal = SVI(model_multimodal, guide_multimodal, optimizer, loss=Trace_ELBO(num_particles=16))
t = time.perf_counter()
svi_multimodal_result = svi_multimodal.run(random.PRNGKey(1), n(10000), progress_bar=PROGRESS)
print(f"fit multimodal: {time.perf_counter() - t:.2f} s", flush=True)

print("Optimal Guide Params")
print("-" * 76)
for key, val in zip(svi_multimodal_result.params.keys(), svi_multimodal_result.params.values()):
    if key != "theta":
        print("%s:\t%0.3f" % (key, val))
    else:
        print("%s:\t%0.1f deg" % (key, val * 180 / np.pi))
print("-" * 76)
plt.figure(figsize=(8, 3))
plt.grid()
plt.plot(svi_multimodal_result.losses, lw=0.5)
plt.xlabel("Itteration No.")
plt.ylabel("Loss (ELBO)")
save("multimodal_loss")

fig, ax = plt.subplots(1, 2, figsize=(8, 4))
ax[0].imshow(Z[::-1], extent=[-20, 20, -20, 20])
ax[0].axis("square")
ax[0].set_title("True Distribution")
predictive_MCMClike = Predictive(guide_multimodal, params=svi_multimodal_result.params, num_samples=n(5000))
posterior_samples = predictive_MCMClike(random.PRNGKey(1))
Xsample, Ysample = posterior_samples["x"], posterior_samples["y"]
ax[1].scatter(Xsample, Ysample, s=3, c="k", alpha=0.05)
ax[1].grid()
ax[1].axis("square")
ax[1].set_xlim(-20, 20), ax[1].set_ylim(-20, 20)
ax[1].set_title("Recovered Samples")
save("multimodal_samples")

# ---------------------------------------------------------------------------------------------
# 5. Autoguides

sig1, sig2, theta = 1.0, 3.0, 45 * np.pi / 180


def factor(x, y):
    c, s = jnp.cos(theta), jnp.sin(theta)
    log_fac = -1.0 / 2.0 * (((c * x - s * y) / sig1) ** 2 + ((s * x + c * y) / sig2) ** 2)
    return jnp.exp(log_fac)


def model_forauto():
    x = numpyro.sample("x", numpyro.distributions.ImproperUniform(constraints.real, (), ()))
    y = numpyro.sample("y", numpyro.distributions.ImproperUniform(constraints.real, (), ()))
    log_fac = jnp.log(factor(x, y))
    numpyro.factor("logfac", log_fac)


optimizer_forauto = numpyro.optim.Adam(step_size=0.0005)
autoguide = numpyro.infer.autoguide.AutoMultivariateNormal(model_forauto)
autosvi = SVI(model_forauto, autoguide, optim=optimizer_forauto, loss=Trace_ELBO())
t = time.perf_counter()
autosvi_result = autosvi.run(random.PRNGKey(2), n(50000), progress_bar=PROGRESS)
print(f"fit autoguide: {time.perf_counter() - t:.2f} s", flush=True)

fig, ax = plt.subplots(1, 2, figsize=(8, 4))
exmin, exmax = -10.0, 10.0
X, Y = np.meshgrid(np.linspace(exmin, exmax, 128), np.linspace(exmin, exmax, 128))
Z = factor(X, Y)
ax[0].imshow(Z[::-1], extent=[exmin, exmax, exmin, exmax])
ax[0].axis("square")
ax[0].set_title("True Distribution")
predictive_MCMClike = Predictive(autoguide, params=autosvi_result.params, num_samples=n(5000))
posterior_samples = predictive_MCMClike(random.PRNGKey(1))
Xsample, Ysample = posterior_samples["x"], posterior_samples["y"]
ax[1].scatter(Xsample, Ysample, s=3, c="k", alpha=0.1)
ax[1].grid()
ax[1].axis("square")
ax[1].set_xlim(exmin, exmax), ax[1].set_ylim(exmin, exmax)
ax[1].set_title("Recovered Samples")
save("autoguide_samples")

# Recovering the covariance matrix from the lower triangular Cholesky factor
L = autosvi_result.params["auto_scale_tril"]
COVAR_REC = jnp.dot(L, L.T)
print("Recovered covariance matrix:")
print(COVAR_REC.round(3))
sigs, us = jnp.linalg.eig(COVAR_REC)
print("Recovered Variances:")
sig1_rec, sig2_rec = jnp.real(sigs) ** (1.0 / 2.0)
print("σ1 = %0.2f, σ2 = %0.2f" % (sig1_rec, sig2_rec))
print("Recovered Contour Angle:")
u1, u2 = jnp.real(us)
thet_rec = np.arctan(u1[1] / u1[0])
print("θ = %0.2f°" % (thet_rec * 180 / np.pi))

print(f"total: {time.perf_counter() - T0:.2f} s, figures in {args.out}", flush=True)
sys.exit(0)
