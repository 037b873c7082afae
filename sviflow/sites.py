"""Do a fit's model and guide name the same latent sites? Checked before the first SVI step.

NumPyro runs a guide that leaves out a latent site of the model: the model then draws that site
from its prior at every step, so the fit does not fit it, its ELBO is noise, the check dropped the
site and blamed a "diverging" loss, and the plot job ended in a KeyError. A guide that samples a
site the model does not have only warns; one that samples a site the model observes turns data
into a latent variable; and a model without any latent site runs its SVI steps and fails in the
predict step with a bare StopIteration. Each is refused here, naming the fit and the sites.

Both are traced on abstract values (``jax.make_jaxpr``, as ``sviflow.predictive.site_names``):
no XLA compile. Autoguides are built from the model's own trace, so they always match: only
the model is checked then.
"""

from __future__ import annotations

from sviflow.errors import ConfigError


def _listed(names) -> str:
    return ", ".join(map(repr, names)) or "none"


def guide_sites(guide, model_kwargs: dict) -> tuple[list[str], list[str]]:
    """-> (sample sites, auxiliary sample sites) of ``guide`` called with the model's data."""
    import jax
    from numpyro import handlers

    sampled, auxiliary = [], []

    def names():
        with handlers.block():
            trace = handlers.trace(handlers.seed(guide, 0)).get_trace(**model_kwargs)
        for name, site in trace.items():
            if site["type"] != "sample":
                continue
            (auxiliary if site.get("infer", {}).get("is_auxiliary", False) else sampled).append(name)

    jax.make_jaxpr(names)()
    return sampled, auxiliary


def check_model(
    model, model_kwargs: dict, where: str, model_key: str, function: str, data: str | None
) -> tuple[list[str], list[str]]:
    """-> (latent, observed) sample sites of the model; a model without a latent site is a
    ConfigError. ``where``: ``fits.<name>``; ``model_key``: ``models.<name>.function``."""
    from sviflow.predictive import site_names

    latent, observed = site_names(model, model_kwargs)
    if not latent:
        on = f"on the data of datasets.{data}" if data else "(without data)"
        raise ConfigError(
            f"{where}: the model {model_key} = {function!r} has no latent sample site {on}: there "
            f"is nothing to fit (its sample sites: {_listed(observed)}, all observed); give it a "
            f"numpyro.sample site without obs=, or check that its observed arguments are the "
            f"dataset's observed arrays"
        )
    return latent, observed


def check_guide(
    model_sites: tuple[list[str], list[str]],
    guide,
    model_kwargs: dict,
    where: str,
    guide_name: str,
    function: str,
) -> None:
    """The guide's sample sites are exactly the model's latent sites (its auxiliary sites, an
    autoguide's ``_auto_latent`` or a transformed guide's ``u``, aside)."""
    from numpyro.infer.autoguide import AutoGuide

    if isinstance(guide, AutoGuide):
        return  # built from the model's trace
    latent, observed = model_sites
    sampled, _ = guide_sites(guide, model_kwargs)
    key = f"{where}.guide.name = {guide_name!r}"
    missing = [name for name in latent if name not in sampled]
    if missing:
        raise ConfigError(
            f"{where}: the guide {key} has no sample site for the model's latent site(s) "
            f"{_listed(missing)} (the model {function!r} samples {_listed(latent)}; the guide "
            f"{_listed(sampled)}): SVI would draw them from the prior at every step and fit "
            f"nothing of them; add numpyro.sample({missing[0]!r}, ...) to the guide, or use an "
            f"autoguide (AutoNormal)"
        )
    watched = [name for name in sampled if name in observed]
    if watched:
        raise ConfigError(
            f"{where}: the guide {key} samples {_listed(watched)}, which the model {function!r} "
            f"observes (its latent sites: {_listed(latent)}): a guide samples latent sites only; "
            f"remove them from the guide"
        )
    extra = [name for name in sampled if name not in latent]
    if extra:
        raise ConfigError(
            f"{where}: the guide {key} samples {_listed(extra)}, which the model {function!r} does "
            f"not sample (its latent sites: {_listed(latent)}): a misspelt site, or a guide of "
            f"another model; rename or remove them (an auxiliary variable of the guide's own "
            f"takes infer={{'is_auxiliary': True}})"
        )
