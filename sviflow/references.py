"""Reference posteriors to measure a guide against.

- ``exact``: the coin model's conjugate posterior Beta(a + heads, b + tails) and its exact log
  evidence log B(a + heads, b + tails) - log B(a, b). (The post compares to Beta(heads, tails),
  the normalised likelihood, which is not the posterior.)
- ``grid``: quadrature of the model's log joint on a grid of cell midpoints, for models with one
  or two scalar latent sites: log evidence, mean, covariance, mass on each side of a split.
- ``nuts``: NumPyro's NUTS, for any model (scalar, vector, matrix and plate-indexed sites):
  moments and draws, no evidence; R-hat (rank-normalised split) and bulk and tail ESS of every
  component, divergences and transitions that hit the tree depth.
- ``draws``: the user's own gold draws from a file (ArviZ netCDF, CSV, posteriordb JSON),
  matched to the model's sites and components.

JAX is imported by ``grid``, ``nuts`` and ``draws`` only: the exact reference is numpy and scipy
(``scipy.stats`` is imported by it alone).

Each returns a dict with the same core: ``latent_sites``, ``mean``/``sd`` per site, ``covariance``
over the flattened latent sites, ``draws`` per site, ``log_z`` (NaN where unknown), and
``warnings``: why the reference may not be trusted (R-hat above 1.01, bulk ESS below 400,
divergences: posteriordb's bar for a reference), each with what to change; empty when it is fine.
Draws of the model's ``numpyro.deterministic`` sites, where known, are kept beside the latent
ones (``deterministic_sites``), with their moments, outside the covariance.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import zipfile
from pathlib import Path

import numpy as np
from scipy import special

from sviflow.errors import ConfigError

# posteriordb's bar for a reference posterior (Magnusson et al. 2024)
RHAT_MAX = 1.01
ESS_MIN = 400


def _core(
    latent_sites,
    draws: dict,
    mean=None,
    sd=None,
    covariance=None,
    log_z=float("nan"),
    deterministic: dict | None = None,
):
    flat = np.concatenate([np.asarray(draws[s]).reshape(len(draws[s]), -1) for s in latent_sites], axis=1)
    if covariance is None:
        covariance = np.atleast_2d(np.cov(flat, rowvar=False))
    deterministic = deterministic or {}
    sites = list(latent_sites) + list(deterministic)
    every = {**{s: draws[s] for s in latent_sites}, **deterministic}
    mean = dict(mean) if mean is not None else {}
    sd = dict(sd) if sd is not None else {}
    return {
        "latent_sites": list(latent_sites),
        "deterministic_sites": list(deterministic),
        "mean": {s: mean[s] if s in mean else np.mean(every[s], axis=0) for s in sites},
        "sd": {s: sd[s] if s in sd else np.std(every[s], axis=0) for s in sites},
        "covariance": np.asarray(covariance, dtype=np.float64),
        "draws": {s: np.asarray(every[s]) for s in sites},
        "log_z": float(log_z),
        "warnings": [],
    }


def site_shapes(model, model_kwargs: dict, seed: int = 0) -> tuple[dict, dict]:
    """-> ({latent site: shape}, {deterministic site: shape}) in the model's order, from one
    trace on abstract values (no XLA compile)."""
    import jax
    from numpyro import handlers
    from numpyro.infer.initialization import init_to_uniform

    latent, deterministic = {}, {}

    def shapes():
        substituted = handlers.substitute(handlers.seed(model, seed), substitute_fn=init_to_uniform)
        trace = handlers.trace(substituted).get_trace(**model_kwargs)
        for name, site in trace.items():
            if (
                site["type"] == "sample"
                and not site["is_observed"]
                and not site.get("infer", {}).get("is_auxiliary", False)
            ):
                latent[name] = tuple(np.shape(site["value"]))
            elif site["type"] == "deterministic":
                deterministic[name] = tuple(np.shape(site["value"]))

    jax.make_jaxpr(shapes)()
    return latent, deterministic


def label(site: str, index: tuple) -> str:
    """A component's name, 0-based as numpy indexes it: ``W[1,2]``; a scalar site's, its own."""
    return f"{site}[{','.join(map(str, index))}]" if index else site


def _listed(labels: list[str], limit: int = 6) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def chain_statistics(by_chain: dict) -> dict:
    """Rank-normalised split R-hat, bulk and tail ESS of every component of every site.

    ``by_chain``: {site: (chain, draw, ...)}; -> {"rhat", "ess", "ess_tail"}: {site: array of
    the site's shape}. ArviZ on an xarray Dataset, which takes any shape."""
    import warnings

    import arviz as az

    dataset = az.convert_to_dataset({s: np.asarray(v, dtype=np.float64) for s, v in by_chain.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # too few draws: NaN, reported as such
        rhat = az.rhat(dataset, method="rank")
        bulk = az.ess(dataset, method="bulk")
        tail = az.ess(dataset, method="tail")
    return {
        name: {s: np.asarray(values[s].values, dtype=np.float64) for s in by_chain}
        for name, values in (("rhat", rhat), ("ess", bulk), ("ess_tail", tail))
    }


def _components(values: dict, predicate) -> tuple[list[str], list[float]]:
    labels, found = [], []
    for site, array in values.items():
        array = np.asarray(array, dtype=np.float64)
        for index in np.ndindex(array.shape):
            if predicate(array[index]):
                labels.append(label(site, index))
                found.append(float(array[index]))
    return labels, found


def _from_zero(labels: list[str]) -> str:
    return "; indices from 0" if any("[" in text for text in labels) else ""


def trust(
    statistics: dict, *, num_chains: int, subject: str, more_draws: str, more_chains: str | None
) -> list[str]:
    """The reasons not to trust draws whose ``chain_statistics`` these are, each with what to
    change: R-hat above RHAT_MAX, bulk ESS below ESS_MIN, or either not finite. One chain has
    no R-hat: a problem where ``more_chains`` says how to get more, else not judged."""
    problems = []
    if num_chains < 2:
        if more_chains:
            problems.append(f"{subject}: R-hat needs two or more chains, there is one; {more_chains}")
    else:
        labels, worst = _components(statistics["rhat"], lambda v: not v <= RHAT_MAX)
        if labels:
            finite = [v for v in worst if math.isfinite(v)]
            detail = (
                f"worst {max(finite):.3f}"
                if finite
                else "not finite: too few draws, or draws that do not move"
            )
            problems.append(
                f"{subject}: R-hat above {RHAT_MAX} for {_listed(labels)} ({detail}"
                f"{_from_zero(labels)}): the chains disagree; {more_draws}"
                + (f", or {more_chains}" if more_chains else "")
            )
    labels, lowest = _components(statistics["ess"], lambda v: not v >= ESS_MIN)
    if labels:
        finite = [v for v in lowest if math.isfinite(v)]
        detail = f"lowest {min(finite):.0f}" if finite else "not finite"
        problems.append(
            f"{subject}: bulk ESS below {ESS_MIN} for {_listed(labels)} ({detail}"
            f"{_from_zero(labels)}): too few independent draws for its moments; {more_draws}"
        )
    return problems


def thin(count: int, num_draws: int | None) -> np.ndarray:
    """Indices of at most ``num_draws`` of ``count`` draws, evenly spaced."""
    if not num_draws or count <= num_draws:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, num_draws)).astype(int))


def _from_chains(latent: list[str], deterministic: list[str], by_chain: dict, num_draws) -> dict:
    """The core of a reference from (chain, draw, ...) arrays: moments and covariance of all the
    draws, at most ``num_draws`` of them kept (evenly thinned)."""
    pooled = {s: np.asarray(v).reshape(-1, *np.shape(v)[2:]) for s, v in by_chain.items()}
    flat = np.concatenate([pooled[s].reshape(len(pooled[s]), -1) for s in latent], axis=1)
    covariance = np.atleast_2d(np.cov(flat.astype(np.float64), rowvar=False))
    mean = {s: np.mean(pooled[s], axis=0, dtype=np.float64) for s in pooled}
    sd = {s: np.std(pooled[s], axis=0, dtype=np.float64) for s in pooled}
    keep = thin(len(flat), num_draws)
    return _core(
        latent,
        {s: pooled[s][keep] for s in latent},
        mean=mean,
        sd=sd,
        covariance=covariance,
        deterministic={s: pooled[s][keep] for s in deterministic},
    )


@contextlib.contextmanager
def _stage(what: str):
    """An error of the library inside names what the reference was doing."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as error:
        raise RuntimeError(f"reference failed while {what}: {type(error).__name__}: {error}") from error


def exact_coin(
    observed: dict,
    model_args: dict,
    *,
    num_draws: int = 10_000,
    seed: int = 0,
    site: str = "latent_fairness",
    obs_site: str = "obs",
) -> dict:
    """The conjugate posterior of :func:`sviflow.models.coin_flips`."""
    flips = np.asarray(observed[obs_site])
    heads, tails = float(flips.sum()), float(len(flips) - flips.sum())
    a0, b0 = float(model_args.get("prior_alpha", 1.0)), float(model_args.get("prior_beta", 1.0))
    a, b = a0 + heads, b0 + tails
    from scipy import stats  # here only: importing scipy.stats costs every other step 1.3 s

    posterior = stats.beta(a, b)
    draws = posterior.rvs(size=num_draws, random_state=np.random.default_rng(seed))
    x = np.linspace(0.0, 1.0, 513)[1:-1]
    reference = _core(
        [site],
        {site: draws},
        mean={site: np.float64(posterior.mean())},
        sd={site: np.float64(posterior.std())},
        covariance=np.array([[posterior.var()]]),
        log_z=special.betaln(a, b) - special.betaln(a0, b0),
    )
    reference["method"] = "exact"
    reference["exact"] = {"alpha": a, "beta": b, "heads": heads, "tails": tails}
    reference["density"] = {"x": x, "pdf": posterior.pdf(x)}
    return reference


def _site_bounds(model, model_kwargs, sites, bounds):
    """(low, high) of each site: the configured bounds, else its support's. The supports are
    read in one compiled program: run eagerly, the model costs one XLA compile per op (0.65 s
    for the multimodal model, against 0.13 s)."""
    from numpyro import handlers
    from numpyro.infer.initialization import init_to_uniform

    from sviflow.compiling import jit_once

    given = [
        tuple(float(v) for v in bounds[i]) if bounds and bounds[i] is not None else None
        for i in range(len(sites))
    ]
    missing = [site for site, limits in zip(sites, given) if limits is None]

    def supports():
        substituted = handlers.substitute(handlers.seed(model, 0), substitute_fn=init_to_uniform)
        trace = handlers.trace(substituted).get_trace(**model_kwargs)
        return {
            site: tuple(
                getattr(trace[site]["fn"].support, side, None) for side in ("lower_bound", "upper_bound")
            )
            for site in missing
        }

    found = jit_once(supports)() if missing else {}
    resolved = []
    for site, limits in zip(sites, given):
        if limits is None:
            low, high = found[site]
            if low is None or high is None:
                raise ConfigError(
                    f"reference.bounds: site {site!r} is unbounded; give its bounds "
                    f"as [low, high] in the model's reference.bounds"
                )
            limits = (float(low), float(high))
        resolved.append(limits)
    return resolved


def grid(
    model,
    model_kwargs: dict,
    *,
    bounds=None,
    points: int = 400,
    num_draws: int = 10_000,
    seed: int = 0,
    split_direction=None,
) -> dict:
    """Quadrature of the log joint on ``points`` cells per dimension (1 or 2 scalar sites)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from sviflow.compiling import jit_once
    from sviflow.predictive import site_names

    sites, _ = site_names(model, model_kwargs)
    if len(sites) not in (1, 2):
        raise ConfigError(
            f"reference.method grid needs one or two scalar latent sites, the model "
            f"has {len(sites)} ({', '.join(sites)}); use method nuts"
        )
    limits = _site_bounds(model, model_kwargs, sites, bounds)
    axes = [low + (high - low) * (np.arange(points) + 0.5) / points for low, high in limits]
    cell = float(np.prod([(high - low) / points for low, high in limits]))
    mesh = np.meshgrid(*axes, indexing="ij")
    flat = {s: jnp.asarray(m.ravel()) for s, m in zip(sites, mesh)}

    def joint(values):
        return log_density(model, (), model_kwargs, values)[0]

    log_p = np.asarray(jit_once(jax.vmap(joint))(flat), dtype=np.float64)
    log_z = special.logsumexp(log_p) + math.log(cell)
    weights = np.exp(log_p - special.logsumexp(log_p))
    coords = np.stack([np.asarray(flat[s], dtype=np.float64) for s in sites], axis=1)
    mean_vec = weights @ coords
    centred = coords - mean_vec
    covariance = (weights[:, None] * centred).T @ centred
    rng = np.random.default_rng(seed)
    cells = rng.choice(len(weights), size=num_draws, p=weights)
    widths = np.array([(high - low) / points for low, high in limits])
    jitter = (rng.random((num_draws, len(sites))) - 0.5) * widths
    draws = coords[cells] + jitter
    reference = _core(
        sites,
        {s: draws[:, i] for i, s in enumerate(sites)},
        mean={s: mean_vec[i] for i, s in enumerate(sites)},
        sd={s: math.sqrt(covariance[i, i]) for i, s in enumerate(sites)},
        covariance=covariance,
        log_z=log_z,
    )
    reference["method"] = "grid"
    reference["density"] = {
        **{f"axis_{i}": a for i, a in enumerate(axes)},
        "pdf": np.exp(log_p - log_z).reshape(mesh[0].shape),
    }
    if split_direction is not None:
        direction = np.asarray(split_direction, dtype=np.float64)
        side = centred @ direction > 0
        reference["split"] = {"direction": direction, "mass_positive": float(weights[side].sum())}
    return reference


def nuts(
    model,
    model_kwargs: dict,
    *,
    num_warmup: int = 1000,
    num_samples: int = 2000,
    num_chains: int = 2,
    target_accept_prob: float = 0.8,
    dense_mass: bool = False,
    max_tree_depth: int = 10,
    num_draws: int | None = None,
    seed: int = 0,
    where: str = "reference",
) -> dict:
    """NUTS draws of every latent (and deterministic) site, of any shape; R-hat and ESS of
    every component, divergences and tree-depth hits are kept and judged (``warnings``).
    ``where`` is the config key the advice names (``models.<name>.reference``)."""
    import logging

    import jax
    from numpyro.infer import MCMC, NUTS

    log = logging.getLogger("sviflow")
    with _stage("tracing the model for its sites"):
        latent, deterministic = site_shapes(model, model_kwargs)
    log.info(
        "nuts: %d chains of %d warmup and %d draws, target_accept_prob %g, dense_mass %s, "
        "max_tree_depth %d; sites %s",
        num_chains,
        num_warmup,
        num_samples,
        target_accept_prob,
        dense_mass,
        max_tree_depth,
        {**latent, **deterministic},
    )
    start = time.perf_counter()
    with _stage("sampling with NUTS"):
        kernel = NUTS(
            model, target_accept_prob=target_accept_prob, dense_mass=dense_mass, max_tree_depth=max_tree_depth
        )
        mcmc = MCMC(
            kernel,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            chain_method="sequential",
            progress_bar=False,
        )
        mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging", "num_steps"), **model_kwargs)
        samples = mcmc.get_samples(group_by_chain=True)
        extra = mcmc.get_extra_fields(group_by_chain=True)
        by_chain = {s: np.asarray(samples[s]) for s in [*latent, *deterministic] if s in samples}
    log.info("nuts: sampled in %.1f s", time.perf_counter() - start)
    with _stage("computing R-hat and ESS of the draws"):
        statistics = chain_statistics(by_chain)
        divergences = np.asarray(extra["diverging"], dtype=bool).reshape(num_chains, -1).sum(axis=1)
        # a transition that hit the tree depth took 2**depth - 1 leapfrog steps
        depth_hits = (np.asarray(extra["num_steps"]).reshape(num_chains, -1) >= 2**max_tree_depth - 1).sum(
            axis=1
        )
    with _stage("writing the moments of the draws"):
        reference = _from_chains(
            list(latent), [s for s in deterministic if s in by_chain], by_chain, num_draws
        )
    reference["method"] = "nuts"
    reference["nuts"] = {
        **statistics,
        "divergences": divergences.astype(np.int64),
        "tree_depth_hits": depth_hits.astype(np.int64),
        "num_chains": np.int64(num_chains),
        "num_warmup": np.int64(num_warmup),
        "num_samples": np.int64(num_samples),
        "target_accept_prob": np.float64(target_accept_prob),
        "dense_mass": np.bool_(dense_mass),
        "max_tree_depth": np.int64(max_tree_depth),
    }
    now = f"{where}.num_warmup (now {num_warmup}) and num_samples (now {num_samples})"
    problems = trust(
        statistics,
        num_chains=num_chains,
        subject="NUTS reference",
        more_draws=f"raise {now}",
        more_chains=f"run more chains ({where}.num_chains, now {num_chains}; 4 is usual)",
    )
    total, diverged = num_chains * num_samples, int(divergences.sum())
    if diverged:
        problems.append(
            f"NUTS reference: {diverged} divergent transitions of {total}: the sampler cannot follow "
            f"the posterior's curvature and may miss part of it; raise {where}.target_accept_prob "
            f"(now {target_accept_prob:g}; try 0.95 or 0.99), set {where}.dense_mass: true for a "
            f"correlated posterior, or reparametrize the model (non-centred)"
        )
    hits = int(depth_hits.sum())
    if hits:
        problems.append(
            f"NUTS reference: {hits} of {total} transitions hit max_tree_depth {max_tree_depth}: "
            f"the sampler moves slowly; set {where}.dense_mass: true (now {str(dense_mass).lower()}), "
            f"raise {where}.max_tree_depth, or rescale the model's parameters"
        )
    reference["warnings"] = problems
    return reference


# --- the user's own draws ----------------------------------------------------------------------

DRAWS_FORMATS = ".nc (ArviZ netCDF), .csv, .json, .json.zip or .zip (posteriordb)"
_COMPONENT = re.compile(r"^(?P<site>.+?)(?:\[(?P<brackets>\s*\d+(?:\s*,\s*\d+)*\s*)\]|(?P<dots>(?:\.\d+)+))$")
# Stan's and the posterior package's bookkeeping columns, never parameters
_CHAIN_COLUMNS = ("chain__", ".chain")
_IGNORED = (".iteration", ".draw")


def _parse_component(name: str):
    """``beta[1,2]`` or ``beta.1.2`` (1-based) -> ("beta", (1, 2)); anything else -> None."""
    found = _COMPONENT.match(name)
    if not found:
        return None
    text = found.group("brackets") or found.group("dots")[1:]
    return found.group("site"), tuple(int(part) for part in re.split(r"[,.]", text.replace(" ", "")))


def _stack_chains(chains: list[dict], path) -> dict:
    """[{name: (draw,) or (draw, ...)}] per chain -> {name: (chain, draw, ...)}; chains of
    different lengths are pooled into one."""
    names = list(chains[0])
    for number, chain in enumerate(chains[1:], 2):
        if set(chain) != set(names):
            differ = sorted(set(chain) ^ set(names))
            raise ConfigError(f"{path}: chain {number} has other names than chain 1: {_listed(differ)}")
    lengths = {len(chain[names[0]]) for chain in chains} if names else {0}
    if len(lengths) == 1:
        return {n: np.stack([np.asarray(chain[n], dtype=np.float64) for chain in chains]) for n in names}
    return {
        n: np.concatenate([np.asarray(chain[n], dtype=np.float64) for chain in chains])[None] for n in names
    }


def _read_netcdf(path: Path) -> dict:
    import arviz as az

    try:
        data = az.from_netcdf(str(path))
    except Exception as error:
        raise ConfigError(f"{path}: not an ArviZ netCDF file ({type(error).__name__}: {error})") from None
    if "posterior" not in data.groups():
        raise ConfigError(f"{path}: no posterior group (groups: {', '.join(data.groups()) or 'none'})")
    posterior = data.posterior
    raw = {}
    for name, values in posterior.data_vars.items():
        if "chain" not in values.dims or "draw" not in values.dims:
            raise ConfigError(
                f"{path}: posterior variable {name!r} has dims {values.dims}, not (chain, draw, ...)"
            )
        others = [d for d in values.dims if d not in ("chain", "draw")]
        raw[str(name)] = np.asarray(values.transpose("chain", "draw", *others).values, dtype=np.float64)
    return raw


def _read_csv(path: Path) -> dict:
    import pandas as pd

    try:
        table = pd.read_csv(path, comment="#")
    except Exception as error:
        raise ConfigError(f"{path}: not a readable CSV file ({type(error).__name__}: {error})") from None
    chain_column = next((c for c in _CHAIN_COLUMNS if c in table.columns), None)
    columns = [c for c in table.columns if c != chain_column and c not in _IGNORED]
    for column in columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            bad = table[column][pd.to_numeric(table[column], errors="coerce").isna()]
            row = int(bad.index[0]) + 2 if len(bad) else "?"
            raise ConfigError(
                f"{path}: column {column!r} is not a number in row {row} ({bad.iloc[0]!r})"
                if len(bad)
                else f"{path}: column {column!r} is not numeric"
            )
    if chain_column is None:
        return {str(c): table[c].to_numpy(dtype=np.float64)[None] for c in columns}
    chains = [
        {str(c): part[c].to_numpy(dtype=np.float64) for c in columns}
        for _, part in table.groupby(chain_column, sort=True)
    ]
    return _stack_chains(chains, path)


def _read_posteriordb(path: Path) -> dict:
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if not m.endswith("/")]
                inner = [m for m in members if m.endswith(".json")] or members
                if len(inner) != 1:
                    raise ConfigError(
                        f"{path}: the zip file should hold one JSON file, it holds "
                        f"{_listed(members) or 'none'}"
                    )
                text = archive.read(inner[0]).decode()
        else:
            text = path.read_text()
        content = json.loads(text)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{path}: not a posteriordb draws file ({type(error).__name__}: {error})") from None
    if isinstance(content, dict):
        content = [content]
    if not (isinstance(content, list) and content and all(isinstance(c, dict) for c in content)):
        raise ConfigError(
            f"{path}: posteriordb draws are a list of chains, each an object "
            f"{{name: [draws]}}; found {type(content).__name__}"
        )
    return _stack_chains(content, path)


def read_draws(path) -> tuple[dict, str]:
    """The draws in a file: -> ({name: (chain, draw, ...) array}, format)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith((".nc", ".netcdf", ".nc4")):
        return _read_netcdf(path), "netcdf"
    if name.endswith(".csv"):
        return _read_csv(path), "csv"
    if name.endswith((".json", ".zip")):
        return _read_posteriordb(path), "posteriordb"
    raise ConfigError(f"{path}: unknown draws format; the file should end in {DRAWS_FORMATS}")


def _describe_sites(latent: dict, deterministic: dict) -> str:
    text = "the model's latent sites: " + ", ".join(f"{s} {shape}" for s, shape in latent.items())
    if deterministic:
        text += "; its deterministic sites: " + ", ".join(
            f"{s} {shape}" for s, shape in deterministic.items()
        )
    return text


def match_draws(raw: dict, latent: dict, deterministic: dict, *, source: str) -> dict:
    """The file's names matched to the model's sites: -> {site: (chain, draw, *shape)} for every
    latent site and the deterministic sites the file has. A name is a site's (its whole array)
    or one component of it, ``name[1,2]`` or ``name.1.2``, from 1. Any name that matches nothing,
    a component out of range, and a latent site (or component) without draws is a ConfigError."""
    shapes = {**latent, **deterministic}
    whole, parts, unmatched, twice = {}, {s: {} for s in shapes}, [], []
    for name, values in raw.items():
        values = np.asarray(values, dtype=np.float64)
        if name in shapes:
            if values.shape[2:] != shapes[name]:
                unmatched.append(f"{name} (shape {values.shape[2:]}, the site's is {shapes[name]})")
            else:
                whole[name] = values
            continue
        parsed = _parse_component(name)
        if parsed is None or parsed[0] not in shapes:
            if not name.endswith("__"):  # Stan's sampler columns: lp__, accept_stat__, ...
                unmatched.append(name)
            continue
        site, index = parsed
        shape = shapes[site]
        if len(index) != len(shape) or not all(1 <= i <= n for i, n in zip(index, shape)):
            unmatched.append(f"{name} (out of range: {site} has shape {shape}, indices from 1)")
            continue
        if values.shape[2:] != ():
            unmatched.append(f"{name} (a component, but each draw is of shape {values.shape[2:]})")
            continue
        key = tuple(i - 1 for i in index)
        if key in parts[site]:
            twice.append(name)
        parts[site][key] = values
    twice += [s for s in whole if parts[s]]
    by_chain, missing = {}, []
    for site, shape in shapes.items():
        if site in whole:
            by_chain[site] = whole[site]
        elif parts[site]:
            absent = [
                label(site, tuple(i + 1 for i in index))
                for index in np.ndindex(shape)
                if index not in parts[site]
            ]
            if absent:
                missing.append(f"{site} {shape}: no draws of {_listed(absent)} (indices from 1)")
                continue
            first = next(iter(parts[site].values()))
            array = np.empty(first.shape + shape)
            for index, values in parts[site].items():
                array[(slice(None), slice(None)) + index] = values
            by_chain[site] = array
        elif site in latent:
            missing.append(f"{site} {shape}: no draws")
    problems = []
    if unmatched:
        problems.append(f"names that match no site of the model: {_listed(unmatched, 12)}")
    if twice:
        problems.append(f"draws given twice: {_listed(twice)}")
    if missing:
        problems.append(f"sites without draws: {'; '.join(missing)}")
    if problems:
        raise ConfigError(
            f"{source}: {'; '.join(problems)}; {_describe_sites(latent, deterministic)} "
            f"(a name is a site's, or one component as name[1,2] or name.1.2, from 1)"
        )
    sizes = {v.shape[:2] for v in by_chain.values()}
    if len(sizes) > 1:
        raise ConfigError(
            f"{source}: the sites have different numbers of chains and draws: "
            f"{ {s: v.shape[:2] for s, v in by_chain.items()} }"
        )
    bad = [s for s, v in by_chain.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ConfigError(f"{source}: draws that are not finite numbers in {_listed(bad)}")
    return by_chain


def from_draws(
    model,
    model_kwargs: dict,
    path,
    *,
    num_draws: int | None = 10_000,
    where: str = "reference",
    shown_path: str | None = None,
) -> dict:
    """The user's gold draws as a reference: moments of all of them, at most ``num_draws`` kept.
    With two or more chains of equal length their R-hat and ESS are judged like NUTS's."""
    shown = shown_path or str(path)
    source = f"{where}.file {shown}"
    with _stage("reading the draws file"):
        try:
            raw, kind = read_draws(path)
        except ConfigError as error:
            raise ConfigError(f"{where}.file: {error}") from None
    with _stage("tracing the model for its sites"):
        latent, deterministic = site_shapes(model, model_kwargs)
    by_chain = match_draws(raw, latent, deterministic, source=source)
    num_chains, per_chain = next(iter(by_chain.values())).shape[:2]
    reference = _from_chains(list(latent), [s for s in deterministic if s in by_chain], by_chain, num_draws)
    reference["method"] = "draws"
    reference["source"] = {
        "file": shown,
        "format": kind,
        "chains": int(num_chains),
        "draws_per_chain": int(per_chain),
        "draws_kept": int(len(next(iter(reference["draws"].values())))),
    }
    if per_chain >= 4:
        with _stage("computing R-hat and ESS of the draws"):
            statistics = chain_statistics(by_chain)
        reference["chains"] = statistics
        more = f"draw more, or longer chains, into {shown}"
        reference["warnings"] = trust(
            statistics,
            num_chains=num_chains,
            subject=f"the reference draws of {shown}",
            more_draws=more,
            more_chains=None,
        )  # one chain (a CSV without chain__): not judged
    else:
        reference["warnings"] = [
            f"the reference draws of {shown}: {per_chain} draws per chain, too "
            f"few to judge; give at least {ESS_MIN} independent draws"
        ]
    return reference


def to_tree(reference: dict) -> dict:
    """The reference as an HDF5 tree (see ``sviflow.h5io.SCHEMAS['reference']``)."""
    tree = {
        "moments": {"mean": reference["mean"], "sd": reference["sd"], "covariance": reference["covariance"]},
        "draws": reference["draws"],
        "log_z": np.float64(reference["log_z"]),
    }
    for optional in ("exact", "density", "split", "nuts", "chains"):
        if optional in reference:
            tree[optional] = reference[optional]
    return tree
