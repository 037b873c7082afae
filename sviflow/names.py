"""The names the config may use for built-in models and guides, autoguides, optimizers,
schedules, ELBOs and initialisation strategies, and the check of a config's names against them.

Plain tuples, so that the workflow checks a config as it is read without importing jax."""

from __future__ import annotations

from sviflow.userfiles import is_file_reference

# The names the config may use. They are plain tuples so that the workflow can check a config
# without importing jax; tests/test_user_model.py keeps them equal to what the code provides
# (sviflow.models.BUILTIN_MODELS, sviflow.guides.BUILTIN_GUIDES, numpyro.infer.autoguide).
MODELS = ("coin_flips", "correlated_gaussian_2d", "multimodal_2d")
GUIDES = ("beta", "mixture_2d", "normal")
AUTOGUIDES = (
    "AutoBNAFNormal",
    "AutoBatchedLowRankMultivariateNormal",
    "AutoBatchedMultivariateNormal",
    "AutoDAIS",
    "AutoDelta",
    "AutoDiagonalNormal",
    "AutoGuideList",
    "AutoIAFNormal",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
    "AutoNormal",
    "AutoSemiDAIS",
    "AutoSurrogateLikelihoodDAIS",
)
OPTIMIZERS = ("Adam", "ClippedAdam", "SGD", "Adagrad", "RMSProp", "Momentum", "RMSPropMomentum")
SCHEDULES = ("constant", "exponential_decay", "cosine_decay", "warmup_cosine_decay")
ELBOS = ("Trace_ELBO", "TraceMeanField_ELBO", "TraceGraph_ELBO", "RenyiELBO")
# the guides that a step budget starts at the Laplace approximation (sviflow.laplace)
LAPLACE_GUIDES = ("AutoMultivariateNormal", "AutoLowRankMultivariateNormal", "AutoNormal", "AutoDelta")
INIT_STRATEGIES = (
    "init_to_feasible",
    "init_to_mean",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
)


def check_names(config: dict) -> list[str]:
    """What the schema cannot say about names: every model and guide is built in, an autoguide,
    or a file reference. -> the problems, each naming its key and listing the valid names."""
    problems = []
    for name, entry in (config.get("models") or {}).items():
        function = entry.get("function") if isinstance(entry, dict) else None
        if isinstance(function, str) and not is_file_reference(function) and function not in MODELS:
            problems.append(
                f"models.{name}.function: unknown model {function!r}; built-in "
                f"models: {', '.join(MODELS)}, or path/to/file.py:function"
            )
    for fit, entry in (config.get("fits") or {}).items():
        guide = entry.get("guide") if isinstance(entry, dict) else None
        name = guide.get("name") if isinstance(guide, dict) else None
        if isinstance(name, str) and not is_file_reference(name) and name not in GUIDES + AUTOGUIDES:
            problems.append(
                f"fits.{fit}.guide.name: unknown guide {name!r}; built-in guides: "
                f"{', '.join(GUIDES)}; autoguides: {', '.join(AUTOGUIDES)}; "
                f"or path/to/file.py:function"
            )
    return problems
